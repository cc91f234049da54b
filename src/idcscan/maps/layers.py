"""Layers for a viewer, read back from a finished slide folder (what ``idcscan slide`` wrote).

A viewer lays the IDC map over the slide itself, so it needs the per-tile probabilities as
a grid (for the colour layer and for reading the value under the cursor), not the
thumbnail-sized heatmap.png. Everything here is rebuilt from ``summary.json``,
``tiles.csv`` and ``qc_tiles.csv``, so a folder made by the command line opens in the viewer
exactly like one made from the viewer.

The colour layer is ``idcscan.maps.colour``'s, the same as heatmap.png's.
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
from idcscan.maps.colour import idc_rgba
from idcscan.slides.qc import KINDS


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
    #: (rows, cols) P(IDC) of each tile from its own pixels, without spatial context (None:
    #: a folder written before slide mode used context, where the two are the same)
    patch_probabilities: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return int(self.probabilities.shape[0])

    @property
    def cols(self) -> int:
        return int(self.probabilities.shape[1])

    def as_json(self) -> dict[str, Any]:
        """The grid for a browser: lists, ``None`` for tiles that were not scored."""
        probs = _json_grid(self.probabilities)
        alone = probs if self.patch_probabilities is None else _json_grid(self.patch_probabilities)
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
            "patch_probabilities": alone,
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


def _json_grid(values: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(v) else round(v, 4) for v in row] for row in values.tolist()]


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
    alone = np.full((rows, cols), np.nan, dtype=np.float64)
    for x, y, value, own in _rows(folder / "tiles.csv", "probability", "patch_probability"):
        probs[y // stride, x // stride] = float(value)
        alone[y // stride, x // stride] = float(own or value)  # older folders: no context
    qc = np.zeros((rows, cols), dtype=np.uint8)
    for x, y, kind in _rows(folder / "qc_tiles.csv", "kind"):
        if kind in KINDS:
            qc[y // stride, x // stride] = KINDS.index(kind) + 1
    return MapGrid(
        width=width, height=height, tile=tile, stride=stride, mpp=float(summary["mpp"]),
        threshold=float(summary["threshold"]), probabilities=probs, qc=qc,
        patch_probabilities=alone,
    )  # fmt: skip


def _rows(path: Path, *columns: str) -> list[tuple[Any, ...]]:
    """x, y and the named columns ("" where a column is missing) of a slide folder's CSV."""
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [(int(r["x"]), int(r["y"]), *(r.get(c) or "" for c in columns))
                for r in csv.DictReader(fh)]


def overlay_rgba(grid: MapGrid) -> np.ndarray:
    """One pixel per tile, in the P(IDC) colour scale (RGBA uint8)."""
    return idc_rgba(grid.probabilities)


def overlay_png(grid: MapGrid) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(overlay_rgba(grid)), mode="RGBA").save(buf, "PNG")
    return buf.getvalue()
