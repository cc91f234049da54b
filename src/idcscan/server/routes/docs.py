"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from assets shipped in the package.

FastAPI's default pages load Swagger UI and ReDoc from a CDN, so they are blank on a machine
without internet (a hospital network, a cluster node). idcscan vendors ``swagger-ui-dist``
and ``redoc`` from npm under ``static/vendor/`` (licences kept there, see its README) and
serves the same FastAPI pages pointed at them. Swagger UI's online spec validator badge is
turned off: it would send the API description to validator.swagger.io.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

VENDOR = "/static/vendor"
FAVICON = f"{VENDOR}/swagger-ui/favicon-32x32.png"


def install_docs(app: FastAPI) -> None:
    """Add /docs and /redoc; build the app with ``docs_url=None, redoc_url=None``."""
    openapi_url = app.openapi_url or "/openapi.json"
    title = f"{app.title} {app.version} · API"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=title,
            swagger_js_url=f"{VENDOR}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{VENDOR}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=FAVICON,
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=title,
            redoc_js_url=f"{VENDOR}/redoc/redoc.standalone.js",
            redoc_favicon_url=FAVICON,
            with_google_fonts=False,
        )
