"""Pieces of slide mode that need no model: tissue mask, tile grid, shards, readers."""

from __future__ import annotations

import numpy as np
import pytest

from idcscan.errors import IdcscanError
from idcscan.maps.run import expand_inputs, parse_shard, select_shard
from idcscan.slides.formats import PlainImageReader, open_slide
from idcscan.slides.tiling import plan_grid
from idcscan.slides.tissue import TissueParams, tile_fractions, tissue_mask


def test_tissue_mask_keeps_stain_and_drops_glass_and_pen() -> None:
    rng = np.random.default_rng(0)
    img = np.full((120, 160, 3), 244, dtype=np.uint8)
    img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    img[20:100, 10:70] = (235, 170, 205)  # pale eosin
    img[20:100, 70:110] = (150, 90, 170)  # haematoxylin-rich
    img[30:90, 125:150] = (15, 15, 20)  # black pen / scanner border
    mask, threshold = tissue_mask(img, mpp=10.0)
    assert TissueParams().saturation_bounds[0] <= threshold <= TissueParams().saturation_bounds[1]
    assert mask[25:95, 15:105].all()
    assert not mask[35:85, 128:147].any()
    assert not mask[:10].any() and not mask[110:].any()


def test_tile_fractions_count_partial_tiles() -> None:
    mask = np.zeros((40, 40), dtype=bool)
    mask[:, :10] = True  # a quarter of the width is tissue
    xs = np.array([0, 0, 20])
    ys = np.array([0, 20, 0])
    f = tile_fractions(mask, xs * 4, ys * 4, tile=80, scale=4.0)  # tiles of 20 mask px
    assert f == pytest.approx([0.5, 0.5, 0.0])


def test_grid_picks_the_pyramid_level_and_covers_the_image(tmp_path) -> None:
    class Pyramid(PlainImageReader):
        """Level sizes of a 0.25 µm/px scan; only the geometry is used here."""

        def __init__(self) -> None:
            pass

        level_dimensions = ((10_000, 6_000), (2_500, 1_500), (312, 187))

        @property
        def mpp(self) -> float:
            return 0.25

    grid = plan_grid(Pyramid(), mpp=0.25, target_mpp=4.0, patch_size=50, stride_px=None)
    assert grid.tile == 800 and grid.stride == 800
    assert grid.level == 1 and grid.level_tile == 200  # ds 4 <= 16 < ds 32: read, resize
    assert (grid.cols, grid.rows) == (13, 8)  # the last column/row runs past the edge
    overlap = plan_grid(Pyramid(), mpp=0.25, target_mpp=4.0, patch_size=50, stride_px=25)
    assert overlap.stride == 400 and overlap.cells_per_tile == 2


def test_shards_partition_the_sorted_inputs(tmp_path) -> None:
    for name in ["d.png", "a.png", "c.png", "b.png", "e.png"]:
        (tmp_path / name).write_bytes(b"x")
    paths = expand_inputs([tmp_path])
    assert [p.name for p in paths] == ["a.png", "b.png", "c.png", "d.png", "e.png"]
    shards = [select_shard(paths, (i, 3)) for i in (1, 2, 3)]
    names = [[p.name for p in s] for s in shards]
    assert names == [["a.png", "d.png"], ["b.png", "e.png"], ["c.png"]]
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(IdcscanError):
            parse_shard(bad)


def test_unreadable_inputs_raise_user_errors(tmp_path) -> None:
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"II*\x00" + b"\x13" * 200)
    with pytest.raises(IdcscanError, match="broken.svs"):
        open_slide(bad)
    with pytest.raises(IdcscanError, match="OpenSlide|openslide"):
        mrxs = tmp_path / "slide.mrxs"
        mrxs.write_bytes(b"not really")
        open_slide(mrxs).close()
    with pytest.raises(IdcscanError, match="does not exist"):
        open_slide(tmp_path / "missing.tif")


def test_openslide_and_tiffslide_readers_agree(tmp_path) -> None:
    """Where the optional OpenSlide is installed, both backends give the same pixels."""
    pytest.importorskip("openslide")
    import tifffile

    from idcscan.slides.formats import OpenSlideReader, TiffSlideReader

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (50, 60, 3), dtype=np.uint8)
    path = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(path) as tif:  # levels as top-level IFDs: both backends read it
        for i, ds in enumerate((1, 2, 4)):
            level = np.repeat(np.repeat(image, 16 // ds, 0), 16 // ds, 1)
            res = 1e4 / (0.25 * ds)
            extra = {} if i == 0 else {"subfiletype": 1}
            tif.write(level, tile=(256, 256), photometric="rgb", resolution=(res, res),
                      resolutionunit="CENTIMETER", **extra)  # fmt: skip
    with OpenSlideReader(path) as a, TiffSlideReader(path) as b:
        assert a.level_dimensions == b.level_dimensions and a.mpp == b.mpp == 0.25
        regions = [(2, 100, 60, 90, 70), (1, 700, 500, 120, 80), (0, 900, 760, 80, 60)]
        for region in regions:  # the last runs past the edge: white in both
            assert np.array_equal(a.read_region(*region), b.read_region(*region))
