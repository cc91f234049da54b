"""`idcscan cv`: every patient scored once by a model that never saw it, resumable fold by
fold, with cv.json, the out-of-fold file, the plot and the report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from idcscan.cli import app
from idcscan.data.packed import load_packed

pytestmark = pytest.mark.slow  # trains one tiny model per fold

ARGS = ["--folds", "2", "--backbone", "test_efficientnet", "--weights", "none",
        "--input-size", "32", "--batch-size", "16", "--frozen-epochs", "0.5",
        "--finetune-epochs", "0.5", "--n-boot", "50", "--no-progress"]


def _cv(data: Path, out: Path, *extra: str):
    result = CliRunner().invoke(app, ["cv", str(data), "--out", str(out), *ARGS, *extra])
    return result


@pytest.fixture(scope="module")
def cv_dir(prepared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Fold 0 only (--max-folds 1), then a second invocation that finishes the CV."""
    out = tmp_path_factory.mktemp("cv") / "cv"
    first = _cv(prepared_data, out, "--max-folds", "1")
    assert first.exit_code == 0, first.output
    state = {
        "out": out,
        "first_json": json.loads((out / "cv.json").read_text()),
        "fold0_metrics": (out / "fold-0" / "metrics.json").read_bytes(),
        "fold0_onnx": (out / "fold-0" / "run" / "bundle" / "model.onnx").stat().st_mtime_ns,
        "fold1_after_first": (out / "fold-1").exists(),
    }
    second = _cv(prepared_data, out)
    assert second.exit_code == 0, second.output
    state["output"] = second.output
    return state


def test_fold_limit_stops_and_a_rerun_finishes_without_redoing_a_fold(cv_dir):
    first = cv_dir["first_json"]
    assert first["complete"] is False and first["folds_done"] == 1
    assert not cv_dir["fold1_after_first"]
    out = cv_dir["out"]
    # Fold 0 was neither retrained nor rescored by the second run.
    assert (out / "fold-0" / "metrics.json").read_bytes() == cv_dir["fold0_metrics"]
    assert (out / "fold-0" / "run" / "bundle" / "model.onnx").stat().st_mtime_ns == \
        cv_dir["fold0_onnx"]
    done = json.loads((out / "cv.json").read_text())
    assert done["complete"] is True and done["folds_done"] == 2


def test_oof_file_scores_every_patch_once_with_the_model_that_did_not_see_it(cv_dir,
                                                                             prepared_data):
    out = cv_dir["out"]
    with open(out / "oof_predictions.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["row", "patient", "fold", "label", "probability"]
        rows = list(reader)
    data = load_packed(prepared_data)
    assert sorted(int(r["row"]) for r in rows) == sorted(data.rows.tolist())
    label = dict(zip(data.rows.tolist(), data.label.tolist()))
    assert all(int(r["label"]) == label[int(r["row"])] for r in rows)
    plan = json.loads((out / "folds.json").read_text())
    for r in rows:
        fold = plan[int(r["fold"])]
        assert r["patient"] in fold["test"]
        assert r["patient"] not in fold["train"] + fold["val"]
    # The fold's bundle was trained on its train patients only (the card says so).
    for f in plan:
        card = json.loads((out / f"fold-{f['index']}" / "run" / "bundle" / "model.json")
                          .read_text())
        assert card["data"]["patients_per_split"] == {"train": len(f["train"]),
                                                      "val": len(f["val"]),
                                                      "test": len(f["test"])}


def test_cv_json_has_folds_mean_sd_and_pooled_with_ci(cv_dir):
    out = cv_dir["out"]
    cv = json.loads((out / "cv.json").read_text())
    assert [f["fold"] for f in cv["folds"]] == [0, 1]
    assert f"Scored by: {', '.join(cv['engines'])}." in (out / "cv.md").read_text()
    for key in ("auc", "balanced_accuracy", "f1"):
        values = [f[key] for f in cv["folds"]]
        assert cv["mean"][key] == pytest.approx(np.mean(values))
        assert cv["sd"][key] == pytest.approx(np.std(values, ddof=1))
        low, high = cv["pooled"]["ci95"][key]
        assert low <= cv["pooled"][key] <= high
    # Per-fold figures are exactly the fold's own evaluate report, and the engine is named.
    engines = set()
    for f in cv["folds"]:
        report = json.loads((out / f"fold-{f['fold']}" / "test" / "metrics.json").read_text())
        engines.add(f"{report['runtime']['engine']} {report['runtime']['precision']}")
        assert f["auc"] == report["auc"] and f["threshold"] == report["threshold"] == 0.5
        card = json.loads((out / f"fold-{f['fold']}" / "run" / "bundle" / "model.json")
                          .read_text())
        assert f["review_threshold"] == card["threshold"]
    assert cv["engines"] == sorted(engines) and len(engines) == 1
    assert cv["pooled"]["n_patients"] == 12
    th = cv["thresholds"]
    assert len(th["bundle"]["per_fold"]) == 2 and "crossfit" in th
    assert 0 < th["pooled_validation"]["threshold"] < 1
    cal = cv["calibration"]
    assert cal["oof_temperature"] > 0 and len(cal["crossfit_temperature"]["per_fold"]) == 2
    assert cal["ece"] == pytest.approx(cv["pooled"]["ece"])
    assert (out / "cv.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "cv.md").read_text()
    assert "Research use only" in report and "| 1 |" in report


def test_a_rerun_with_another_recipe_is_refused(cv_dir, prepared_data):
    result = _cv(prepared_data, cv_dir["out"], "--label-smoothing", "0.2")
    assert result.exit_code == 2 and "other settings" in " ".join(result.output.split())


def test_fold_seed_keeps_the_folds_while_the_training_seed_changes(cv_dir, prepared_data,
                                                                     tmp_path):
    """--fold-seed fixes the patients of each fold, so two training seeds pair fold by fold."""
    plan = json.loads((cv_dir["out"] / "folds.json").read_text())  # made with --seed 0
    same = _cv(prepared_data, tmp_path / "same", "--seed", "1", "--fold-seed", "0",
               "--max-folds", "0")
    assert same.exit_code == 0, same.output
    assert json.loads((tmp_path / "same" / "folds.json").read_text()) == plan
    config = json.loads((tmp_path / "same" / "cv_config.json").read_text())["cv"]
    assert config["seed"] == 0 and config["recipe"]["seed"] == 1
    assert "fold seed 0, training seed 1" in (tmp_path / "same" / "cv.md").read_text()
    other = _cv(prepared_data, tmp_path / "other", "--seed", "1", "--max-folds", "0")
    assert other.exit_code == 0, other.output
    assert json.loads((tmp_path / "other" / "folds.json").read_text()) != plan


def test_export_ensemble_averages_the_folds_in_one_graph(cv_dir, prepared_data, tmp_path):
    from idcscan.evaluation.evaluate import evaluate
    from idcscan.runtime.bundle import load_bundle
    from idcscan.runtime.predictor import Predictor

    out = cv_dir["out"]
    result = _cv(prepared_data, out, "--export-ensemble")  # all folds done: no training
    assert result.exit_code == 0, result.output
    card = load_bundle(out / "ensemble").card
    cv = json.loads((out / "cv.json").read_text())
    assert card.threshold == cv["thresholds"]["oof"]["threshold"]
    assert card.calibration.temperature == 1.0
    members = card.model_extra["ensemble"]["members"]
    assert [Path(m["path"]) for m in members] == [
        (out / f"fold-{i}" / "run" / "bundle").resolve() for i in range(2)]
    patches = load_packed(prepared_data).images(slice(0, 64))
    mean = np.mean([Predictor(m["path"]).predict_proba(patches) for m in members], axis=0)
    ens = Predictor(out / "ensemble")
    np.testing.assert_allclose(ens.predict_proba(patches), mean, atol=1e-5)
    _, cams = ens.predict_with_cam(patches[:4])
    assert cams.shape[0] == 4 and (cams >= 0).all()
    summary = evaluate(out / "ensemble", prepared_data, split="test", n_boot=20,
                       progress=False, out=tmp_path / "report")
    assert 0 <= summary["auc"] <= 1 and (tmp_path / "report" / "metrics.json").is_file()


def test_an_interrupted_fold_resumes_or_is_rescored(cv_dir, prepared_data):
    """A fold killed during training resumes from its last checkpoint; one killed while
    being scored keeps its bundle and is only scored again."""
    import shutil

    out = cv_dir["out"]  # in place (the last test of the module): a moved run would not
    before = json.loads((out / "cv.json").read_text())  # find its checkpoints' scores
    # Fold 1: killed before export -> checkpoints and config.json, no bundle.
    (out / "fold-1" / "metrics.json").unlink()
    shutil.rmtree(out / "fold-1" / "run" / "bundle")
    # Fold 0: killed while scoring -> bundle there, no metrics.json.
    (out / "fold-0" / "metrics.json").unlink()
    onnx0 = (out / "fold-0" / "run" / "bundle" / "model.onnx").stat().st_mtime_ns
    result = _cv(prepared_data, out)
    assert result.exit_code == 0, result.output
    assert (out / "fold-0" / "run" / "bundle" / "model.onnx").stat().st_mtime_ns == onnx0
    saved = json.loads((out / "fold-1" / "run" / "config.json").read_text())
    assert saved["config"]["resume"] is True  # continued from the checkpoint, not restarted
    again = json.loads((out / "cv.json").read_text())
    assert again["complete"]
    for f_again, f_before in zip(again["folds"], before["folds"]):
        assert f_again["auc"] == pytest.approx(f_before["auc"], abs=1e-6)
