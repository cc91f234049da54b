// Large-image view: upload one image to POST /slide, show the IDC map over it.
// Self-contained (no CDN, no framework); the research-use disclaimer is in the page markup
// and refreshed from /health, so it is visible even when the server cannot be reached.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = { limits: null, result: null, busy: false, pending: null };

  function showError(title, text) {
    $("error-title").textContent = title;
    $("error-text").textContent = text;
    $("error-banner").hidden = false;
  }

  function clearError() {
    $("error-banner").hidden = true;
  }

  function setStatus(kind, text) {
    const dot = document.querySelector("#model-status .status-dot");
    dot.className = "status-dot status-dot--" + kind;
    $("model-status-text").textContent = text;
  }

  async function loadHealth() {
    // Returns once the limits are known, so a handed-over file is checked against them.
    try {
      const r = await fetch("/health");
      if (!r.ok) throw new Error("HTTP " + r.status);
      const h = await r.json();
      state.limits = h.limits || null;
      if (h.disclaimer) $("disclaimer-text").textContent = h.disclaimer;
      $("demo-banner").hidden = !h.demo;
      const m = h.model || {};
      setStatus("ok", (m.name || "model") + " " + (m.version || ""));
      describeTta(m.tta);
      const v = h.versions || {};
      $("footer-versions").textContent = "idcscan " + (v.idcscan || "");
      if (state.limits && state.limits.max_slide_upload_mb) {
        $("dropzone-hint").append(
          " Up to " + state.limits.max_slide_upload_mb + " MB."
        );
      }
    } catch (err) {
      setStatus("bad", "Model server unreachable");
      showError(
        "The model server cannot be reached",
        "Check that `idcscan serve` is running, then reload this page."
      );
    }
  }

  /** The TTA switch says what this model runs (its card's `tta` entry), not a fixed text:
   *  a model that averages views inside its graph always does, and the switch changes nothing. */
  function describeTta(tta) {
    if (tta && tta.in_graph) {
      $("tta-input").checked = true;
      $("tta-input").disabled = true;
      $("tta-text").textContent = "Test-time augmentation: built into this model (" +
        (tta.views || 8) + " flipped/rotated views, always on)";
    } else {
      $("tta-text").textContent = "Test-time augmentation (8 flips/rotations, 8x slower)";
    }
  }

  const SVG = "http://www.w3.org/2000/svg";

  /** IDC region outlines (GeoJSON in image pixels) over the downsized image: the SVG's
   *  viewBox is the full image, so the outlines scale with the picture. */
  function drawOutlines(result) {
    const svg = $("outline-layer");
    svg.replaceChildren();
    svg.setAttribute("viewBox", "0 0 " + result.width + " " + result.height);
    for (const feature of (result.regions && result.regions.features) || []) {
      for (const ring of feature.geometry.coordinates) {
        const poly = document.createElementNS(SVG, "polygon");
        poly.setAttribute("points", ring.map((xy) => xy[0] + "," + xy[1]).join(" "));
        poly.setAttribute("class", "idc-outline");
        svg.append(poly);
      }
    }
  }

  /** Colours and outlines, outlines only, or colours only. */
  function applyDisplay() {
    const mode = document.querySelector("input[name=map-display]:checked").value;
    $("heatmap-image").hidden = mode === "outlines";
    $("outline-layer").classList.toggle("is-off", mode === "colours");
    $("opacity").disabled = mode === "outlines" || !state.result;
  }

  function fmtArea(mm2) {
    if (mm2 === null || mm2 === undefined) return "–";
    return mm2 >= 1 ? mm2.toFixed(2) + " mm²" : (mm2 * 1e6 / 1e6).toFixed(4) + " mm²";
  }

  function fmtPercent(fraction) {
    return (100 * fraction).toFixed(1) + "%";
  }

  /** One of: "empty" (nothing yet), "busy" (mapping), "map" (a result), "none" (an error
   *  or nothing to show: the banner says why). Never a spinner over text, never an <img>
   *  without a source (no broken-image icons). */
  function viewer(mode, text) {
    $("viewer-empty").hidden = !(mode === "empty" || mode === "none");
    if (mode === "empty") $("viewer-empty").textContent = "No image yet. Drop one above; its IDC map appears here.";
    if (mode === "none") $("viewer-empty").textContent = text || "Nothing to show.";
    $("viewer-busy").hidden = mode !== "busy";
    if (mode === "busy") $("busy-text").textContent = text || "Mapping the image…";
    $("viewer-stack").hidden = mode !== "map";
    if (mode !== "map") {
      $("base-image").removeAttribute("src");
      $("heatmap-image").removeAttribute("src");
      $("outline-layer").replaceChildren();
      $("opacity").disabled = true;
    }
  }

  function busy(on, name) {
    state.busy = on;
    $("file-input").disabled = on;
    $("dropzone").setAttribute("aria-busy", on ? "true" : "false");
    if (on) {
      $("summary").hidden = true;
      $("summary-empty").hidden = false;
      $("summary-empty").textContent = "Mapping " + name + "…";
      viewer("busy", "Mapping " + name + " tile by tile; large images take a minute.");
    }
  }

  function applyOpacity() {
    const value = Number($("opacity").value);
    $("heatmap-image").style.opacity = String(value / 100);
    $("opacity-value").textContent = value + "%";
  }

  function fmtPct(fraction) {
    return (100 * fraction).toFixed(2) + "%";
  }

  function show(result) {
    state.result = result;
    const tooSmall = !result.n_tiles && (result.width < result.tile_size || result.height < result.tile_size);
    if (tooSmall) {
      viewer("none", "Nothing to map: the image is smaller than one tile.");
      showError(
        "The image is smaller than one tile",
        result.width + " × " + result.height + " px is smaller than one " + result.tile_size +
          " px tile at this scale, so there is nothing to map. Send single patches to the " +
          "Patches page instead."
      );
      $("summary").hidden = true;
      $("summary-empty").hidden = false;
      $("summary-empty").textContent = "Nothing was mapped: the image is smaller than one tile.";
      return;
    }
    $("base-image").src = result.image;
    $("heatmap-image").src = result.heatmap;
    drawOutlines(result);
    viewer("map");
    applyDisplay();
    applyOpacity();
    $("result-demo").hidden = !result.demo;

    $("summary-empty").hidden = true;
    $("summary").hidden = false;
    $("idc-fraction").textContent = result.n_tiles ? fmtPercent(result.idc_fraction) : "no tissue";
    $("threshold").textContent = fmtPct(result.threshold);
    $("legend-threshold").textContent = fmtPct(result.threshold);
    $("tissue-area").textContent = fmtArea(result.tissue_area_mm2);
    $("idc-area").textContent = fmtArea(result.idc_area_mm2);
    $("tiles").textContent = result.n_tiles + " (" + result.n_idc_tiles + " IDC)";
    $("regions").textContent = String(result.n_regions);
    $("image-size").textContent = result.width + " × " + result.height + " px";
    const source = { metadata: "from the file", option: "as given", assumed: "assumed" };
    $("scale").textContent =
      result.mpp.toPrecision(3) + " µm/px (" + (source[result.mpp_source] || result.mpp_source) + ")";
    $("tile-size").textContent = result.tile_size + " px" + (result.level ? ", pyramid level " + result.level : "");
    $("model").textContent = result.model.name + " " + result.model.version;
    const t = result.timings || {};
    $("time").textContent = t.total !== undefined ? t.total.toFixed(1) + " s" : "–";
    const warnings = result.warnings || [];
    $("warnings").hidden = warnings.length === 0;
    $("warnings").textContent = warnings.join(" ");
    $("tta-used").textContent = result.tta_views > 1
      ? result.tta_views + " views averaged per tile" : "off (one view per tile)";
    if (!result.n_tiles) {
      showError(
        "No tissue found",
        "Every tile of the image looked like background (glass), so nothing was scored."
      );
    }
  }

  function download(name, text, type) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  function resetSummary() {
    $("summary").hidden = true;
    $("summary-empty").hidden = false;
    $("summary-empty").textContent = "Upload an image to see its IDC share, areas and tile counts.";
  }

  /** A file handed over by the Patches page (a large image dropped there), via IndexedDB. */
  function takeHandOff() {
    return new Promise((resolve) => {
      if (!window.indexedDB) return resolve(null);
      const open = indexedDB.open("idcscan", 1);
      open.onupgradeneeded = () => open.result.createObjectStore("handoff");
      open.onerror = () => resolve(null);
      open.onsuccess = () => {
        const tx = open.result.transaction("handoff", "readwrite");
        const store = tx.objectStore("handoff");
        const get = store.get("slide");
        get.onsuccess = () => {
          store.delete("slide");
          resolve(get.result || null);
        };
        get.onerror = () => resolve(null);
        tx.oncomplete = () => open.result.close();
      };
    });
  }

  async function upload(file) {
    if (!file || state.busy) return;
    state.pending = null;
    clearError();
    const maxMb = state.limits && state.limits.max_slide_upload_mb;
    if (maxMb && file.size > maxMb * 1024 * 1024) {
      showError(
        "The file is too large",
        file.name + " is " + (file.size / 1048576).toFixed(1) + " MB; this server accepts up to " +
          maxMb + " MB. Map it with `idcscan slide` on the command line instead."
      );
      return;
    }
    const params = new URLSearchParams();
    const mpp = $("mpp-input").value.trim();
    if (mpp) params.set("mpp", mpp);
    if ($("tta-input").checked) params.set("tta", "true");
    const body = new FormData();
    body.append("file", file, file.name);
    busy(true, file.name);
    try {
      const r = await fetch("/slide" + (params.toString() ? "?" + params : ""), { method: "POST", body });
      let data = null;
      try {
        data = await r.json();
      } catch (e) {
        data = null;
      }
      if (!r.ok) {
        const titles = {
          400: "The image could not be mapped",
          413: "The image is too large",
          415: "This file type is not supported",
        };
        const message = (data && data.error) || "No details were given.";
        showError(titles[r.status] || "The server answered with an error (" + r.status + ")",
          message);
        if (/records no scale/.test(message)) {
          // kept: typing the scale (Enter, or leaving the field) maps it at once
          state.pending = file;
          $("mpp-input").classList.add("needs-value");
          $("mpp-input").focus();
        }
        viewer("none", "No map: " + file.name + " could not be mapped (see above).");
        resetSummary();
        return;
      }
      show(data);
    } catch (err) {
      showError("The upload failed", "The server could not be reached (" + err.message + ").");
      viewer("none", "No map: the upload failed.");
      resetSummary();
    } finally {
      busy(false);
    }
  }

  function init() {
    const input = $("file-input");
    const zone = $("dropzone");
    input.addEventListener("change", () => upload(input.files[0]));
    ["dragenter", "dragover"].forEach((type) =>
      zone.addEventListener(type, (e) => {
        e.preventDefault();
        zone.classList.add("is-dragover");
      })
    );
    ["dragleave", "drop"].forEach((type) =>
      zone.addEventListener(type, () => zone.classList.remove("is-dragover"))
    );
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      const files = e.dataTransfer && e.dataTransfer.files;
      if (files && files.length > 1) {
        showError("One image at a time", "Drop a single large image; the first one is mapped.");
      }
      if (files && files.length) upload(files[0]);
    });
    $("opacity").addEventListener("input", applyOpacity);
    for (const radio of document.querySelectorAll("input[name=map-display]")) {
      radio.addEventListener("change", applyDisplay);
    }
    $("mpp-input").addEventListener("input", () => $("mpp-input").classList.remove("needs-value"));
    $("mpp-input").addEventListener("change", () => {
      if (state.pending && Number($("mpp-input").value) > 0) upload(state.pending);
    });
    $("download-geojson").addEventListener("click", () => {
      if (!state.result) return;
      download(state.result.slide.replace(/\.[^.]+$/, "") + "_idc.geojson",
        JSON.stringify(state.result.regions), "application/geo+json");
    });
    $("download-summary").addEventListener("click", () => {
      if (!state.result) return;
      const { image, heatmap, regions, ...summary } = state.result; // eslint-disable-line no-unused-vars
      download(state.result.slide.replace(/\.[^.]+$/, "") + "_summary.json",
        JSON.stringify(summary, null, 2), "application/json");
    });
    viewer("empty");
    const ready = loadHealth();
    if (new URLSearchParams(window.location.search).get("from") === "patches") {
      takeHandOff().then(async (file) => {
        if (!file) return;
        await ready;
        upload(file);
      });
    }
  }

  document.addEventListener("DOMContentLoaded", init);
})();
