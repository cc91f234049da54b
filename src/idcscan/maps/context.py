"""Slide mode's spatial context: each tile read with its neighbours.

IDC grows in regions many tiles wide, and the Kaggle labels are region
outlines (a coarse outline takes in some stroma), so a tile's neighbours carry evidence about
it that its own 50 px do not. Slide mode therefore maps each tissue tile's P(IDC) as a
Gaussian-weighted mean of the log-odds of the scored tissue tiles around it (sigma = one patch
by default, i.e. the nearest ring of neighbours weighs about 0.6 of the tile itself). Only
scored tiles take part: glass, background and QC-excluded tiles neither give nor take. Under
patient-grouped CV this lifted the tile AUC of the complete-patient mosaics from 0.940 to
0.961 (docs/RESULTS.md, "Slide mode under CV").

The area call that follows (which P(IDC) counts towards the IDC area) is a convention of the
bundle: ``idcscan.runtime.labels.area_threshold``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import binary_dilation, gaussian_filter

from idcscan.errors import IdcscanError

_EPS = 1e-6
#: the Gaussian reaches this many sigmas (scipy's ``truncate``)
TRUNCATE = 3.0


def smooth_probabilities(
    rows: np.ndarray, cols: np.ndarray, probabilities: np.ndarray, sigma_cells: float
) -> np.ndarray:
    """Each tile's P(IDC) as the Gaussian-weighted mean log-odds of its scored neighbours.

    ``rows``/``cols`` place the tiles on their grid; the weights are renormalised over the
    tiles present (normalised convolution), so a tile at the tissue edge is not pulled towards
    the empty glass beside it.
    """
    if sigma_cells <= 0 or len(probabilities) == 0:
        return probabilities.astype(np.float64, copy=True)
    r0, c0 = int(rows.min()), int(cols.min())
    r, c = rows - r0, cols - c0
    shape = (int(r.max()) + 1, int(c.max()) + 1)
    p = np.clip(probabilities.astype(np.float64), _EPS, 1.0 - _EPS)
    logit = np.zeros(shape)
    weight = np.zeros(shape)
    logit[r, c] = np.log(p / (1.0 - p))
    weight[r, c] = 1.0
    # mode="constant": outside the grid counts as absent, like glass
    num = gaussian_filter(logit, sigma_cells, mode="constant", truncate=TRUNCATE)[r, c]
    den = gaussian_filter(weight, sigma_cells, mode="constant", truncate=TRUNCATE)[r, c]
    z = num / np.maximum(den, 1e-12)
    return 1.0 / (1.0 + np.exp(-z))


def sigma_in_cells(context: float, tile: int, stride: int) -> float:
    """Sigma on the tile grid for ``context`` patches (tiles overlap when stride < tile)."""
    if context <= 0:
        return 0.0
    return float(context) * tile / max(1, stride)


def context_reach(sigma_cells: float) -> int:
    """How many grid cells away a tile's neighbours still weigh in its mapped P(IDC) (the
    radius of scipy's kernel), so a map of part of a slide can score that ring around it and
    give the tiles inside the same mapped P(IDC) as the whole slide's map does."""
    return int(TRUNCATE * sigma_cells + 0.5) if sigma_cells > 0 else 0


def within_reach(tiles: np.ndarray, rows: int, cols: int, sigma_cells: float) -> np.ndarray:
    """The tiles of a ``rows`` x ``cols`` grid (row-major booleans) that ``tiles`` or their
    neighbours within :func:`context_reach`: what must be scored to map ``tiles`` exactly."""
    reach = context_reach(sigma_cells)
    if reach == 0:
        return tiles.copy()
    grid = tiles.reshape(rows, cols)
    # the kernel is separable, so its support is a square
    ring = binary_dilation(grid, structure=np.ones((2 * reach + 1, 2 * reach + 1), dtype=bool))
    return ring.ravel()


def check_context(context: float) -> None:
    if not (math.isfinite(context) and 0.0 <= context <= 10.0):
        raise IdcscanError(f"--context must be between 0 (off) and 10 patches, got {context}.")
