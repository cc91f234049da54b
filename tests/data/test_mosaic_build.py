"""`idcscan mosaic`: Kaggle patches back into one image with the ground-truth IDC mask."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from idcscan.cli import app
from idcscan.data.mosaic import build_mosaic, make_mosaic
from idcscan.errors import IdcscanError


def _write_patch(root: Path, pid: str, x: int, y: int, label: int, arr: np.ndarray) -> Path:
    folder = root / pid / str(label)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{pid}_idx5_x{x}_y{y}_class{label}.png"
    Image.fromarray(arr).save(path)
    return path


def _solid(value: int, h: int = 50, w: int = 50) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


def test_patches_land_at_their_coordinates_with_truth(tmp_path: Path) -> None:
    # a 3 x 2 grid with one hole (x151, y51 missing) and an edge crop 30 px wide at x201
    src = tmp_path / "kaggle"
    _write_patch(src, "123", 101, 1, 0, _solid(10))
    _write_patch(src, "123", 151, 1, 1, _solid(20))
    _write_patch(src, "123", 201, 1, 1, _solid(30, w=30))
    _write_patch(src, "123", 101, 51, 0, _solid(40))
    _write_patch(src, "123", 201, 51, 0, _solid(50, h=20, w=30))

    out = tmp_path / "mosaic"
    result = CliRunner().invoke(app, ["mosaic", str(src / "123"), "--out", str(out)])
    assert result.exit_code == 0, result.output

    # named after the patient: mosaics of several patients share a folder, and their maps a name
    assert sorted(p.name for p in out.iterdir()) == [
        "123.png", "123_mosaic.json", "123_truth.csv", "123_truth.png"]
    assert "idcscan slide BUNDLE" in result.output and "123.png" in result.output
    mosaic = np.asarray(Image.open(out / "123.png"))
    truth = np.asarray(Image.open(out / "123_truth.png"))
    assert mosaic.shape == (100, 130, 3)  # x 101..231, y 1..101
    assert truth.shape == (100, 130)
    assert (mosaic[0:50, 0:50] == 10).all()
    assert (mosaic[0:50, 50:100] == 20).all()
    assert (mosaic[0:50, 100:130] == 30).all()
    assert (mosaic[50:100, 0:50] == 40).all()
    assert (mosaic[50:100, 50:100] == 255).all()  # no patch there: white (glass)
    assert (mosaic[50:70, 100:130] == 50).all()
    assert (mosaic[70:100, 100:130] == 255).all()  # below the short edge crop
    assert (truth[0:50, 50:130] == 255).all()
    assert truth[0:50, 0:50].max() == 0 and truth[50:, :].max() == 0

    with open(out / "123_truth.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["x", "y", "label"]
        rows = [(int(r["x"]), int(r["y"]), int(r["label"])) for r in reader]
    assert sorted(rows) == sorted(
        [(0, 0, 0), (50, 0, 1), (100, 0, 1), (0, 50, 0), (100, 50, 0)]
    )
    meta = json.loads((out / "123_mosaic.json").read_text())
    assert meta["mpp"] == 4.0 and meta["origin"] == {"x": 101, "y": 1}
    # the scale is in the PNG, so `idcscan slide` needs no --mpp for it
    dpi = Image.open(out / "123.png").info["dpi"]
    assert 25_400 / dpi[0] == pytest.approx(4.0, rel=1e-3)


def test_synthetic_patient_round_trips(tmp_path: Path) -> None:
    """The generator's patches, tiled back, equal its canvas at every patch (edges included)."""
    from idcscan.data.synthetic import generate_dataset, render_patient

    summary = generate_dataset(tmp_path / "kaggle", patients=1, patches_per_patient=40, seed=3)
    pid = summary.patients[0]
    patient = render_patient(3, 0, 40)
    mosaic, paths = make_mosaic(tmp_path / "kaggle" / pid, tmp_path / "out")

    min_x, min_y = int(patient.x.min()), int(patient.y.min())
    assert mosaic.origin == (min_x, min_y)
    assert len(mosaic.patches) == len(patient.x)
    covered = np.zeros(mosaic.truth.shape, dtype=bool)
    for i in range(len(patient.x)):
        expected = patient.patch(i)
        h, w = expected.shape[:2]
        r, c = int(patient.y[i]) - min_y, int(patient.x[i]) - min_x
        assert np.array_equal(mosaic.image[r : r + h, c : c + w], expected)
        assert (mosaic.truth[r : r + h, c : c + w] == bool(patient.label[i])).all()
        covered[r : r + h, c : c + w] = True
    assert (mosaic.image[~covered] == 255).all()
    assert paths["image"].name == f"{pid}.png"
    with open(paths["truth_csv"], newline="") as fh:
        rows = {(int(r["x"]), int(r["y"])): int(r["label"]) for r in csv.DictReader(fh)}
    expected_rows = {
        (int(x) - min_x, int(y) - min_y): int(lab)
        for x, y, lab in zip(patient.x, patient.y, patient.label)
    }
    assert rows == expected_rows


def test_bad_layouts_are_refused_clearly(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IdcscanError, match="No Kaggle patches"):
        build_mosaic(empty)
    result = CliRunner().invoke(app, ["mosaic", str(empty), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2

    wrong = tmp_path / "wrong"
    _write_patch(wrong, "9", 1, 1, 1, _solid(0))
    moved = wrong / "9" / "0"
    moved.mkdir()
    (wrong / "9" / "1" / "9_idx5_x1_y1_class1.png").rename(moved / "9_idx5_x1_y1_class1.png")
    with pytest.raises(IdcscanError, match="class1 but lies in folder 0"):
        build_mosaic(wrong / "9")
