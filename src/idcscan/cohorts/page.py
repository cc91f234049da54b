"""The cohort report's HTML: tables, model card, style and the few lines of sorting script.

Pure rendering from rows already collected (``cohorts.rows``); no file is read here, and
nothing the page needs comes from elsewhere, so it opens offline.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from idcscan import DISCLAIMER, __version__

if TYPE_CHECKING:
    from idcscan.cohorts.rows import SlideRow


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
        caveats = "".join(f'<div class="caveat">{html.escape(c)}</div>' for c in r.caveats)
        status = "ok, with caveats" if caveats else r.status
        cells += [
            _td(f'<span class="status {r.status}">{status}</span>{caveats}', status),
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


def _readable_card_html(card: dict[str, Any]) -> str:
    """The model card as people read it (the same words as ``idcscan card`` and the
    dashboard: ``model_card.readable_card``), or a one-line reason when it cannot be read."""
    from pydantic import ValidationError

    from idcscan.runtime.bundle import ModelCard
    from idcscan.runtime.model_card import readable_card

    try:
        readable = readable_card(ModelCard.model_validate(card))
    except ValidationError as exc:
        return f"<p class='warn'>The model card cannot be read: {html.escape(str(exc))}</p>"
    parts = []
    if readable["demo"]:
        parts.append("<p class='warn'>Demo model: not trained on real data; its maps mean "
                     "nothing.</p>")
    parts.append(f"<p><strong>{html.escape(readable['title'])}</strong>. "
                 f"{html.escape(readable['summary'])}</p>")
    decision = readable["decision"]
    parts.append("<dl class='card'>" + "".join(
        f"<dt>{name}</dt><dd>{html.escape(decision[key])}</dd>"
        for name, key in (("Call", "call"), ("Review flag", "review"),
                          ("Slide maps", "slide_area"))
    ) + "</dl>")  # fmt: skip
    for section in readable["sections"]:
        title = "About the model" if section["title"] == "Model" else section["title"]
        parts.append(f"<h3>{html.escape(title)}</h3><dl class='card'>" + "".join(
            f"<dt>{html.escape(str(a))}</dt><dd>{html.escape(str(b))}</dd>"
            for a, b in section["rows"]
        ) + "</dl>")  # fmt: skip
        if section.get("note"):
            parts.append(f"<p class='muted'>{html.escape(section['note'])}</p>")
    parts.append(f"<p class='muted'>model.onnx sha256 {html.escape(str(card.get('onnx_sha256')))}"
                 "</p>")
    return "\n".join(parts)


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
    out.append(_readable_card_html(card))
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
.error{color:#b71c1c;font-size:12px}.caveat{color:#8a4b00;font-size:12px;max-width:48ch}.warn{color:#b71c1c}.muted{color:#666;font-size:12px}.totals span{margin-right:18px}
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
    histogram: str | None = None,
) -> str:
    ok = [r for r in rows if r.status == "ok"]
    failed = [r for r in rows if r.status == "failed"]
    cautioned = [r for r in ok if r.caveats]
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
        f"<span><b>{len(failed)}</b> failed</span>"
        + (f"<span class='caveat-count'><b>{len(cautioned)}</b> with caveats (see Status)"
           "</span>" if cautioned else "")
        + f"<span>tissue <b>{tissue:.2f}</b> mm²</span>"
        f"<span>IDC <b>{idc:.2f}</b> mm²</span><span>median IDC fraction <b>{median}</b></span>"
        "</p>",
    ]
    if histogram:
        parts.append(f"<img alt='Histogram of IDC fractions' src='{histogram}'>")
    if patients is not None:
        parts += ["<h2>Patients</h2>", "<p>IDC fraction: IDC tiles over tissue tiles of all the "
                  "patient's mapped slides.</p>", _patient_table(patients)]  # fmt: skip
    parts += [
        "<h2>Slides</h2>",
        "<p>Click a column to sort. Map: P(IDC) over the tissue on one absolute scale for "
        "every slide (inferno: clear below 20%, purple, orange, then pale yellow at 100%; "
        "blue = not tissue); click it for the full heatmap. IDC fraction: tissue tiles in "
        "the IDC area (P(IDC) at or above the area threshold in summary.json).</p>",
        _slide_table(rows, thumbs, patients is not None),
        _card_section(card, rows),
        f'<p class="disclaimer">{html.escape(DISCLAIMER)}</p>',
        f"<p><small>Written by idcscan {__version__} from {html.escape(str(out_dir))}."
        "</small></p>",
        f"<script>{SORT_JS}</script></body></html>",
    ]
    return "\n".join(parts)
