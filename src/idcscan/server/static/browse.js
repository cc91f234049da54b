// The slide browser: one row per slide under `idcscan serve --slides DIR` (GET /api/slides).
"use strict";

function fmtSize(w, h) {
  return w && h ? `${w.toLocaleString("en")} × ${h.toLocaleString("en")}` : "–";
}

function cell(text, cls, label) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  if (label) td.dataset.label = label; // the column's name, shown beside it on a phone
  return td;
}

function row(slide) {
  const tr = document.createElement("tr");
  tr.dataset.slideId = slide.id;
  const thumb = document.createElement("td");
  thumb.className = "slide-thumb";
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
    name.className = "slide-name";
    tr.append(name, cell("–", "", "Size"), cell("–", "", "Scale"),
      cell(slide.format || "–", "", "Format"), cell("unreadable", "", "IDC map"));
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
  name.className = "slide-name";
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
    cell(fmtSize(slide.width, slide.height), "", "Size (px)"),
    // a file without a scale is mapped once its scale is typed into the viewer's field
    cell(slide.mpp ? `${slide.mpp.toFixed(3)} µm/px` : "not in the file: enter it in the viewer",
      slide.mpp ? "" : "no-scale", "Scale"),
    cell(slide.format || "–", "", "Format"),
    cell(slide.has_map ? "✓ mapped" : "not yet", slide.has_map ? "has-map" : "muted", "IDC map"),
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
