"""The examples that ship: a section with its scale, patches of both classes, provenance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from idcscan.data.examples import build_examples
from idcscan.data.mosaic import build_mosaic
from idcscan.slides.formats import open_slide


def test_the_section_opens_at_its_scale_and_the_patches_cover_both_classes(
        synthetic_kaggle: Path, tmp_path: Path) -> None:
    patient = sorted(p.name for p in synthetic_kaggle.iterdir())[0]
    info = build_examples(synthetic_kaggle, tmp_path / "ex", patient=patient, complete_min=1,
                          margin=0)  # synthetic regions are small
    assert json.loads((tmp_path / "ex" / "examples.json").read_text()) == info
    assert "CC0" in info["source"] and "training data" in info["note"]
    reader = open_slide(tmp_path / "ex" / info["slide"]["file"])
    mosaic = build_mosaic(synthetic_kaggle / patient)
    assert reader.mpp == 4.0 and reader.dimensions == mosaic.size
    side, levels = max(mosaic.size), 1
    while side > 512:  # a pyramid down to 512 px: the viewer never reads the whole image
        side, levels = side // 2, levels + 1
    assert reader.level_count == levels
    region = np.asarray(reader.read_region(0, 0, 0, mosaic.size[0], mosaic.size[1]))[..., :3]
    assert np.abs(region.astype(int) - mosaic.image.astype(int)).mean() < 6  # JPEG, not a copy
    labels = [p["label"] for p in info["patches"]]
    assert labels.count("IDC") == 3 and labels.count("non-IDC") == 3
    assert all(p["patient"] != patient for p in info["patches"])
    for p in info["patches"]:
        assert (tmp_path / "ex" / p["file"]).is_file()


def test_examples_come_from_inside_their_labelled_regions(synthetic_kaggle: Path) -> None:
    """Coarse outlines make labels least trustworthy at region edges: an example's whole
    neighbourhood carries its label."""
    from idcscan.data.examples import choose_patches
    from idcscan.data.kaggle import scan

    grid = {(f.patient, f.x, f.y): f.label for f in scan(synthetic_kaggle).files}
    chosen = choose_patches(synthetic_kaggle, exclude="", complete_min=1, margin=1)
    assert chosen
    for f in chosen:
        assert all(grid.get((f.patient, f.x + 50 * dx, f.y + 50 * dy)) == f.label
                   for dx in (-1, 0, 1) for dy in (-1, 0, 1))
