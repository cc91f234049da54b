"""Deep Zoom tiles as JPEG: the coarse tiles cut from the overview are made once."""

from __future__ import annotations

from pathlib import Path

from idcscan.data.synthetic_slide import write_synthetic_wsi
from idcscan.slides.deepzoom import DeepZoom, jpeg_bytes
from idcscan.slides.formats import TiffSlideReader


def test_tile_jpeg_is_the_tile_encoded_and_keeps_only_overview_tiles(tmp_path: Path) -> None:
    path = write_synthetic_wsi(tmp_path / "s.tif", 9000, 7000, mpp=0.5, min_level_side=500)
    with TiffSlideReader(path) as reader:
        dz = DeepZoom(reader)
        levels = range(dz.level_count)
        coarse = [lv for lv in levels if dz.from_overview(lv)]
        fine = [lv for lv in levels if not dz.from_overview(lv)]
        assert coarse and fine and max(coarse) < min(fine)
        for level in (coarse[-1], fine[0], fine[-1]):
            first = dz.tile_jpeg(level, 0, 0)
            assert first == jpeg_bytes(dz.tile(level, 0, 0))
            assert dz.tile_jpeg(level, 0, 0) == first
        assert dz.tile_jpeg(fine[-1], 10_000, 0) is None
        assert set(dz._jpeg_cache) == {(coarse[-1], 0, 0)}
