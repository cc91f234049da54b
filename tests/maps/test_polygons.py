"""IDC outlines: the polygons of a cell grid are exactly its True cells."""

from __future__ import annotations

import numpy as np
import pytest

from idcscan.maps.polygons import mask_polygons, ring_area


def _rasterise(polygons, shape) -> np.ndarray:
    """Cell centres inside the polygons by the even-odd rule over every ring (holes, islands)."""
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    px, py = xx + 0.5, yy + 0.5
    crossings = np.zeros(shape, dtype=np.int64)
    for poly in polygons:
        for ring in [poly.exterior, *poly.holes]:
            for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:]):
                if y0 == y1:
                    continue  # horizontal edges never cross a horizontal ray
                spans = (np.minimum(y0, y1) < py) & (py < np.maximum(y0, y1))
                crossings += spans & (px < x0)  # vertical edge at x = x0 = x1
    return crossings % 2 == 1


@pytest.mark.parametrize("seed", range(6))
def test_polygons_are_exactly_the_mask(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random((14, 17)) < [0.35, 0.5, 0.6, 0.45, 0.7, 0.55][seed]
    polygons = mask_polygons(mask)
    assert np.array_equal(_rasterise(polygons, mask.shape), mask)
    area = sum(ring_area(p.exterior) + sum(ring_area(h) for h in p.holes) for p in polygons)
    assert area == pytest.approx(mask.sum())
    for poly in polygons:
        assert ring_area(poly.exterior) > 0 and all(ring_area(h) < 0 for h in poly.holes)
        for ring in [poly.exterior, *poly.holes]:
            assert ring[0] == ring[-1]
            assert len(set(ring[:-1])) == len(ring) - 1  # simple: no vertex visited twice


def test_pinched_hole_and_diagonal_neighbours() -> None:
    # a ring of cells whose hole touches the outside at one corner, and a diagonal pair
    mask = np.array(
        [
            [1, 1, 1, 0, 0],
            [1, 0, 1, 0, 0],
            [1, 1, 0, 0, 1],
            [0, 0, 0, 1, 0],
        ],
        dtype=bool,
    )
    polygons = mask_polygons(mask)
    assert len(polygons) == 3  # diagonal cells are separate regions (4-connectivity)
    ring = next(p for p in polygons if p.holes)
    assert len(ring.holes) == 1 and ring_area(ring.holes[0]) == -1
    assert np.array_equal(_rasterise(polygons, mask.shape), mask)
