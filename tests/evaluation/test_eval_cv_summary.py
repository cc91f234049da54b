"""cv.json's numbers on out-of-fold predictions with a known answer (no training)."""

from __future__ import annotations

import numpy as np
import pytest

from idcscan.evaluation.cv_summary import calibration_study, fit_rescale, summarize_folds


def _folds(p: np.ndarray, y: np.ndarray, k: int = 2) -> list[dict[str, np.ndarray]]:
    parts = np.array_split(np.arange(len(y)), k)
    return [{"row": idx, "patient": (idx // 50).astype(str), "label": y[idx],
             "probability": p[idx]} for idx in parts]


@pytest.fixture
def overconfident() -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z), predictions sigmoid(3 z): three times too confident."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 6000)
    y = (rng.random(6000) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return 1 / (1 + np.exp(-3 * z)), y


def test_a_temperature_fitted_out_of_fold_undoes_overconfidence(overconfident):
    p, y = overconfident
    assert fit_rescale(y, p) == pytest.approx(3.0, rel=0.05)
    records = [{"repeat": 0}, {"repeat": 0}]
    cal = calibration_study(_folds(p, y), records)
    assert cal["ece_crossfit_rescaled"] < 0.25 * cal["ece"]
    assert all(t == pytest.approx(3.0, rel=0.1) for t in cal["crossfit_temperature"]["per_fold"])


def test_pooled_metrics_call_each_fold_at_its_own_threshold(overconfident):
    p, y = overconfident
    tests = _folds(p, y)
    records = []
    for i, t in enumerate(tests):
        pred = t["probability"] >= (0.3 if i == 0 else 0.7)
        tp = int((pred & (t["label"] == 1)).sum())
        records.append({"fold": i, "repeat": 0, "threshold": 0.3 if i == 0 else 0.7,
                        "temperature": 1.0, "test": {"n_patients": 60, "n_patches": 3000,
                                                     "auc": 0.9, "tp": tp}})
    out = summarize_folds(records, tests, tests, n_boot=20)
    y_all = np.concatenate([t["label"] for t in tests])
    calls = np.concatenate([tests[0]["probability"] >= 0.3, tests[1]["probability"] >= 0.7])
    sens = (calls & (y_all == 1)).sum() / (y_all == 1).sum()
    assert out["pooled"]["sensitivity"] == pytest.approx(sens)
    assert out["mean"]["auc"] == pytest.approx(0.9) and out["sd"]["auc"] == pytest.approx(0.0)
    th = out["thresholds"]
    assert th["bundle"]["per_fold"] == [0.3, 0.7]
    assert th["crossfit"]["per_fold"][0] == pytest.approx(th["test_optimal"]["per_fold"][1])
