"""Real vendor files (OpenSlide Python's fixtures): scale and levels read right, damage and
missing scale reported in one line, and a cohort run that skips and lists what it cannot map."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from idcscan.cli import app
from idcscan.errors import IdcscanError
from idcscan.slides.formats import OpenSlideReader, TiffSlideReader, open_slide

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "openslide"


def test_aperio_svs_has_its_scale_and_level() -> None:
    with open_slide(FIXTURES / "small.svs") as reader:
        assert isinstance(reader, TiffSlideReader)
        assert reader.mpp == pytest.approx(0.499)
        assert reader.level_dimensions == ((16, 16),) and reader.format == "aperio"
        region = reader.read_level(0, 0, 0, 16, 16)
        assert region.shape == (16, 16, 3) and region.std() > 0  # real pixels, not padding


def test_dicom_wsi_is_read_through_openslide() -> None:
    pytest.importorskip("openslide", reason="OpenSlide is in the dev extras")
    with open_slide(FIXTURES / "boxes_0.dcm") as reader:
        assert isinstance(reader, OpenSlideReader)
        assert reader.format == "dicom"
        assert reader.mpp == pytest.approx(0.499)
        assert reader.level_dimensions == ((16, 16),)
        assert reader.read_level(0, 0, 0, 16, 16).shape == (16, 16, 3)


def test_generic_tiff_pyramid_levels_and_no_scale() -> None:
    with open_slide(FIXTURES / "boxes.tiff") as reader:
        assert reader.level_dimensions == ((300, 250), (150, 125), (75, 62), (37, 31))
        assert reader.level_downsamples[1] == pytest.approx(2.0)
        assert reader.mpp is None  # 72 dpi: a screen's scale, not a microscope's


@pytest.mark.parametrize("name", ["unreadable.svs", "unopenable.tiff"])
def test_damaged_files_fail_with_one_line(name: str) -> None:
    with pytest.raises(IdcscanError) as info:
        with open_slide(FIXTURES / name) as reader:
            reader.read_level(0, 0, 0, 16, 16)
    message = str(info.value)
    assert name in message and "\n" not in message.strip()


def test_cohort_maps_what_it_can_and_lists_the_rest(tiny_bundle: Path, tmp_path: Path) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("small.svs", "unreadable.svs", "boxes.tiff"):
        shutil.copy(FIXTURES / name, slides / name)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["slide", str(tiny_bundle), str(slides), "--out", str(out)])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    said = re.sub(r"\s+", "", result.output)  # the console wraps long lines
    assert "2of3slidesfailed" in said
    assert "unreadable.svs" in said and "boxes.tiff" in said
    assert "recordsnoscale" in said and "--mpp" in said
    assert (out / "small" / "summary.json").is_file()  # the readable slide was mapped
    assert not (out / "boxes").exists() and not (out / "unreadable").exists()

    # with the scale given, the scale-less pyramid maps
    again = CliRunner().invoke(
        app, ["slide", str(tiny_bundle), str(slides / "boxes.tiff"), "--out", str(out),
              "--mpp", "2"],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert (out / "boxes" / "summary.json").is_file()

