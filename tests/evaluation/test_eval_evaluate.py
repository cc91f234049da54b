"""End to end: `idcscan evaluate` on a real (tiny) ONNX bundle and a small packed dataset."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from idcscan import DISCLAIMER
from idcscan.cli import app
from idcscan.evaluation.evaluate import PATIENT_COLUMNS, PREDICTION_COLUMNS, evaluate
from idcscan.evaluation.metrics import SCALAR_METRICS
from idcscan.runtime.predictor import Predictor

METRIC_KEYS = {
    "auc", "pr_auc", "accuracy", "balanced_accuracy", "f1", "sensitivity", "specificity",
    "precision", "ece", "threshold", "n_patches", "n_patients", "confusion_matrix", "ci95",
}
PLOTS = ("roc.png", "pr.png", "confusion_matrix.png", "calibration.png")
runner = CliRunner()


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A packed dataset as `idcscan prepare` writes it: 12 patients, 4 per split."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("packed")
    rows, patches = [], []
    for k in range(12):
        split = ("train", "val", "test")[k % 3]
        for i in range(10):
            label = int(rng.random() < 0.4)
            base = np.array([150, 60, 160] if label else [235, 190, 215], dtype=float)
            patches.append(np.clip(base + rng.normal(0, 20, (50, 50, 3)), 0, 255))
            rows.append([len(rows), f"9{k:03d}", 50 * i, 50 * k, label, split])
    np.save(root / "patches.npy", np.stack(patches).astype(np.uint8))
    with open(root / "index.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["row", "patient", "x", "y", "label", "split"])
        writer.writerows(rows)
    (root / "prepare.json").write_text(json.dumps({"seed": 0, "source": "test fixture"}))
    return root


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def run_cli(*args: str):
    return runner.invoke(app, ["evaluate", *map(str, args)])


def test_cli_writes_full_report(tiny_bundle: Path, packed: Path, tmp_path: Path):
    out = tmp_path / "report"
    result = run_cli(tiny_bundle, packed, "--out", out, "--n-boot", "200", "--batch-size", "7")
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())
    assert DISCLAIMER in printed
    assert f"Report: {out / 'report.md'}" in result.output and "ROC AUC" in printed

    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["n_patches"] == 40 and metrics["n_patients"] == 4
    assert metrics["split"] == "test" and metrics["tta"] is False
    # Which engine scored is on record, in the file and in the report a person reads.
    engine = Predictor(tiny_bundle).engine.info
    assert metrics["runtime"] == engine.as_dict()
    report = (out / "report.md").read_text()
    assert f"| Scored by | {engine.engine} ({engine.precision}) |" in report
    # Measured at the call every output makes (P(IDC) >= 50%); the review flag on its own.
    assert metrics["threshold"] == 0.5
    assert metrics["review"]["threshold"] == Predictor(tiny_bundle).threshold
    assert sum(map(sum, metrics["review"]["confusion_matrix"])) == 40
    assert set(metrics["ci95"]) == set(SCALAR_METRICS)
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    assert tn + fp + fn + tp == 40

    columns, predictions = read_csv(out / "predictions.csv")
    assert columns == PREDICTION_COLUMNS
    assert len(predictions) == 40
    assert {r["patient"] for r in predictions} == {"9002", "9005", "9008", "9011"}
    # The same path serving uses: identical probabilities from the Predictor directly.
    rows = np.array([int(r["row"]) for r in predictions])
    direct = Predictor(tiny_bundle).predict_proba(np.load(packed / "patches.npy")[rows])
    assert np.allclose([float(r["probability"]) for r in predictions], direct, atol=1e-5)
    labels = np.array([int(r["label"]) for r in predictions])
    assert tp + fn == labels.sum()

    columns, patients = read_csv(out / "patients.csv")
    assert columns == PATIENT_COLUMNS
    assert sum(int(r["n_patches"]) for r in patients) == 40

    for name in PLOTS:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 200
    assert DISCLAIMER in report.split("## Model")[0]  # at the top
    assert "tf_efficientnet_lite0" in report and "Balanced accuracy" in report
    for name in PLOTS:
        assert f"({name})" in report
    assert not list(tmp_path.glob(".report*"))  # no temporary leftovers


def test_tta_changes_nothing_structurally(tiny_bundle: Path, packed: Path, tmp_path: Path):
    plain = evaluate(tiny_bundle, packed, out=tmp_path / "a", n_boot=50, progress=False)
    result = run_cli(tiny_bundle, packed, "--out", tmp_path / "b", "--tta", "--n-boot", "50")
    assert result.exit_code == 0, result.output
    tta = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert tta["tta"] is True and set(tta) == set(plain)
    assert tta["n_patches"] == plain["n_patches"]
    cols_a, rows_a = read_csv(tmp_path / "a" / "predictions.csv")
    cols_b, rows_b = read_csv(tmp_path / "b" / "predictions.csv")
    assert cols_a == cols_b and len(rows_a) == len(rows_b)
    assert [r["row"] for r in rows_a] == [r["row"] for r in rows_b]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(
        p.name for p in (tmp_path / "b").iterdir()
    )


def test_other_split_and_library_without_output(tiny_bundle: Path, packed: Path):
    result = evaluate(tiny_bundle, packed, split="val", out=None, n_boot=20, progress=False)
    assert result["split"] == "val" and result["n_patches"] == 40
    assert METRIC_KEYS <= set(result)


def test_missing_bundle_exits_2(packed: Path, tmp_path: Path):
    result = run_cli(tmp_path / "nope", packed, "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert "No model bundle" in result.output
    assert not (tmp_path / "r").exists()


def test_bad_split_exits_2(tiny_bundle: Path, packed: Path, tmp_path: Path):
    result = run_cli(tiny_bundle, packed, "--out", tmp_path / "r", "--split", "holdout")
    assert result.exit_code == 2
    assert "Unknown split" in result.output


def test_missing_data_exits_2(tiny_bundle: Path, tmp_path: Path):
    result = run_cli(tiny_bundle, tmp_path, "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert "idcscan prepare" in result.output


def test_refuses_to_replace_a_foreign_directory(tiny_bundle: Path, packed: Path, tmp_path: Path):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("keep me")
    result = run_cli(tiny_bundle, packed, "--out", precious)
    assert result.exit_code == 2
    assert (precious / "thesis.tex").read_text() == "keep me"


def test_rerun_replaces_an_earlier_report(tiny_bundle: Path, packed: Path, tmp_path: Path):
    out = tmp_path / "report"
    evaluate(tiny_bundle, packed, out=out, n_boot=20, progress=False)
    (out / "stale.txt").write_text("from an older run")
    evaluate(tiny_bundle, packed, out=out, n_boot=20, progress=False)
    assert not (out / "stale.txt").exists() and (out / "metrics.json").is_file()


def test_evaluation_never_imports_torch():
    code = (
        "import sys, idcscan.evaluation.evaluate, idcscan.cli.evaluate; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_evaluates_what_prepare_writes(tiny_bundle: Path, prepared_data: Path, tmp_path: Path):
    _, index = read_csv(prepared_data / "index.csv")
    test_rows = [r for r in index if r["split"] == "test"]
    result = evaluate(tiny_bundle, prepared_data, out=tmp_path / "r", n_boot=50, progress=False)
    assert result["n_patches"] == len(test_rows)
    assert result["n_patients"] == len({r["patient"] for r in test_rows})
    _, predictions = read_csv(tmp_path / "r" / "predictions.csv")
    assert [r["row"] for r in predictions] == [r["row"] for r in test_rows]
