"""Paired comparison of two CV runs: known answers for equal, better and mismatched recipes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from idcscan.errors import IdcscanError
from idcscan.evaluation.cv_compare import compare_cv, paired_bootstrap, verdict
from idcscan.evaluation.metrics import binary_metrics


def _patients(n_patients: int = 40, per: int = 60, seed: int = 0):
    """Labels with a per-patient IDC share and a noisy score: a recipe of moderate skill."""
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"p{i}" for i in range(n_patients)], per)
    share = np.repeat(rng.uniform(0.1, 0.6, n_patients), per)
    y = (rng.random(patients.size) < share).astype(np.int64)
    noisy = 1 / (1 + np.exp(-(2.0 * (y - 0.5) + rng.normal(0, 1.5, y.size))))
    return patients, y, noisy, rng


def test_identical_recipes_differ_by_exactly_zero():
    patients, y, p, _ = _patients()
    out = paired_bootstrap(y, p, p.copy(), patients, 0.5, 0.5, n_boot=200)
    for m in ("auc", "balanced_accuracy", "f1"):
        assert out[m]["difference"] == 0 and out[m]["ci95"] == [0.0, 0.0]
    assert out["auc"]["a"] == pytest.approx(binary_metrics(y, p, 0.5)["auc"])
    assert verdict({"pooled": out}).startswith("No difference")


def test_a_clearly_better_recipe_clears_zero_and_a_worse_one_falls_below():
    patients, y, p, rng = _patients()
    better = 1 / (1 + np.exp(-(4.0 * (y - 0.5) + rng.normal(0, 1.0, y.size))))
    ahead = paired_bootstrap(y, p, better, patients, 0.5, 0.5, n_boot=300)
    assert ahead["auc"]["difference"] > 0 and ahead["auc"]["ci95"][0] > 0
    assert ahead["auc"]["share_b_ahead"] == 1.0
    assert verdict({"pooled": ahead}).startswith("B is ahead")
    behind = paired_bootstrap(y, better, p, patients, 0.5, 0.5, n_boot=300)
    assert behind["auc"]["ci95"][1] < 0
    assert verdict({"pooled": behind}, "balanced_accuracy").startswith("B is behind")


def test_pairing_is_narrower_than_two_separate_intervals():
    """A small, consistent gain is hidden by patient-to-patient spread unless paired."""
    patients, y, p, rng = _patients(seed=3)
    slightly = np.clip(p + 0.03 * (y - 0.5) + rng.normal(0, 0.005, y.size), 0, 1)
    out = paired_bootstrap(y, p, slightly, patients, 0.5, 0.5, n_boot=400)
    width = out["auc"]["ci95"][1] - out["auc"]["ci95"][0]
    from idcscan.evaluation.metrics import patient_bootstrap_ci

    alone = patient_bootstrap_ci(y, p, patients, 0.5, n_boot=400)["auc"]
    assert width < 0.25 * (alone[1] - alone[0])
    assert out["auc"]["ci95"][0] > 0


def _write_cv(folder: Path, rows: list[tuple[int, str, int, int, float]],
              thresholds: dict[int, float]) -> Path:
    folder.mkdir()
    with open(folder / "oof_predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "patient", "fold", "label", "probability"])
        w.writerows([(r, pat, f, y, p) for r, pat, f, y, p in rows])
    folds = []
    for f, thr in thresholds.items():
        sel = [r for r in rows if r[2] == f]
        m = binary_metrics([r[3] for r in sel], [r[4] for r in sel], thr)
        folds.append({"fold": f, "auc": m["auc"], "balanced_accuracy": m["balanced_accuracy"],
                      "threshold": thr})
    (folder / "cv.json").write_text(json.dumps({"folds": folds}))
    return folder


def test_compare_cv_pairs_by_row_and_fold_and_refuses_other_folds(tmp_path):
    patients, y, p, rng = _patients(n_patients=20, per=30)
    fold = np.array([int(pat[1:]) % 2 for pat in patients])
    better = np.clip(p + 0.2 * (y - 0.5), 0, 1)
    a = [(i, patients[i], int(fold[i]), int(y[i]), float(p[i])) for i in range(y.size)]
    b = [(i, patients[i], int(fold[i]), int(y[i]), float(better[i])) for i in range(y.size)]
    cv_a = _write_cv(tmp_path / "a", a, {0: 0.5, 1: 0.5})
    cv_b = _write_cv(tmp_path / "b", b[::-1], {0: 0.5, 1: 0.5})  # row order must not matter
    result = compare_cv(cv_a, cv_b, n_boot=200)
    assert result["n_patients"] == 20 and result["n_patches"] == y.size
    assert result["per_fold"]["auc"]["folds_b_ahead"] == 2
    assert [f["fold"] for f in result["folds"]] == [0, 1]
    assert result["pooled"]["auc"]["b"] == pytest.approx(binary_metrics(y, better, 0.5)["auc"])
    assert result["pooled"]["auc"]["ci95"][0] > 0
    other = [(i, pat, 1 - f, lab, q) for i, pat, f, lab, q in b]
    cv_c = _write_cv(tmp_path / "c", other, {0: 0.5, 1: 0.5})
    with pytest.raises(IdcscanError, match="same folds"):
        compare_cv(cv_a, cv_c)
    with pytest.raises(IdcscanError, match="not found"):
        compare_cv(cv_a, tmp_path / "missing")
