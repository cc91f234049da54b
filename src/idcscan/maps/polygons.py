"""Exact polygons of a boolean cell grid: the union of its squares, with holes.

The IDC map is a grid of square cells, so its outline is rectilinear; the union of the cells'
squares gives it exactly (a contour at level 0.5 would cut the corners). shapely (GEOS) forms
that union and returns valid OGC geometry: cells touching only at a corner are separate
polygons (4-connected regions, as ``scipy.ndimage.label`` counts them), and a hole may touch
its exterior at a single point, which GeoJSON/OGC allow, so QuPath, shapely and QGIS read the
result as valid.

Coordinates are grid vertices: (col, row), col along x (right), row along y (down).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry.polygon import orient

Vertex = tuple[int, int]


@dataclass
class GridPolygon:
    exterior: list[Vertex]  # closed (first == last), positive shoelace area in (x, y-down)
    holes: list[list[Vertex]] = field(default_factory=list)
    component: int = 0  # 4-connected component label (1-based) of the cells it encloses


def ring_area(ring: list[Vertex] | np.ndarray) -> float:
    """Shoelace area; positive for exteriors as returned here (clockwise on screen)."""
    pts = np.asarray(ring, dtype=np.float64)
    x, y = pts[:, 0], pts[:, 1]
    return float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]) / 2.0)


def _ring(coords: np.ndarray) -> list[Vertex]:
    """Integer vertices without collinear ones, closed, starting at the top-left-most vertex
    (so the same mask always gives the same file)."""
    pts = [(int(round(x)), int(round(y))) for x, y in coords[:-1]]
    n = len(pts)
    kept = [b for i, b in enumerate(pts)
            if (b[0] - pts[i - 1][0]) * (pts[(i + 1) % n][1] - b[1])
            != (b[1] - pts[i - 1][1]) * (pts[(i + 1) % n][0] - b[0])]
    start = min(range(len(kept)), key=lambda i: (kept[i][1], kept[i][0]))
    kept = kept[start:] + kept[:start]
    return kept + kept[:1]


def _row_runs(mask: np.ndarray) -> np.ndarray:
    """One rectangle per horizontal run of True cells: (x0, y0, x1, y1) rows. The union of a
    few runs is far cheaper than the union of every cell."""
    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)  # same row-major order as the starts
    return np.stack([starts, rows, ends, rows + 1], axis=1)


def mask_polygons(mask: np.ndarray) -> list[GridPolygon]:
    """Polygons (exterior + holes, grid-vertex coordinates) of the True cells of ``mask``."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    labels, _ = ndimage.label(mask)  # 4-connectivity, as the union separates regions
    runs = _row_runs(mask)
    union = shapely.union_all(shapely.box(runs[:, 0], runs[:, 1], runs[:, 2], runs[:, 3]))
    polygons = []
    for part in shapely.get_parts(union):
        part = orient(part, sign=1.0)  # exterior positive, holes negative, in (x, y-down)
        inside = part.representative_point()
        polygons.append(GridPolygon(
            exterior=_ring(np.asarray(part.exterior.coords)),
            holes=[_ring(np.asarray(h.coords)) for h in part.interiors],
            component=int(labels[int(np.floor(inside.y)), int(np.floor(inside.x))]),
        ))
    polygons.sort(key=lambda p: (p.exterior[0][1], p.exterior[0][0]))
    return polygons
