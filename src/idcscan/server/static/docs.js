// Starts Swagger UI (/docs) or ReDoc (/redoc) on the page served by idcscan.server.routes.docs:
// the pages carry no inline script, so that the Content-Security-Policy can forbid it.
(function () {
  "use strict";
  var swagger = document.getElementById("swagger-ui");
  if (swagger && window.SwaggerUIBundle) {
    window.ui = window.SwaggerUIBundle({
      url: swagger.dataset.openapiUrl,
      dom_id: "#swagger-ui",
      layout: "BaseLayout",
      deepLinking: true,
      showExtensions: true,
      showCommonExtensions: true,
      validatorUrl: null, // the online validator would send the API description away
      presets: [window.SwaggerUIBundle.presets.apis, window.SwaggerUIBundle.SwaggerUIStandalonePreset],
    });
  }
  var redoc = document.getElementById("redoc");
  if (redoc && window.Redoc) {
    // ReDoc stamps the <style> elements it writes with this nonce, which the page's CSP admits.
    var nonce = document.currentScript && document.currentScript.nonce;
    window.Redoc.init(redoc.dataset.openapiUrl, nonce ? { nonce: nonce } : {}, redoc);
  }
})();
