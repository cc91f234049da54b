"""Two recipes cross-validated on the same folds: is B's difference larger than patient luck?

Fold means ± sd of two recipes overlap for most recipe changes, because the folds differ from
each other more than the recipes do (AUC 0.91-0.97 across folds of one recipe). Both recipes
scored the very same patients, though, so the honest test is paired: each bootstrap replicate
draws one resample of patients and scores *both* recipes on it, and the interval is the
interval of the difference itself (the idea of DeLong's paired AUC test, without its normal
approximation, and with patients, not patches, as the unit that is resampled).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from idcscan.errors import IdcscanError
from idcscan.evaluation.metrics import _CHUNK_ELEMENTS, DEFAULT_ECE_BINS, _replicate_metrics, \
    _unit_stats, binary_metrics

#: What a comparison reports, in this order.
COMPARED = ("auc", "balanced_accuracy", "f1", "sensitivity", "specificity", "ece")


def paired_bootstrap(labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray,
                     patients: np.ndarray, threshold_a: np.ndarray | float,
                     threshold_b: np.ndarray | float, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, dict[str, Any]]:
    """Per metric: A, B, B - A on all patches, the percentile interval of B - A over patient
    resamples shared by both, and the share of resamples in which B is ahead."""
    y = np.asarray(labels).astype(np.int64).ravel()
    pa, pb = np.asarray(probs_a, float).ravel(), np.asarray(probs_b, float).ravel()
    if not (y.size == pa.size == pb.size == np.asarray(patients).size) or y.size == 0:
        raise IdcscanError("Both recipes need a probability for every patch, and patches for "
                           "both classes.")
    _, unit = np.unique(np.asarray(patients).ravel(), return_inverse=True)
    unit = unit.ravel()
    n_units = int(unit.max()) + 1
    stats_a = _unit_stats(y, pa, unit, n_units, threshold_a, DEFAULT_ECE_BINS)
    stats_b = _unit_stats(y, pb, unit, n_units, threshold_b, DEFAULT_ECE_BINS)
    point_a = binary_metrics(y, pa, threshold_a)
    point_b = binary_metrics(y, pb, threshold_b)
    rng = np.random.default_rng(seed)
    widest = max(stats_a.n_groups, stats_b.n_groups, n_units, 1)
    chunk = max(1, min(n_boot, _CHUNK_ELEMENTS // widest))
    diffs: dict[str, list[np.ndarray]] = {k: [] for k in COMPARED}
    uniform = np.full(n_units, 1.0 / n_units)
    for start in range(0, n_boot, chunk):
        weights = rng.multinomial(n_units, uniform, size=min(chunk, n_boot - start))
        weights = weights.astype(np.float64)
        ra, rb = _replicate_metrics(weights, stats_a), _replicate_metrics(weights, stats_b)
        for key in COMPARED:
            diffs[key].append(rb[key] - ra[key])
    tail = (1 - level) / 2 * 100
    out: dict[str, dict[str, Any]] = {}
    for key in COMPARED:
        d = np.concatenate(diffs[key])
        d = d[np.isfinite(d)]
        a, b = point_a.get(key), point_b.get(key)
        low, high = (np.percentile(d, [tail, 100 - tail]) if d.size else (np.nan, np.nan))
        out[key] = {"a": a, "b": b,
                    "difference": None if a is None or b is None else float(b - a),
                    "ci95": [float(low), float(high)] if d.size else [None, None],
                    # ECE: lower is better, so "B ahead" means a smaller error.
                    "share_b_ahead": float(np.mean(d < 0 if key == "ece" else d > 0))
                    if d.size else None}
    return out


def _oof(cv_dir: Path) -> tuple[dict[tuple[int, int], tuple[str, int, float]], dict]:
    summary_path, oof_path = cv_dir / "cv.json", cv_dir / "oof_predictions.csv"
    for path in (summary_path, oof_path):
        if not path.is_file():
            raise IdcscanError(f"{path} not found: compare finished `idcscan cv` folders.")
    summary = json.loads(summary_path.read_text())
    with open(oof_path, newline="") as fh:
        rows = {(int(r["row"]), int(r["fold"])): (r["patient"], int(r["label"]),
                                                   float(r["probability"]))
                for r in csv.DictReader(fh)}
    return rows, summary


def compare_cv(dir_a: str | Path, dir_b: str | Path, n_boot: int = 2000, seed: int = 0
               ) -> dict[str, Any]:
    """``folds`` (each fold's metrics for A and B), ``per_fold`` (mean and sd of B - A over
    folds, folds won by B) and ``pooled`` (:func:`paired_bootstrap` of the out-of-fold
    predictions, each patch called at its own fold's threshold)."""
    rows_a, cv_a = _oof(Path(dir_a))
    rows_b, cv_b = _oof(Path(dir_b))
    if rows_a.keys() != rows_b.keys():
        raise IdcscanError("The two CV runs did not test the same patches in the same folds "
                           "(different data, --folds, --repeats or --seed): a paired "
                           "comparison needs the same folds.")
    keys = sorted(rows_a)
    folds_a = {f["fold"]: f for f in cv_a["folds"]}
    folds_b = {f["fold"]: f for f in cv_b["folds"]}
    patients = np.array([rows_a[k][0] for k in keys])
    labels = np.array([rows_a[k][1] for k in keys])
    pa = np.array([rows_a[k][2] for k in keys])
    pb = np.array([rows_b[k][2] for k in keys])
    ta = np.array([folds_a[k[1]]["threshold"] for k in keys], dtype=float)
    tb = np.array([folds_b[k[1]]["threshold"] for k in keys], dtype=float)
    folds = [{"fold": f, **{f"{m}_{side}": src[f].get(m) for m in ("auc", "balanced_accuracy")
                             for side, src in (("a", folds_a), ("b", folds_b))}}
             for f in sorted(folds_a)]
    per_fold: dict[str, Any] = {}
    for m in ("auc", "balanced_accuracy"):
        d = np.array([r[f"{m}_b"] - r[f"{m}_a"] for r in folds], dtype=float)
        per_fold[m] = {"mean_difference": float(d.mean()),
                       "sd_difference": float(d.std(ddof=1)) if d.size > 1 else None,
                       "folds_b_ahead": int((d > 0).sum()), "folds": int(d.size)}
    return {"a": str(dir_a), "b": str(dir_b), "folds": folds, "per_fold": per_fold,
            "pooled": paired_bootstrap(labels, pa, pb, patients, ta, tb, n_boot=n_boot,
                                       seed=seed),
            "n_patients": int(np.unique(patients).size), "n_patches": len(keys),
            "n_boot": n_boot}


def verdict(result: dict[str, Any], metric: str = "auc") -> str:
    """One plain sentence on where B lands against A."""
    p = result["pooled"][metric]
    low, high = p["ci95"]
    name = {"auc": "AUC", "balanced_accuracy": "balanced accuracy"}.get(metric, metric)
    if low is None:
        return f"{name}: undefined on these patches."
    span = f"{p['difference']:+.4f} (95% CI {low:+.4f} to {high:+.4f})"
    if low > 0:
        return f"B is ahead on pooled {name}: {span}, an interval above zero."
    if high < 0:
        return f"B is behind on pooled {name}: {span}, an interval below zero."
    return f"No difference in pooled {name} beyond patient luck: {span} includes zero."
