"""The numbers of cv.json: per-fold metrics, their mean and spread, pooled out-of-fold
metrics with patient-bootstrap intervals, and how thresholds (and a temperature) chosen on
many patients fare.

A single fold's bundle picks its threshold on ~30 inner-validation patients; how far that
choice moves between folds, and what a threshold chosen on far more patients (all folds'
inner-validation patients pooled, or the other folds' out-of-fold predictions) gives on
patients it never saw, is what ``thresholds`` reports.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from idcscan.errors import IdcscanError
from idcscan.evaluation.metrics import (
    binary_metrics,
    choose_threshold,
    expected_calibration_error,
    summarize,
)

#: Metrics reported per fold, as mean ± sd, and pooled (in report order).
CV_METRICS = ("auc", "balanced_accuracy", "f1", "sensitivity", "specificity", "accuracy",
              "pr_auc", "precision", "ece")


def _mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return None, None
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else None


def _spread(values: list[float]) -> dict[str, Any]:
    mean, sd = _mean_sd(values)
    return {"per_fold": [float(v) for v in values], "mean": mean, "sd": sd,
            "min": float(min(values)) if values else None,
            "max": float(max(values)) if values else None}


def _concat(parts: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
    return np.concatenate([p[key] for p in parts]) if parts else np.empty(0)


def _headline(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m.get(k) for k in (*CV_METRICS, "threshold", "n_patches")}


def _safe_threshold(labels: np.ndarray, probs: np.ndarray) -> float | None:
    try:
        return choose_threshold(labels, probs)
    except IdcscanError:  # one class only
        return None


def _review(record: dict[str, Any]) -> float:
    """The fold bundle's review threshold (folds written before the 50% call carry only one)."""
    return record.get("review_threshold", record["threshold"])


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def fit_rescale(labels: np.ndarray, probs: np.ndarray) -> float:
    """The T minimising the NLL of sigmoid(logit(p) / T): a second temperature on top of the
    folds' own, fitted on many patients' out-of-fold predictions (1: already calibrated)."""
    from scipy.optimize import minimize_scalar

    z, y = _logit(probs), np.asarray(labels, dtype=np.float64)

    def nll(log_t: float) -> float:
        q = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0, q) - y * q))

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def calibration_study(tests: list[dict[str, np.ndarray]], records: list[dict[str, Any]]
                      ) -> dict[str, Any]:
    """ECE of the out-of-fold P(IDC) as shipped, and after a temperature fitted on the other
    folds' out-of-fold predictions (cross-fitted: does calibration on many patients help?)."""
    y = np.concatenate([t["label"] for t in tests]).astype(np.int64)
    p = np.concatenate([t["probability"] for t in tests])
    crossfit, rescaled = [], []
    for i, (r, t) in enumerate(zip(records, tests)):
        others = [j for j, s in enumerate(records) if j != i and s["repeat"] == r["repeat"]]
        if not others:
            return {"ece": expected_calibration_error(y, p)}
        temp = fit_rescale(np.concatenate([tests[j]["label"] for j in others]),
                           np.concatenate([tests[j]["probability"] for j in others]))
        crossfit.append(temp)
        rescaled.append(1 / (1 + np.exp(-_logit(t["probability"]) / temp)))
    return {"ece": expected_calibration_error(y, p),
            "oof_temperature": fit_rescale(y, p),
            "crossfit_temperature": _spread(crossfit),
            "ece_crossfit_rescaled": expected_calibration_error(y, np.concatenate(rescaled)),
            "note": "a second temperature on logit(P) fitted on out-of-fold predictions; "
                    "crossfit: each fold rescaled with the one fitted on the other folds"}


def threshold_study(records: list[dict[str, Any]], tests: list[dict[str, np.ndarray]],
                    vals: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Thresholds (and temperatures) per fold and chosen on many patients, with their spread."""
    y, p = _concat(tests, "label").astype(np.int64), _concat(tests, "probability")
    out: dict[str, Any] = {
        "bundle": {**_spread([_review(r) for r in records]),
                   "oof": _headline(binary_metrics(y, p, np.concatenate(
                       [np.full(len(t["label"]), _review(r)) for r, t in zip(records, tests)]))),
                   "note": "each fold's bundle (review) threshold (its own inner-validation "
                           "patients)"},
        "temperature": _spread([r["temperature"] for r in records]),
    }
    own = [_safe_threshold(t["label"], t["probability"]) for t in tests]
    out["test_optimal"] = {**_spread([t for t in own if t is not None]),
                           "note": "max balanced accuracy on each fold's own test patients "
                                   "(in-sample; shows how much the best cut moves between "
                                   "patient groups)"}
    vy, vp = _concat(vals, "label").astype(np.int64), _concat(vals, "probability")
    pooled_val = _safe_threshold(vy, vp)
    if pooled_val is not None:
        out["pooled_validation"] = {
            "threshold": pooled_val,
            "n_patches": int(vy.size),
            "n_patients": int(np.unique(_concat(vals, "patient")).size),
            "oof": _headline(binary_metrics(y, p, pooled_val)),
            "note": "chosen on all folds' inner-validation predictions pooled, applied to "
                    "the out-of-fold predictions",
        }
    oof_t = _safe_threshold(y, p)
    if oof_t is not None:
        out["oof"] = {"threshold": oof_t, "oof": _headline(binary_metrics(y, p, oof_t)),
                      "note": "chosen on the out-of-fold predictions themselves (in-sample: "
                              "optimistic; the threshold to ship with a fold ensemble)"}
    # Cross-fitted: each fold is called at the threshold chosen on the other folds' OOF.
    cross, per_row = [], []
    for i, (r, t) in enumerate(zip(records, tests)):
        others = [j for j, s in enumerate(records) if j != i and s["repeat"] == r["repeat"]]
        if not others:
            break
        oy = np.concatenate([tests[j]["label"] for j in others]).astype(np.int64)
        op = np.concatenate([tests[j]["probability"] for j in others])
        th = _safe_threshold(oy, op)
        if th is None:
            break
        cross.append(th)
        per_row.append(np.full(len(t["label"]), th))
    if len(cross) == len(records) and records:
        out["crossfit"] = {**_spread(cross),
                           "oof": _headline(binary_metrics(y, p, np.concatenate(per_row))),
                           "note": "each fold called at the threshold chosen on the other "
                                   "folds' out-of-fold predictions (honest)"}
    return out


def summarize_folds(records: list[dict[str, Any]], tests: list[dict[str, np.ndarray]],
                    vals: list[dict[str, np.ndarray]], n_boot: int = 1000, seed: int = 0
                    ) -> dict[str, Any]:
    """``folds``, ``mean``, ``sd``, ``pooled`` (with ``ci95``) and ``thresholds``."""
    folds = []
    for r in records:
        t = r["test"]
        folds.append({"fold": r["fold"], "repeat": r["repeat"],
                      "n_patients": t["n_patients"], "n_patches": t["n_patches"],
                      **{k: t.get(k) for k in CV_METRICS},
                      "ci95": t.get("ci95"), "threshold": r["threshold"],
                      "review_threshold": _review(r),
                      "temperature": r["temperature"],
                      "val_auc": r.get("validation", {}).get("auc"),
                      "seconds": r.get("seconds")})
    mean, sd = {}, {}
    for k in CV_METRICS:
        mean[k], sd[k] = _mean_sd([f[k] for f in folds])
    result: dict[str, Any] = {"folds": folds, "mean": mean, "sd": sd, "pooled": None,
                              "thresholds": None, "calibration": None}
    if not records:
        return result
    y = _concat(tests, "label").astype(np.int64)
    p = _concat(tests, "probability")
    patients = _concat(tests, "patient")
    per_row = np.concatenate([np.full(len(t["label"]), r["threshold"])
                              for r, t in zip(records, tests)])
    pooled = summarize(y, p, patients, per_row, n_boot=n_boot, seed=seed)
    pooled["threshold"] = "each patch called as its fold was evaluated (P(IDC) >= 50%)"
    pooled["n_folds"] = len(records)
    result["pooled"] = pooled
    result["thresholds"] = threshold_study(records, tests, vals)
    result["calibration"] = calibration_study(tests, records)
    return result


def oof_estimate(csvs: list[Path], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Expected accuracy on new patients from out-of-fold predictions: each CSV (``row,
    patient, fold, label, probability``, as ``idcscan cv`` writes) is one member of a model,
    scored on patients its fold never saw; members are averaged by patch, as an ensemble
    graph averages P(IDC). Metrics at the 50% call with patient-bootstrap 95% intervals."""
    runs = []
    for path in csvs:
        with open(path, newline="") as fh:
            runs.append({(int(r["row"]), int(r["fold"])): r for r in csv.DictReader(fh)})
    keys = sorted(runs[0])
    if any(run.keys() != runs[0].keys() for run in runs[1:]):
        raise IdcscanError("The out-of-fold files did not score the same patches in the same "
                           "folds; an ensemble estimate needs one cross-validation plan.")
    labels = np.array([int(runs[0][k]["label"]) for k in keys])
    patients = np.array([runs[0][k]["patient"] for k in keys])
    probs = np.mean([[float(run[k]["probability"]) for k in keys] for run in runs], axis=0)
    result = summarize(labels, probs, patients, threshold=0.5, n_boot=n_boot, seed=seed)
    result["folds"] = int(len({k[1] for k in keys}))
    return result
