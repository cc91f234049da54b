// The deep-zoom viewer: OpenSeadragon over /slides/{id}.dzi, the IDC map and QC layers on top,
// region outlines (SVG), a µm scale bar and P(IDC) under the cursor. Research use only.
"use strict";

const params = new URLSearchParams(location.search);
const slideId = params.get("slide") || "";
const api = (path) => `/api/slides/${encodeURIComponent(slideId)}${path}`;
const layerUrl = (name) => `/slides/${encodeURIComponent(slideId)}/map/${name}`;
const $ = (id) => document.getElementById(id);

let viewer = null;
let info = null;
let grid = null;
let mapItem = null;
let qcItem = null;
let svg = null;
let outlines = null;
let mapMpp = null; // the scale a map was made at, for a slide whose file records none
// how the P(IDC) layer meets the slide (maps.colour.BLEND): multiplied in, so nuclei and
// glands show through the colour instead of under a wash
const MAP_BLEND = "multiply";

function showError(message) {
  const banner = $("viewer-error");
  banner.textContent = message;
  banner.hidden = false;
}

function facts(el, pairs) {
  el.replaceChildren();
  for (const [k, v] of pairs) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    el.append(dt, dd);
  }
}

async function getJSON(url, options) {
  const res = await fetch(url, options);
  let body = null;
  try { body = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) throw new Error((body && body.error) || `HTTP ${res.status}`);
  return body;
}

// ---------------------------------------------------------------------- scale bar
const NICE = [1, 2, 5];
function updateScaleBar() {
  const mpp = (info && info.mpp) || mapMpp;
  if (!viewer || !mpp || viewer.world.getItemCount() === 0) return;
  const item = viewer.world.getItemAt(0);
  const zoom = item.viewportToImageZoom(viewer.viewport.getZoom(true)); // screen px per image px
  const umPerScreenPx = mpp / zoom;
  const target = 120 * umPerScreenPx;
  const exp = Math.pow(10, Math.floor(Math.log10(target)));
  let length = exp;
  for (const n of NICE) if (n * exp <= target) length = n * exp;
  const px = length / umPerScreenPx;
  $("scalebar-bar").style.width = `${px.toFixed(0)}px`;
  $("scalebar-label").textContent = length >= 1000 ? `${length / 1000} mm` : `${length} µm`;
  $("scalebar").hidden = false;
}

// ------------------------------------------------------------------ outlines (SVG)
function buildOutlines(collection) {
  const ns = "http://www.w3.org/2000/svg";
  svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "idc-outlines");
  outlines = document.createElementNS(ns, "g");
  svg.append(outlines);
  const w = info.width;
  for (const feature of collection.features || []) {
    for (const ring of feature.geometry.coordinates) {
      const poly = document.createElementNS(ns, "polygon");
      poly.setAttribute("points", ring.map(([x, y]) => `${x / w},${y / w}`).join(" "));
      poly.setAttribute("class", "idc-outline");
      outlines.append(poly);
    }
  }
  viewer.canvas.append(svg);
  placeOutlines();
  applyDisplay();
}

function placeOutlines() {
  if (!outlines) return;
  const origin = viewer.viewport.pixelFromPoint(new OpenSeadragon.Point(0, 0), true);
  const unit = viewer.viewport.pixelFromPoint(new OpenSeadragon.Point(1, 0), true).x - origin.x;
  outlines.setAttribute("transform", `translate(${origin.x},${origin.y}) scale(${unit})`);
}

// ---------------------------------------------------------------------- read-out
function readout(event) {
  if (!grid || viewer.world.getItemCount() === 0) return;
  const p = viewer.world.getItemAt(0).viewerElementToImageCoordinates(event.position);
  const box = $("readout");
  if (p.x < 0 || p.y < 0 || p.x >= info.width || p.y >= info.height) { box.hidden = true; return; }
  const c = Math.floor(p.x / grid.stride);
  const r = Math.floor(p.y / grid.stride);
  const value = r < grid.rows && c < grid.cols ? grid.probabilities[r][c] : null;
  const qc = r < grid.rows && c < grid.cols ? grid.qc[r][c] : 0;
  let text;
  if (value !== null && value !== undefined) {
    const alone = grid.patch_probabilities ? grid.patch_probabilities[r][c] : null;
    text = `P(IDC) ${(value * 100).toFixed(1)}%` + (value >= grid.threshold ? " · IDC area" : "")
      + (alone !== null && alone !== undefined && alone !== value
        ? ` (this tile alone ${(alone * 100).toFixed(1)}%)` : "");
  } else if (qc) {
    text = `left out by QC: ${grid.qc_kinds[qc]}`;
  } else {
    text = "not scored (no tissue)";
  }
  box.textContent = `${text} · tile at x ${c * grid.stride}, y ${r * grid.stride}`;
  box.dataset.value = value === null || value === undefined ? "" : String(value);
  box.hidden = false;
}

// -------------------------------------------------------------------------- layers
function addImageLayer(url, widthFraction, opacity, compositeOperation) {
  return new Promise((resolve, reject) => {
    viewer.addTiledImage({
      tileSource: { type: "image", url, buildPyramid: false },
      x: 0, y: 0, width: widthFraction, opacity, compositeOperation,
      success: (e) => resolve(e.item),
      error: (e) => reject(new Error(e.message || `cannot load ${url}`)),
    });
  });
}

async function showMap(map) {
  const s = map.summary;
  // a slide smaller than one tile has nothing to lay over it, nor to read out
  const tooSmall = !s.n_tiles && (s.width < s.tile_size || s.height < s.tile_size);
  grid = tooSmall ? null : await getJSON(layerUrl("grid.json"));
  $("layer-controls").hidden = tooSmall;
  if (!tooSmall) {
    const overlayWidth = (grid.cols * grid.stride) / info.width;
    const opacity = Number($("map-opacity").value);
    qcItem = await addImageLayer(layerUrl("qc.png"), grid.width / info.width, 0.55);
    mapItem = await addImageLayer(layerUrl("overlay.png"), overlayWidth, opacity, MAP_BLEND);
    const regions = await getJSON(layerUrl("regions.geojson"));
    buildOutlines(regions);
    qcItem.setOpacity($("show-qc").checked ? 0.55 : 0);
  }
  $("layers").hidden = false;
  $("map-button").hidden = true;
  $("mpp-field").hidden = true;
  const kinds = Object.entries(s.qc_tiles || {}).map(([k, n]) => `${k} ${n}`).join(", ");
  mapMpp = s.mpp_source === "assumed" ? null : s.mpp; // a guessed scale draws no bar
  updateScaleBar();
  $("map-state").textContent = tooSmall
    ? `Nothing to map: the slide is smaller than one tile (${s.tile_size} px at its full resolution).`
    : s.n_tiles
      ? `Mapped: IDC in ${(s.idc_fraction * 100).toFixed(1)}% of ${s.n_tiles} tissue tiles.`
      : "Mapped: no tissue left to score.";
  const source = { metadata: "from the file", option: "entered", assumed: "assumed" }[s.mpp_source];
  const warnings = [...(s.warnings || []), ...(map.warnings || [])];
  $("map-warnings").textContent = warnings.join(" ");
  $("map-warnings").hidden = warnings.length === 0;
  facts($("map-facts"), [
    ["Scale mapped at", `${s.mpp.toFixed(3)} µm/px (${source || s.mpp_source})`],
    ["IDC area", `${s.idc_area_mm2.toFixed(2)} mm² (tiles with P(IDC) ≥ ${(s.threshold * 100).toFixed(2)}%)`],
    ["Context", s.context ? `each tile read with its neighbours (sigma ${s.context} patch)` : "each tile alone"],
    ["TTA", s.tta_views > 1 ? `${s.tta_views} views averaged per tile` : (s.tta ? "views averaged" : "off")],
    ["Tissue scored", `${s.tissue_area_mm2.toFixed(2)} mm²`],
    ["QC left out", `${(s.qc_excluded_mm2 || 0).toFixed(2)} mm² (${kinds || "none"})`],
    ["IDC regions", String(s.n_regions)],
    ["Model", `${s.model.name} ${s.model.version}`],
  ]);
  document.body.dataset.mapShown = "true";
}

function mapProgress(status) {
  const bar = $("map-progress");
  bar.hidden = false;
  document.body.dataset.progressShown = "true";
  bar.max = Math.max(status.total, 1);
  bar.value = status.done;
  $("map-state").textContent = status.state === "queued"
    ? "Waiting for another map to finish…"
    : `Mapping: ${status.done} of ${status.total || "?"} tissue tiles scored…`;
}

async function pollMap() {
  for (;;) {
    const status = await getJSON(api("/map"));
    if (status.state === "done") {
      $("map-progress").value = $("map-progress").max;
      $("map-progress").hidden = true;
      await showMap(status);
      return;
    }
    if (status.state === "failed") {
      $("map-progress").hidden = true;
      $("map-button").disabled = false;
      $("map-state").textContent = "The map could not be made.";
      showError(status.error);
      return;
    }
    if (status.state === "cancelled") { // stopped through POST .../map/cancel
      $("map-progress").hidden = true;
      $("map-button").disabled = false;
      $("map-state").textContent = "The map was cancelled.";
      return;
    }
    if (status.state === "none") return;
    mapProgress(status);
    await new Promise((r) => setTimeout(r, 400));
  }
}

async function startMap() {
  $("viewer-error").hidden = true;
  $("map-button").disabled = true;
  const mpp = $("mpp-input").value;
  if (!info.mpp && !(Number(mpp) > 0)) {
    $("map-button").disabled = false;
    showError("This slide's file records no scale: enter its µm per pixel first (the map is never made at a guessed scale).");
    $("mpp-input").focus();
    return;
  }
  // the scale travels in a JSON body (the server refuses ?mpp=), only for a slide without one
  const body = JSON.stringify(info.mpp ? {} : { mpp: Number(mpp) });
  try {
    const started = await getJSON(api("/map"), {
      method: "POST", headers: { "Content-Type": "application/json" }, body,
    });
    if (started.state === "queued" || started.state === "running") mapProgress(started);
    await pollMap();
  } catch (err) {
    $("map-button").disabled = false;
    showError(`Could not map the slide: ${err.message}`);
  }
}

/** Colours and outlines, outlines only (the tissue untouched, the IDC area drawn), or
 *  colours only. */
function applyDisplay() {
  const mode = document.querySelector("input[name=map-display]:checked").value;
  if (mapItem) mapItem.setOpacity(mode === "outlines" ? 0 : Number($("map-opacity").value));
  if (svg) svg.classList.toggle("is-off", mode === "colours");
  $("map-opacity").disabled = mode === "outlines";
  document.body.dataset.mapDisplay = mode;
}

function wireControls() {
  $("map-button").addEventListener("click", startMap);
  $("map-opacity").addEventListener("input", applyDisplay);
  for (const radio of document.querySelectorAll("input[name=map-display]")) {
    radio.addEventListener("change", applyDisplay);
  }
  $("show-qc").addEventListener("change", () => {
    if (qcItem) qcItem.setOpacity($("show-qc").checked ? 0.55 : 0);
  });
}

async function main() {
  if (!slideId) { showError("No slide given: open one from the slide list (/browse)."); return; }
  try {
    info = await getJSON(api(""));
  } catch (err) {
    showError(`This slide cannot be shown: ${err.message}`);
    return;
  }
  document.title = `idcscan · ${info.name}`;
  $("slide-title").textContent = info.name;
  $("demo-banner").hidden = !info.demo;
  facts($("slide-facts"), [
    ["Size", `${info.width.toLocaleString("en")} × ${info.height.toLocaleString("en")} px`],
    ["Scale", info.mpp ? `${info.mpp.toFixed(3)} µm/px` : "not recorded in the file: enter it below to map"],
    ["Format", info.format],
    ["Levels", String(info.levels)],
    ["File", info.path],
  ]);
  $("mpp-field").hidden = Boolean(info.mpp);
  wireControls();
  viewer = OpenSeadragon({
    id: "osd",
    prefixUrl: "/static/openseadragon/images/",
    tileSources: `/slides/${encodeURIComponent(slideId)}.dzi`,
    drawer: "canvas",
    imageSmoothingEnabled: false,
    showNavigator: true,
    navigatorPosition: "TOP_RIGHT",
    maxZoomPixelRatio: 4,
    crossOriginPolicy: false,
  });
  window.osdViewer = viewer;
  viewer.addHandler("open", updateScaleBar);
  viewer.addHandler("animation", () => { updateScaleBar(); placeOutlines(); });
  viewer.addHandler("resize", () => { updateScaleBar(); placeOutlines(); });
  viewer.addHandler("open-failed", (e) => showError(`The slide could not be opened: ${e.message}`));
  new OpenSeadragon.MouseTracker({
    element: viewer.element,
    moveHandler: readout,
    clickHandler: readout,
  });
  if (info.map.state === "done") {
    viewer.addOnceHandler("open", () => showMap(info.map).catch((e) => showError(e.message)));
  } else if (info.map.state === "queued" || info.map.state === "running") {
    $("map-button").disabled = true;
    viewer.addOnceHandler("open", pollMap);
  }
}

document.addEventListener("DOMContentLoaded", main);
