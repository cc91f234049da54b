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
import io
import json
import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image

from idcscan.cohorts.page import render_report
from idcscan.cohorts.rows import collect_slides, patient_rows, read_patients
from idcscan.errors import IdcscanError

REPORT_HTML = "report.html"
THUMBS_DIR = "report_files"
MODEL_CARD_COPY = "model_card.json"
THUMB_SIDE = 160
#: above this many slides the thumbnails are written beside the page instead of inside it
INLINE_LIMIT = 2000


def overlay_thumbnail(folder: Path, summary: dict[str, Any], side: int = THUMB_SIDE) -> Image.Image:
    """tissue.png with each classified tile's P(IDC) colour-mapped over it, ``side`` px."""
    from idcscan.maps.colour import blend
    from idcscan.maps.outputs import OVERLAY_ALPHA

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
    return Image.fromarray(blend(np.asarray(base), probs, OVERLAY_ALPHA))


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
        from idcscan.runtime.bundle import load_bundle

        return load_bundle(bundle, verify=False).card.model_dump(mode="json")
    path = out_dir / MODEL_CARD_COPY
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
    return None


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
    fractions = [float(r.summary["idc_fraction"]) for r in rows if r.status == "ok"]
    page = render_report(
        out_dir, rows, thumbs, load_card(out_dir, Path(bundle) if bundle else None),
        patient_rows(rows, mapping) if mapping is not None else None,
        _data_uri(histogram_png(fractions), "image/png") if fractions else None,
    )  # fmt: skip
    target = out_dir / REPORT_HTML
    tmp = out_dir / f".{REPORT_HTML}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, target)
    return target
