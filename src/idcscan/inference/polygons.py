"""Exact polygons of a boolean cell grid: the union of its squares, with holes.

The IDC map is a grid of square cells, so its outline is rectilinear; tracing cell edges
gives it exactly (a contour at level 0.5 would cut the corners). Regions are 4-connected:
cells touching only at a corner are separate regions. Every ring is simple; a hole may
touch its exterior at a single point, which GeoJSON/OGC allow, so QuPath, shapely and QGIS
read the result as valid.

Coordinates are grid vertices: (col, row), col along x (right), row along y (down).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

Vertex = tuple[int, int]

# unit moves, clockwise on screen (y down): right, down, left, up
_DIRS: tuple[Vertex, ...] = ((1, 0), (0, 1), (-1, 0), (0, -1))


@dataclass
class GridPolygon:
    exterior: list[Vertex]  # closed (first == last), positive shoelace area in (x, y-down)
    holes: list[list[Vertex]] = field(default_factory=list)
    component: int = 0  # 4-connected component label (1-based) of the cells it encloses


def _boundary_edges(mask: np.ndarray) -> dict[Vertex, list[Vertex]]:
    """Directed unit edges with the region on their right (screen): start -> [directions]."""
    m = np.pad(mask.astype(bool), 1)
    inner = m[1:-1, 1:-1]
    outgoing: dict[Vertex, list[Vertex]] = defaultdict(list)
    specs = (
        (~m[:-2, 1:-1], (0, 0), (1, 0)),  # top edge, moving right
        (~m[1:-1, 2:], (1, 0), (0, 1)),  # right edge, moving down
        (~m[2:, 1:-1], (1, 1), (-1, 0)),  # bottom edge, moving left
        (~m[1:-1, :-2], (0, 1), (0, -1)),  # left edge, moving up
    )
    for open_side, (ox, oy), direction in specs:
        rows, cols = np.nonzero(inner & open_side)
        for r, c in zip(rows.tolist(), cols.tolist()):
            outgoing[(c + ox, r + oy)].append(direction)
    return outgoing


def _walks(outgoing: dict[Vertex, list[Vertex]]) -> list[list[Vertex]]:
    """Chain edges into closed walks; at a pinch vertex turn right (hug the region)."""
    walks = []
    for start in list(outgoing):
        while outgoing.get(start):
            walk = [start]
            vertex = start
            direction = outgoing[start].pop()
            while True:
                vertex = (vertex[0] + direction[0], vertex[1] + direction[1])
                walk.append(vertex)
                options = outgoing.get(vertex)
                if not options:
                    break
                if len(options) == 1:
                    direction = options.pop()
                else:
                    turn = _DIRS[(_DIRS.index(direction) + 1) % 4]  # right turn on screen
                    direction = turn if turn in options else options[0]
                    options.remove(direction)
            walks.append(walk)
    return walks


def _simple_cycles(walk: list[Vertex]) -> list[list[Vertex]]:
    """Split a closed walk at repeated vertices into simple closed rings."""
    cycles = []
    stack: list[Vertex] = []
    position: dict[Vertex, int] = {}
    for vertex in walk:
        if vertex in position:
            i = position[vertex]
            cycle = stack[i:] + [vertex]
            for v in stack[i + 1 :]:
                del position[v]
            del stack[i + 1 :]
            if len(cycle) >= 4:
                cycles.append(cycle)
        else:
            position[vertex] = len(stack)
            stack.append(vertex)
    return cycles


def simplify_ring(ring: list[Vertex]) -> list[Vertex]:
    """Drop repeated and collinear vertices of a closed ring (returns it closed)."""
    pts = ring[:-1] if len(ring) > 1 and ring[0] == ring[-1] else list(ring)
    changed = True
    while changed and len(pts) >= 3:
        changed = False
        keep = []
        n = len(pts)
        for i in range(n):
            a, b, c = pts[i - 1], pts[i], pts[(i + 1) % n]
            cross = (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0])
            if b != a and cross != 0:
                keep.append(b)
            else:
                changed = True
        pts = keep
    return pts + pts[:1]


def ring_area(ring: list[Vertex] | np.ndarray) -> float:
    """Shoelace area; positive for exteriors as traced here (clockwise on screen)."""
    pts = np.asarray(ring, dtype=np.float64)
    x, y = pts[:, 0], pts[:, 1]
    return float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]) / 2.0)


def point_in_ring(px: float, py: float, ring: list[Vertex]) -> bool:
    """Even-odd rule; the points tested here never lie on an edge (they are cell centres)."""
    pts = np.asarray(ring, dtype=np.float64)
    x0, y0, x1, y1 = pts[:-1, 0], pts[:-1, 1], pts[1:, 0], pts[1:, 1]
    crosses = (y0 > py) != (y1 > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
    return bool(np.count_nonzero(crosses & (px < xi)) % 2)


def _inside_cell(ring: list[Vertex], side: int) -> tuple[int, int]:
    """(row, col) of the cell on ``side`` (+1 right = region, -1 left) of the ring's 1st edge."""
    (x0, y0), (x1, y1) = ring[0], ring[1]
    dx, dy = int(np.sign(x1 - x0)), int(np.sign(y1 - y0))
    nx, ny = -dy * side, dx * side  # right of heading (dx, dy) on screen is (-dy, dx)
    cx, cy = (x0 + x0 + dx) / 2 + nx / 2, (y0 + y0 + dy) / 2 + ny / 2
    return int(np.floor(cy)), int(np.floor(cx))


def mask_polygons(mask: np.ndarray) -> list[GridPolygon]:
    """Polygons (exterior + holes, grid-vertex coordinates) of the True cells of ``mask``."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    labels, _ = ndimage.label(mask)  # 4-connectivity, as traced
    exteriors: list[list[Vertex]] = []
    holes: list[list[Vertex]] = []
    for walk in _walks(_boundary_edges(mask)):
        for cycle in _simple_cycles(walk):
            ring = simplify_ring(cycle)
            if len(ring) < 5:
                continue
            (exteriors if ring_area(ring) > 0 else holes).append(ring)
    polygons = []
    for ring in exteriors:
        r, c = _inside_cell(ring, +1)
        polygons.append(GridPolygon(exterior=ring, component=int(labels[r, c])))
    areas = [ring_area(p.exterior) for p in polygons]
    for hole in holes:
        r, c = _inside_cell(hole, -1)  # a background cell inside the hole
        best, best_area = None, np.inf
        for i, poly in enumerate(polygons):
            if areas[i] < best_area and point_in_ring(c + 0.5, r + 0.5, poly.exterior):
                best, best_area = i, areas[i]
        if best is not None:
            polygons[best].holes.append(hole)
    polygons.sort(key=lambda p: (p.exterior[0][1], p.exterior[0][0]))
    return polygons
