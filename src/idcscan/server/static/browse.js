// The slide browser: one row per slide under `idcscan serve --slides DIR` (GET /api/slides).
"use strict";

function fmtSize(w, h) {
  return w && h ? `${w.toLocaleString("en")} × ${h.toLocaleString("en")}` : "–";
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function row(slide) {
  const tr = document.createElement("tr");
  tr.dataset.slideId = slide.id;
  const thumb = document.createElement("td");
  if (slide.error) {
    tr.className = "slide-row slide-row--error";
    thumb.innerHTML = '<span class="thumb thumb--broken" aria-hidden="true">!</span>';
    tr.append(thumb);
    const name = cell(slide.name);
    const err = document.createElement("div");
    err.className = "slide-error small";
    err.setAttribute("role", "note");
    err.textContent = slide.error;
    name.append(err);
    tr.append(name, cell("–"), cell("–"), cell(slide.format || "–"), cell("unreadable"));
    return tr;
  }
  tr.className = "slide-row";
  const link = document.createElement("a");
  link.href = `/viewer?slide=${encodeURIComponent(slide.id)}`;
  const img = document.createElement("img");
  img.className = "thumb";
  img.alt = `Thumbnail of ${slide.name}`;
  img.loading = "lazy";
  img.src = `/slides/${encodeURIComponent(slide.id)}/thumbnail.jpeg`;
  link.append(img);
  thumb.append(link);
  const name = document.createElement("td");
  const a = document.createElement("a");
  a.href = link.href;
  a.textContent = slide.name;
  a.className = "slide-link";
  name.append(a);
  const path = document.createElement("div");
  path.className = "muted small mono";
  path.textContent = slide.path;
  name.append(path);
  tr.append(
    thumb,
    name,
    cell(fmtSize(slide.width, slide.height)),
    cell(slide.mpp ? `${slide.mpp.toFixed(3)} µm/px` : "unknown (needs --mpp)"),
    cell(slide.format || "–"),
    cell(slide.has_map ? "✓ mapped" : "not yet", slide.has_map ? "has-map" : "muted"),
  );
  return tr;
}

async function load() {
  const status = document.getElementById("slide-count");
  try {
    const res = await fetch("/api/slides");
    const body = await res.json();
    if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
    const rows = document.getElementById("slide-rows");
    rows.replaceChildren(...body.map(row));
    const bad = body.filter((s) => s.error).length;
    status.textContent = `${body.length - bad} slide(s)` + (bad ? `, ${bad} unreadable` : "");
    document.getElementById("slide-table").hidden = body.length === 0;
    document.getElementById("no-slides").hidden = body.length !== 0;
  } catch (err) {
    const banner = document.getElementById("list-error");
    banner.textContent = `Could not list the slides: ${err.message}. Was the server started with --slides DIR?`;
    banner.hidden = false;
    status.textContent = "";
  }
}

load();
