"""Layers for a viewer, read back from a finished slide folder (what ``idcscan slide`` wrote).

A viewer lays the IDC map over the slide itself, so it needs the per-tile probabilities as
a grid (for the colour layer and for reading the value under the cursor), not the
thumbnail-sized heatmap.png. Everything here is rebuilt from ``summary.json``,
``tiles.csv`` and ``qc_tiles.csv``, so a folder made by the command line opens in the viewer
exactly like one made from the viewer.

The colour layer uses matplotlib's ``inferno`` (perceptually uniform, readable by people with
colour-vision deficiencies) with an opacity that rises with P(IDC): cells below
``ALPHA_FROM`` are fully transparent and the tissue under them stays readable.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from idcscan.errors import IdcscanError
from idcscan.inference.qc import KINDS

COLORMAP = "inferno"
#: P(IDC) at which the colour layer starts to show, and where it reaches full opacity
ALPHA_FROM = 0.2
ALPHA_FULL = 0.7


@dataclass
class MapGrid:
    """Per-tile P(IDC) on the slide's tile grid (row-major; NaN where not scored)."""

    width: int
    height: int
    tile: int
    stride: int
    mpp: float
    threshold: float
    probabilities: np.ndarray  # (rows, cols) float, NaN: not scored
    qc: np.ndarray  # (rows, cols) uint8 QC kind code of tiles left out, 0 otherwise

    @property
    def rows(self) -> int:
        return int(self.probabilities.shape[0])

    @property
    def cols(self) -> int:
        return int(self.probabilities.shape[1])

    def as_json(self) -> dict[str, Any]:
        """The grid for a browser: lists, ``None`` for tiles that were not scored."""
        probs = [
            [None if math.isnan(v) else round(v, 4) for v in row]
            for row in self.probabilities.tolist()
        ]
        return {
            "width": self.width,
            "height": self.height,
            "tile": self.tile,
            "stride": self.stride,
            "mpp": self.mpp,
            "threshold": self.threshold,
            "cols": self.cols,
            "rows": self.rows,
            "probabilities": probs,
            "qc": self.qc.tolist(),
            "qc_kinds": ["", *KINDS],
        }

    def value_at(self, x: float, y: float) -> float | None:
        """P(IDC) of the tile whose cell holds level-0 point (x, y), if it was scored."""
        c, r = int(x // self.stride), int(y // self.stride)
        if not (0 <= r < self.rows and 0 <= c < self.cols):
            return None
        v = float(self.probabilities[r, c])
        return None if math.isnan(v) else v


def load_grid(folder: str | Path) -> MapGrid:
    """The map of one finished slide folder."""
    folder = Path(folder)
    try:
        summary = json.loads((folder / "summary.json").read_text())
        width, height = int(summary["width"]), int(summary["height"])
        tile, stride = int(summary["tile_size"]), int(summary["stride"])
    except (OSError, ValueError, KeyError) as exc:
        raise IdcscanError(f"{folder} is not a finished slide folder: {exc}") from exc
    cols = math.ceil(max(width - tile, 0) / stride) + 1
    rows = math.ceil(max(height - tile, 0) / stride) + 1
    probs = np.full((rows, cols), np.nan, dtype=np.float64)
    for x, y, value in _rows(folder / "tiles.csv", "probability"):
        probs[y // stride, x // stride] = float(value)
    qc = np.zeros((rows, cols), dtype=np.uint8)
    for x, y, kind in _rows(folder / "qc_tiles.csv", "kind"):
        if kind in KINDS:
            qc[y // stride, x // stride] = KINDS.index(kind) + 1
    return MapGrid(
        width=width, height=height, tile=tile, stride=stride, mpp=float(summary["mpp"]),
        threshold=float(summary["threshold"]), probabilities=probs, qc=qc,
    )  # fmt: skip


def _rows(path: Path, column: str) -> list[tuple[int, int, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [(int(r["x"]), int(r["y"]), r[column]) for r in csv.DictReader(fh)]


def overlay_rgba(grid: MapGrid) -> np.ndarray:
    """One pixel per tile: ``inferno`` colour, opacity rising with P(IDC) (RGBA uint8)."""
    from matplotlib import colormaps

    p = np.nan_to_num(grid.probabilities, nan=0.0)
    rgba = colormaps[COLORMAP](p, bytes=True)
    ramp = np.clip((p - ALPHA_FROM) / (ALPHA_FULL - ALPHA_FROM), 0.0, 1.0)
    rgba[..., 3] = np.where(np.isnan(grid.probabilities), 0, np.round(ramp * 235)).astype(np.uint8)
    return rgba


def overlay_png(grid: MapGrid) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(overlay_rgba(grid)), mode="RGBA").save(buf, "PNG")
    return buf.getvalue()
