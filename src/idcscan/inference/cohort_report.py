"""The cohort report: ``OUT/report.html``, one page over every slide in an output folder.

Built only from the files slide mode leaves (``<slide>/summary.json``, ``tissue.png``,
``tiles.csv``, ``.failed/``, ``model_card.json``), so it can be redrawn at any time with
``idcscan report OUT`` - after shards finish, with a patient table, or for a folder written
without ``--cluster``. Self-contained: thumbnails and the histogram are inlined as data URIs
(for very large cohorts the thumbnails go beside it in ``report_files/``), the sorting script
is a few lines inline; nothing is fetched, so it opens offline and can be mailed.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import uuid
from urllib.parse import quote
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from idcscan import DISCLAIMER, __version__
from idcscan.errors import IdcscanError
from idcscan.inference.slide import SUMMARY_JSON
from idcscan.inference.slide_failures import read_failures

REPORT_HTML = "report.html"
THUMBS_DIR = "report_files"
MODEL_CARD_COPY = "model_card.json"
THUMB_SIDE = 160
#: above this many slides the thumbnails are written beside the page instead of inside it
INLINE_LIMIT = 2000


@dataclass
class SlideRow:
    slide: str
    status: str  # "ok" or "failed"
    path: str = ""
    error: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    patient: str | None = None

    @property
    def qc(self) -> dict[str, Any]:
        """Artefact-QC fields of summary.json (``qc_*`` keys), when slide mode wrote any."""
        return {k: v for k, v in self.summary.items() if k.lower().startswith("qc")}


def collect_slides(out_dir: Path) -> list[SlideRow]:
    """Finished slides (a folder with summary.json) and failed ones, sorted by name."""
    rows: dict[str, SlideRow] = {}
    for summary_path in sorted(out_dir.glob(f"*/{SUMMARY_JSON}")):
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        name = summary_path.parent.name
        rows[name] = SlideRow(name, "ok", path=str(summary.get("path", "")), summary=summary)
    for failure in read_failures(out_dir):
        if failure["slide"] not in rows:
            rows[failure["slide"]] = SlideRow(
                failure["slide"], "failed", path=failure.get("path", ""),
                error=failure.get("error", ""),
            )  # fmt: skip
    return [rows[k] for k in sorted(rows)]


def read_patients(path: Path) -> dict[str, str]:
    """slide -> patient from a CSV with columns ``slide`` and ``patient``."""
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            columns = set(reader.fieldnames or [])
            if not {"slide", "patient"} <= columns:
                raise IdcscanError(
                    f"{path} needs the columns slide and patient (it has: "
                    f"{', '.join(sorted(columns)) or 'none'})."
                )
            return {r["slide"].strip(): r["patient"].strip() for r in reader if r["slide"]}
    except OSError as exc:
        raise IdcscanError(f"Cannot read the patient table {path}: {exc}") from None


def overlay_thumbnail(folder: Path, summary: dict[str, Any], side: int = THUMB_SIDE) -> Image.Image:
    """tissue.png with each classified tile's P(IDC) colour-mapped over it, ``side`` px."""
    from matplotlib import colormaps

    from idcscan.inference.slide_outputs import COLORMAP, OVERLAY_ALPHA

    with Image.open(folder / "tissue.png") as im:
        base = im.convert("RGB")
    scale = side / max(base.size)
    size = (max(1, round(base.width * scale)), max(1, round(base.height * scale)))
    base = base.resize(size, Image.Resampling.LANCZOS)
    width, height, stride = summary["width"], summary["height"], summary["stride"]
    tiles = np.loadtxt(folder / "tiles.csv", delimiter=",", skiprows=1, ndmin=2)
    rows, cols = -(-height // stride), -(-width // stride)
    cells = np.full((rows, cols), np.nan)
    if len(tiles):
        r = np.minimum(tiles[:, 1].astype(np.int64) // stride, rows - 1)
        c = np.minimum(tiles[:, 0].astype(np.int64) // stride, cols - 1)
        # a point lies in the tile of its cell (exact without overlap; nearest start with)
        tile_cells = max(1, summary["tile_size"] // stride)
        for dr in range(tile_cells):
            for dc in range(tile_cells):
                rr, cc = np.minimum(r + dr, rows - 1), np.minimum(c + dc, cols - 1)
                empty = np.isnan(cells[rr, cc])
                cells[rr[empty], cc[empty]] = tiles[empty, 2]
        cells[r, c] = tiles[:, 2]
    ys = np.minimum(((np.arange(size[1]) + 0.5) * height / size[1] // stride), rows - 1)
    xs = np.minimum(((np.arange(size[0]) + 0.5) * width / size[0] // stride), cols - 1)
    probs = cells[np.ix_(ys.astype(np.int64), xs.astype(np.int64))]
    classified = ~np.isnan(probs)
    colours = colormaps[COLORMAP](np.nan_to_num(probs))[..., :3] * 255.0
    out = np.asarray(base, dtype=np.float32).copy()
    out[classified] = out[classified] * (1 - OVERLAY_ALPHA) + colours[classified] * OVERLAY_ALPHA
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def histogram_png(fractions: list[float]) -> bytes:
    """Histogram of the slides' IDC fractions (matplotlib Agg, PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 2.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(np.asarray(fractions, dtype=float) * 100, bins=np.linspace(0, 100, 21),
            color="#c2185b", edgecolor="white")  # fmt: skip
    ax.set_xlim(0, 100)
    ax.set_xlabel("IDC fraction of tissue tiles (%)")
    ax.set_ylabel("slides")
    ax.set_title(f"IDC fraction of {len(fractions)} mapped slide(s)", fontsize=10)
    ax.yaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def patient_rows(rows: list[SlideRow], patients: dict[str, str]) -> list[dict[str, Any]]:
    """Per patient: slides, mapped, failed, missing, areas and the IDC fraction of all tiles."""
    by_patient: dict[str, dict[str, Any]] = {}
    present = {r.slide: r for r in rows}
    for slide, patient in sorted(patients.items()):
        entry = by_patient.setdefault(
            patient, {"patient": patient, "slides": 0, "mapped": 0, "failed": 0, "missing": [],
                      "tissue_mm2": 0.0, "idc_mm2": 0.0, "tiles": 0, "idc_tiles": 0,
                      "max_fraction": None},
        )  # fmt: skip
        entry["slides"] += 1
        row = present.get(slide)
        if row is None:
            entry["missing"].append(slide)
        elif row.status == "failed":
            entry["failed"] += 1
        else:
            s = row.summary
            entry["mapped"] += 1
            entry["tissue_mm2"] += float(s.get("tissue_area_mm2", 0.0))
            entry["idc_mm2"] += float(s.get("idc_area_mm2", 0.0))
            entry["tiles"] += int(s.get("n_tiles", 0))
            entry["idc_tiles"] += int(s.get("n_idc_tiles", 0))
            frac = float(s.get("idc_fraction", 0.0))
            entry["max_fraction"] = max(frac, entry["max_fraction"] or 0.0)
    for entry in by_patient.values():
        entry["idc_fraction"] = entry["idc_tiles"] / entry["tiles"] if entry["tiles"] else None
    return [by_patient[k] for k in sorted(by_patient)]


def _td(text: str, sort: Any = None, cls: str = "") -> str:
    key = text if sort is None else sort
    attrs = f' data-sort="{html.escape(str(key))}"' + (f' class="{cls}"' if cls else "")
    return f"<td{attrs}>{text}</td>"


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _qc_text(qc: dict[str, Any]) -> str:
    parts = []
    for key, value in qc.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
        elif isinstance(value, float):
            value = f"{value:.3g}"
        parts.append(f"{html.escape(key)}: {html.escape(str(value))}")
    return "<br>".join(parts)


def _slide_table(rows: list[SlideRow], thumbs: dict[str, str], patients: bool) -> str:
    head = ["Slide", "Map"] + (["Patient"] if patients else []) + [
        "Status", "IDC fraction", "IDC mm²", "Tissue mm²", "Tiles", "QC", "Error"]  # fmt: skip
    types = ["text", "none"] + (["text"] if patients else []) + [
        "text", "num", "num", "num", "num", "text", "text"]  # fmt: skip
    out = ['<table class="sortable" id="slides"><thead><tr>']
    out += [f'<th data-type="{t}">{h}</th>' for h, t in zip(head, types)]
    out.append("</tr></thead><tbody>")
    for r in rows:
        s = r.summary
        name = html.escape(r.slide)
        href = html.escape(quote(f"{r.slide}/heatmap.png"))
        link = f'<a href="{href}">{name}</a>' if r.status == "ok" else name
        thumb = thumbs.get(r.slide)
        img = (f'<a href="{href}"><img src="{html.escape(thumb)}" alt="IDC map of {name}" '
               'loading="lazy"></a>') if thumb else ""  # fmt: skip
        cells = [_td(link, r.slide), _td(img, "")]
        if patients:
            cells.append(_td(html.escape(r.patient or "—"), r.patient or ""))
        ok = r.status == "ok"
        frac = float(s["idc_fraction"]) if ok else None
        cells += [
            _td(f'<span class="status {r.status}">{r.status}</span>', r.status),
            _td(_fmt(frac, ".1%"), -1 if frac is None else frac, "num"),
            _td(_fmt(s.get("idc_area_mm2"), ".2f"), s.get("idc_area_mm2", -1), "num"),
            _td(_fmt(s.get("tissue_area_mm2"), ".2f"), s.get("tissue_area_mm2", -1), "num"),
            _td(str(s.get("n_tiles", "—")), s.get("n_tiles", -1), "num"),
            _td(_qc_text(r.qc) or ("—" if ok else ""), ""),
            _td(f'<span class="error">{html.escape(r.error)}</span>', r.error),
        ]
        out.append(f'<tr data-slide="{name}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _patient_table(entries: list[dict[str, Any]]) -> str:
    head = [("Patient", "text"), ("Slides", "num"), ("Mapped", "num"), ("Failed", "num"),
            ("IDC fraction", "num"), ("Highest slide", "num"), ("IDC mm²", "num"),
            ("Tissue mm²", "num"), ("Missing from this folder", "text")]  # fmt: skip
    out = ['<table class="sortable" id="patients"><thead><tr>']
    out += [f'<th data-type="{t}">{h}</th>' for h, t in head]
    out.append("</tr></thead><tbody>")
    for e in entries:
        frac, top = e["idc_fraction"], e["max_fraction"]
        out.append(
            "<tr>" + _td(html.escape(e["patient"]), e["patient"])
            + _td(str(e["slides"]), e["slides"])
            + _td(str(e["mapped"]), e["mapped"]) + _td(str(e["failed"]), e["failed"])
            + _td(_fmt(frac, ".1%"), -1 if frac is None else frac, "num")
            + _td(_fmt(top, ".1%"), -1 if top is None else top, "num")
            + _td(f"{e['idc_mm2']:.2f}", e["idc_mm2"], "num")
            + _td(f"{e['tissue_mm2']:.2f}", e["tissue_mm2"], "num")
            + _td(html.escape(", ".join(e["missing"])), len(e["missing"])) + "</tr>"
        )  # fmt: skip
    out.append("</tbody></table>")
    return "\n".join(out)


def write_model_card(card: dict[str, Any], out_dir: Path) -> Path:
    """A copy of the bundle's model card beside a cohort's outputs, for ``idcscan report``."""
    target = out_dir / MODEL_CARD_COPY
    tmp = out_dir / f".{MODEL_CARD_COPY}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, target)
    return target


def load_card(out_dir: Path, bundle: Path | None) -> dict[str, Any] | None:
    """The model card: from ``bundle`` if given, else the copy a cohort run left in out_dir."""
    if bundle is not None:
        from idcscan.inference.bundle import load_bundle

        return load_bundle(bundle, verify=False).card.model_dump(mode="json")
    path = out_dir / MODEL_CARD_COPY
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
    return None


def _card_section(card: dict[str, Any] | None, rows: list[SlideRow]) -> str:
    models = sorted({
        f"{r.summary['model'].get('name')} {r.summary['model'].get('version')} "
        f"(sha256 {str(r.summary['model'].get('sha256'))[:12]}…)"
        for r in rows if r.status == "ok" and isinstance(r.summary.get("model"), dict)
    })  # fmt: skip
    out = ["<h2>Model</h2>"]
    if len(models) > 1:
        out.append('<p class="warn">These slides were mapped by different models: '
                   + html.escape("; ".join(models)) + ". Compare them with care.</p>")  # fmt: skip
    elif models:
        out.append(f"<p>Every slide was mapped by {html.escape(models[0])}.</p>")
    if card is None:
        out.append("<p>No model card here (pass <code>--bundle</code> to show it).</p>")
        return "\n".join(out)
    facts = [
        ("Name", f"{card.get('name')} {card.get('version')}"),
        ("Backbone", card.get("backbone")),
        ("Input", f"{card.get('patch_size')} px patches at {card.get('mpp')} µm/px, "
                  f"resized to {card.get('input_size')} px"),
        ("Patch threshold", card.get("threshold")),
        ("Calibration", json.dumps(card.get("calibration"))),
        ("Metrics", json.dumps(card.get("metrics"))),
        ("Data", json.dumps(card.get("data"))),
        ("Created", card.get("created")),
        ("model.onnx sha256", card.get("onnx_sha256")),
    ]  # fmt: skip
    if card.get("demo"):
        facts.insert(0, ("Demo model", "yes: not trained on real data; its maps mean nothing"))
    out.append("<dl class='card'>" + "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in facts
    ) + "</dl>")  # fmt: skip
    out.append("<details><summary>model.json</summary><pre>"
               + html.escape(json.dumps(card, indent=2)) + "</pre></details>")  # fmt: skip
    return "\n".join(out)


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{margin:0 0 4px}.disclaimer{background:#fff4e5;border:1px solid #f0b060;color:#7a4b00;
padding:8px 12px;border-radius:4px}table{border-collapse:collapse;margin:8px 0 24px}
th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:middle}
th{background:#f4f4f4;cursor:pointer;user-select:none;position:sticky;top:0}
th[data-type=none]{cursor:default}th.asc:after{content:" ▲"}th.desc:after{content:" ▼"}
td.num{text-align:right;font-variant-numeric:tabular-nums}td img{display:block;max-height:120px}
.status.ok{color:#1b5e20}.status.failed{color:#b71c1c;font-weight:bold}
.error{color:#b71c1c;font-size:12px}.warn{color:#b71c1c}.totals span{margin-right:18px}
dl.card{display:grid;grid-template-columns:max-content auto;gap:2px 12px}dt{font-weight:bold}
dd{margin:0;word-break:break-all}pre{font-size:12px;background:#f7f7f7;padding:8px}
"""

SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
 t.querySelectorAll('th').forEach(function(th,i){
  if(th.dataset.type==='none')return;
  th.addEventListener('click',function(){
   var asc=!th.classList.contains('asc');
   t.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
   th.classList.add(asc?'asc':'desc');
   var num=th.dataset.type==='num',b=t.tBodies[0],rows=Array.from(b.rows);
   rows.sort(function(x,y){var a=x.cells[i].dataset.sort,c=y.cells[i].dataset.sort;
    var d=num?parseFloat(a)-parseFloat(c):a.localeCompare(c,undefined,{numeric:true});
    return asc?d:-d;});
   rows.forEach(function(r){b.appendChild(r);});
  });
 });
});
"""


def render_report(
    out_dir: Path,
    rows: list[SlideRow],
    thumbs: dict[str, str],
    card: dict[str, Any] | None,
    patients: list[dict[str, Any]] | None,
) -> str:
    ok = [r for r in rows if r.status == "ok"]
    failed = [r for r in rows if r.status == "failed"]
    fractions = [float(r.summary["idc_fraction"]) for r in ok]
    tissue = sum(float(r.summary.get("tissue_area_mm2", 0)) for r in ok)
    idc = sum(float(r.summary.get("idc_area_mm2", 0)) for r in ok)
    median = f"{np.median(fractions):.1%}" if fractions else "—"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>idcscan cohort report: {html.escape(out_dir.name)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Cohort report: {html.escape(out_dir.name)}</h1>",
        f'<p class="disclaimer"><strong>{html.escape(DISCLAIMER)}</strong></p>',
        "<p class='totals'>"
        f"<span><b>{len(rows)}</b> slides</span><span><b>{len(ok)}</b> mapped</span>"
        f"<span><b>{len(failed)}</b> failed</span><span>tissue <b>{tissue:.2f}</b> mm²</span>"
        f"<span>IDC <b>{idc:.2f}</b> mm²</span><span>median IDC fraction <b>{median}</b></span>"
        "</p>",
    ]
    if fractions:
        parts.append(f"<img alt='Histogram of IDC fractions' src='"
                     f"{_data_uri(histogram_png(fractions), 'image/png')}'>")  # fmt: skip
    if patients is not None:
        parts += ["<h2>Patients</h2>", "<p>IDC fraction: IDC tiles over tissue tiles of all the "
                  "patient's mapped slides.</p>", _patient_table(patients)]  # fmt: skip
    parts += [
        "<h2>Slides</h2>",
        "<p>Click a column to sort. Map: P(IDC) over the tissue (turbo colours, blue = low, "
        "red = high); click it for the full heatmap. IDC fraction: tissue tiles with "
        "P(IDC) at or above the threshold in summary.json.</p>",
        _slide_table(rows, thumbs, patients is not None),
        _card_section(card, rows),
        f'<p class="disclaimer">{html.escape(DISCLAIMER)}</p>',
        f"<p><small>Written by idcscan {__version__} from {html.escape(str(out_dir))}."
        "</small></p>",
        f"<script>{SORT_JS}</script></body></html>",
    ]
    return "\n".join(parts)


def write_report(
    out_dir: str | Path, patients: str | Path | None = None, bundle: str | Path | None = None
) -> Path:
    """Write ``out_dir/report.html`` (atomically) and return its path."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise IdcscanError(f"{out_dir} is not a folder of slide-mode outputs.")
    rows = collect_slides(out_dir)
    if not rows:
        raise IdcscanError(
            f"{out_dir} holds no mapped slides (no */summary.json); run `idcscan slide` first."
        )
    mapping = read_patients(Path(patients)) if patients is not None else None
    if mapping is not None:
        for row in rows:
            row.patient = mapping.get(row.slide)
    inline = len(rows) <= INLINE_LIMIT
    thumbs: dict[str, str] = {}
    for row in rows:
        if row.status != "ok":
            continue
        try:
            data = _jpeg(overlay_thumbnail(out_dir / row.slide, row.summary))
        except (OSError, ValueError, KeyError):
            continue  # a folder missing its images still gets its row
        if inline:
            thumbs[row.slide] = _data_uri(data, "image/jpeg")
        else:
            (out_dir / THUMBS_DIR).mkdir(exist_ok=True)
            (out_dir / THUMBS_DIR / f"{row.slide}.jpg").write_bytes(data)
            thumbs[row.slide] = quote(f"{THUMBS_DIR}/{row.slide}.jpg")
    page = render_report(
        out_dir, rows, thumbs, load_card(out_dir, Path(bundle) if bundle else None),
        patient_rows(rows, mapping) if mapping is not None else None,
    )  # fmt: skip
    target = out_dir / REPORT_HTML
    tmp = out_dir / f".{REPORT_HTML}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, target)
    return target
