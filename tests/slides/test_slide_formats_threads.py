"""Tiles of one TIFF read from many threads at once (the Deep Zoom server does this)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from idcscan.data.synthetic_slide import write_synthetic_wsi
from idcscan.slides.formats import TiffSlideReader


def _regions(reader: TiffSlideReader, n: int, seed: int) -> list[tuple[int, int, int, int, int]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        level = int(rng.integers(0, reader.level_count))
        lw, lh = reader.level_dimensions[level]
        w, h = int(rng.integers(1, min(lw, 600) + 1)), int(rng.integers(1, min(lh, 600) + 1))
        out.append((level, int(rng.integers(0, lw - w + 1)), int(rng.integers(0, lh - h + 1)),
                    w, h))
    return out


def test_parallel_reads_return_the_same_pixels_as_serial_ones(tmp_path: Path) -> None:
    path = write_synthetic_wsi(tmp_path / "s.tif", 6000, 5000, mpp=0.5, min_level_side=256)
    with TiffSlideReader(path) as reader:
        assert reader.thread_safe  # every level goes through the direct tile reader
        regions = _regions(reader, 400, seed=1)
        serial = [reader.read_level(*r) for r in regions]
        with ThreadPoolExecutor(8) as pool:
            parallel = list(pool.map(lambda r: reader.read_level(*r), regions))
    assert all(np.array_equal(a, b) for a, b in zip(serial, parallel))
