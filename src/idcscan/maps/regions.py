"""Regions drawn in QuPath (or any GeoJSON polygons): slide mode scores only the tissue inside.

Read from a QuPath export (*File → Export objects as GeoJSON*, with or without "Export as
FeatureCollection", optionally gzip-compressed) or any GeoJSON whose coordinates are the
slide's level-0 pixels (origin top-left, y down). What counts:

- Polygons and MultiPolygons, holes honoured; points and lines are left out.
- Of QuPath's objects only annotations: a Feature whose ``objectType`` is ``detection``,
  ``cell``, ``tile`` or ``tmaCore`` (such as idcscan's own tiles.geojson imported back) is not a
  region. A Feature without ``objectType`` is one, as QuPath itself reads it.
- Outlines that cross themselves are repaired (``shapely.make_valid``) and overlapping regions
  are merged, so no tissue counts twice; what lies beyond the slide is cut off.

A tile belongs to the regions when its centre lies inside them: the rule that already decides
which output cell a tile paints, so a tile straddling an outline counts on one side only and the
areas are neither inflated nor shrunk on average. The model still sees the tile's whole field
of view (200 µm), up to half of which may lie outside the outline. Slide mode reads each tile
with its neighbours (``maps.context``), so the tissue within that reach outside the outline is
scored too, as evidence only: a tile inside gets the same mapped P(IDC) as in the whole slide's
map, wherever the outline was drawn.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from idcscan.errors import IdcscanError
from idcscan.slides.tiling import TileGrid

#: QuPath object types that are not regions (QuPath reads a missing type as an annotation)
NOT_REGIONS = {"detection", "cell", "tile", "tmacore", "tma_core", "root"}
RULE = ("a tile is counted when its centre lies inside a region; tissue area, IDC area, "
        "idc_fraction, n_tiles and qc_excluded_mm2 count those tiles only, each read with its "
        "neighbours as in a map of the whole slide (those just outside the regions included)")


@dataclass(frozen=True)
class Regions:
    """The union of the regions read from one file, in level-0 pixels."""

    file: str
    polygons: tuple[BaseGeometry, ...]  # one per annotation, repaired
    geometry: BaseGeometry  # their union
    #: sha256 of the file's (decompressed) content: a map knows which regions it holds even
    #: when the file is edited and saved again under the same name (``maps.identity``)
    sha256: str = ""

    @property
    def count(self) -> int:
        return len(self.polygons)

    def on_slide(self, width: int, height: int, slide: str) -> Regions:
        """The regions cut to the slide; an error when none of them reaches into it."""
        frame = box(0, 0, width, height)
        kept = tuple(g for g in (p.intersection(frame) for p in self.polygons) if g.area > 0)
        if not kept:
            raise IdcscanError(
                f"None of the {self.count} region(s) in {self.file} lies on {slide} ({width} x "
                f"{height} level-0 px): drawn on another slide, or exported in other "
                "coordinates?"
            )
        return Regions(self.file, kept, shapely.union_all(kept), self.sha256)

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Which points (level-0 pixels) lie inside (boundary included)."""
        shapely.prepare(self.geometry)
        return shapely.intersects_xy(self.geometry, np.asarray(x, np.float64),
                                     np.asarray(y, np.float64))

    def _squares_inside(self, x0: np.ndarray, y0: np.ndarray, side: int,
                        grid: TileGrid) -> np.ndarray:
        """Which squares (top-left corners and side, level-0 pixels) have the centre of their
        part on the slide inside the regions."""
        x0, y0 = np.asarray(x0, np.float64), np.asarray(y0, np.float64)
        return self.contains((x0 + np.minimum(x0 + side, grid.width)) / 2,
                             (y0 + np.minimum(y0 + side, grid.height)) / 2)

    def tiles_inside(self, grid: TileGrid) -> np.ndarray:
        """Per tile of the grid (row-major index), whether it belongs to the regions."""
        xs, ys = grid.origins()
        return self._squares_inside(xs, ys, grid.tile, grid)

    def cells_inside(self, grid: TileGrid) -> np.ndarray:
        """(cell_rows, cell_cols): whether each output cell belongs to the regions."""
        cx, cy = np.meshgrid(np.arange(grid.cell_cols) * grid.stride,
                             np.arange(grid.cell_rows) * grid.stride)
        inside = self._squares_inside(cx.ravel(), cy.ravel(), grid.stride, grid)
        return inside.reshape(grid.cell_rows, grid.cell_cols)

    def describe(self, mpp: float) -> dict[str, Any]:
        """What summary.json says about the regions."""
        return {"file": self.file, "count": self.count,
                "area_mm2": round(float(self.geometry.area) * mpp * mpp / 1e6, 6), "rule": RULE,
                "sha256": self.sha256}


def _features(data: Any) -> list[dict[str, Any]]:
    """Features of a FeatureCollection, a list of them (QuPath without FeatureCollection), a
    single Feature or a bare geometry."""
    if isinstance(data, list):
        return [f for item in data for f in _features(item)]
    if not isinstance(data, dict):
        return []
    kind = data.get("type")
    if kind == "FeatureCollection":
        return _features(data.get("features") or [])
    if kind == "Feature":
        return [data]
    if kind in ("Polygon", "MultiPolygon", "GeometryCollection"):
        return [{"type": "Feature", "geometry": data, "properties": {}}]
    return []


def _object_type(feature: dict[str, Any]) -> str:
    props = feature.get("properties") or {}
    for key in ("objectType", "object_type", "type"):
        if isinstance(props.get(key), str):
            return props[key].lower()
    return "annotation"


def _polygonal(geometry: BaseGeometry) -> BaseGeometry | None:
    """The polygonal part of a (repaired) geometry, or None."""
    geometry = shapely.make_valid(geometry)
    parts = [g for g in getattr(geometry, "geoms", [geometry])
             if g.geom_type in ("Polygon", "MultiPolygon") and g.area > 0]
    return shapely.union_all(parts) if parts else None


def read_regions(path: str | Path) -> Regions:
    """The annotation polygons of a GeoJSON file; one-line errors for files that have none."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        data = json.loads(text)
    except FileNotFoundError:
        raise IdcscanError(f"--regions {path}: no such file.") from None
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError, bad gzip
        raise IdcscanError(f"--regions {path} is not a GeoJSON file ({exc}).") from None
    polygons: list[BaseGeometry] = []
    for feature in _features(data):
        if _object_type(feature) in NOT_REGIONS or not feature.get("geometry"):
            continue
        try:
            geometry = shape(feature["geometry"])
        except (ValueError, TypeError, AttributeError, KeyError):
            continue  # not a geometry shapely reads: a point cloud, a malformed ring
        poly = _polygonal(geometry)
        if poly is not None:
            polygons.append(poly)
    if not polygons:
        raise IdcscanError(
            f"--regions {path} holds no polygon annotations (only annotations with an area "
            "count; export them from QuPath with File > Export objects as GeoJSON)."
        )
    return Regions(str(path), tuple(polygons), shapely.union_all(polygons),
                   hashlib.sha256(text).hexdigest())
