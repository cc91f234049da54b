"""`--stain-norm macenko`: stains estimated per patient in training and evaluate, per slide in
slide mode, per --stain-group in predict and per image in serve; all through the predictor."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from idcscan.cli import app
from idcscan.data.packed import load_packed
from idcscan.runtime.bundle import load_bundle
from idcscan.images import decode_rgb
from idcscan.preprocessing import to_patch
from idcscan.runtime.predictor import Predictor

pytestmark = pytest.mark.slow  # a real (tiny) training run

OPTIONS = ["--backbone", "test_efficientnet", "--weights", "none", "--input-size", "32",
           "--batch-size", "16", "--finetune-epochs", "1", "--no-tta", "--stain-norm", "macenko",
           "--no-progress"]


@pytest.fixture(scope="module")
def run(prepared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("macenko") / "run"
    result = CliRunner().invoke(app, ["train", str(prepared_data), "--out", str(out), *OPTIONS])
    assert result.exit_code == 0, result.output
    return out


def test_the_card_records_per_group_macenko_and_the_graph_takes_only_images(run: Path):
    cfg = json.loads((run / "config.json").read_text())["config"]
    card = load_bundle(run / "bundle").card
    assert cfg["stain_norm"] == "macenko"
    assert card.preprocessing["stain_norm"] == cfg["stain_target"]
    assert card.preprocessing["stain_norm"]["method"] == "macenko"
    graph = onnx.load(str(run / "bundle" / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["image"]
    assert Predictor(run / "bundle").group_norm is not None


def test_evaluate_scores_each_patient_with_its_own_stains(
    run: Path, prepared_data: Path, tmp_path: Path
):
    report = tmp_path / "report"
    result = CliRunner().invoke(app, ["evaluate", str(run / "bundle"), str(prepared_data),
                                      "--split", "test", "--out", str(report)])
    assert result.exit_code == 0, result.output
    with open(report / "predictions.csv", newline="") as fh:
        got = {int(r["row"]): float(r["probability"]) for r in csv.DictReader(fh)}
    test = load_packed(prepared_data).subset("test")
    predictor = Predictor(run / "bundle")
    for patient in np.unique(test.patient):
        pos = np.flatnonzero(test.patient == patient)
        images = test.images(pos)
        expected = predictor.predict_proba(images, group=predictor.stain_group(images))
        np.testing.assert_allclose([got[int(r)] for r in test.rows[pos]], expected, atol=1e-6)


def test_predict_groups_as_asked(run: Path, synthetic_kaggle: Path, tmp_path: Path):
    patient = sorted(p for p in synthetic_kaggle.iterdir() if p.is_dir())[0]
    paths = sorted(patient.rglob("*.png"))
    images = np.stack([to_patch(decode_rgb(p), 50) for p in paths])  # as predict reads them
    predictor = Predictor(run / "bundle")
    rows = {}
    for how in ("all", "image"):
        out = tmp_path / f"{how}.json"
        result = CliRunner().invoke(app, ["predict", str(run / "bundle"), str(patient),
                                          "--stain-group", how, "--out", str(out)])
        assert result.exit_code == 0, result.output
        doc = json.loads(out.read_text())
        assert doc["stain_normalisation"] == {"method": "macenko", "group": how}
        rows[how] = {Path(r["path"]).name: r["probability_positive"] for r in doc["predictions"]}
    whole = predictor.predict_proba(images, group=predictor.stain_group(images))
    each = predictor.predict_proba(images)  # no group: every image alone
    np.testing.assert_allclose([rows["all"][p.name] for p in paths], whole, atol=1e-6)
    np.testing.assert_allclose([rows["image"][p.name] for p in paths], each, atol=1e-6)
    assert not np.allclose(whole, each, atol=1e-4)
    bad = CliRunner().invoke(app, ["predict", str(run / "bundle"), str(patient),
                                   "--stain-group", "patient"])
    assert bad.exit_code != 0 and "--stain-group must be one of" in bad.output


def test_slide_mode_estimates_the_slides_stains_once(run: Path, tmp_path: Path):
    from idcscan.data.synthetic_slide import write_synthetic_wsi

    slide = write_synthetic_wsi(tmp_path / "s.tif", 1500, 1200, mpp=4.0, min_level_side=400)
    out = tmp_path / "maps"
    result = CliRunner().invoke(app, ["slide", str(run / "bundle"), str(slide), "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "s" / "summary.json").read_text())
    stain = summary["stain"]
    assert stain["method"] == "macenko" and stain["per"] == "slide"
    assert stain["estimated"] is True and 0 < stain["tiles"] <= summary["n_tiles"] + 256
    assert np.asarray(stain["he"]).shape == (3, 2)


def test_serve_normalises_a_lone_upload_on_its_own(run: Path, synthetic_kaggle: Path):
    from idcscan.server.app import create_app

    path = sorted(synthetic_kaggle.rglob("*.png"))[0]
    patch = to_patch(decode_rgb(path), 50)[None]
    expected = float(Predictor(run / "bundle").predict_proba(patch)[0])
    with TestClient(create_app(run / "bundle")) as client:
        r = client.post("/predict", files={"file": (path.name, path.read_bytes(), "image/png")})
    assert r.status_code == 200
    assert r.json()["probability_positive"] == pytest.approx(100 * expected, abs=0.006)  # 2 dp
