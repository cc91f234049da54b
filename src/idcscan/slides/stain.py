"""A slide's stains, estimated once from its own tissue tiles, for bundles that normalise per
group (``--stain-norm macenko``).

Training normalised each patient with the stains of all its patches; the slide-mode twin of a
patient is the slide. Reading every tile twice would double the slide's read time, and a
Macenko estimate settles long before that (it works on percentiles of hundreds of thousands of
pixels), so a seeded sample of ``SAMPLE_TILES`` tissue tiles, spread over the slide, is read
first, at the scale and size the model sees, and every tile is then normalised with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from idcscan.runtime.predictor import Predictor
from idcscan.slides.reader import SlideReader
from idcscan.slides.tiling import TileGrid, iter_batches
from idcscan.stain import StainGroup

#: Tissue tiles the slide's stains are estimated on (all of them on a smaller slide).
SAMPLE_TILES = 256


def slide_stain_group(
    predictor: Predictor, reader: SlideReader, grid: TileGrid, tile_index: np.ndarray,
    batch_size: int = 64, seed: int = 0,
) -> tuple[StainGroup | None, dict[str, Any]]:
    """The slide's stain group (None if the bundle needs none) and what summary.json records."""
    if predictor.group_norm is None or len(tile_index) == 0:
        return None, {}
    n = min(SAMPLE_TILES, len(tile_index))
    pick = np.sort(np.random.default_rng(seed).choice(len(tile_index), n, replace=False))
    patches = np.concatenate(
        [b.patches for b in iter_batches(reader, grid, tile_index[pick], batch_size)]
    )
    group = predictor.stain_group(patches)
    assert group is not None
    return group, {"method": "macenko", "per": "slide", "tiles": int(n), **group.to_dict()}
