"""Patch-level metrics, threshold choice, calibration error and bootstrap confidence intervals.

Patches from one patient are strongly correlated (same tissue, same stain, same scanner), so
a test set of 4,000 patches from 30 patients holds far less information than 4,000 independent
samples. The honest interval therefore resamples *patients* (all of a patient's patches travel
together); :func:`patch_bootstrap_ci` resamples patches and exists to show how much narrower,
and how over-confident, the naive interval is.

Everything here is numpy in, plain Python out (floats, ints, lists, ``None`` where a metric is
undefined, e.g. AUC when only one class is present), so results drop straight into JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score, roc_curve

from idcscan.errors import IdcscanError

#: Metrics that are a single number per evaluation and get a confidence interval.
SCALAR_METRICS: tuple[str, ...] = (
    "auc",
    "pr_auc",
    "accuracy",
    "balanced_accuracy",
    "f1",
    "sensitivity",
    "specificity",
    "precision",
    "ece",
)

DEFAULT_ECE_BINS = 15
# Upper bound on floats held per bootstrap chunk matrix (chunk x groups); ~8 MB each.
_CHUNK_ELEMENTS = 1_000_000


def _as_inputs(labels: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and flatten labels (0/1) and probabilities (finite, in [0, 1])."""
    y = np.asarray(labels).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise IdcscanError(f"Got {y.size} labels but {p.size} probabilities; they must match.")
    if y.size and not np.isin(y, (0, 1)).all():
        raise IdcscanError("Labels must be 0 (no IDC) or 1 (IDC).")
    if not np.isfinite(p).all() or (p.size and (p.min() < 0 or p.max() > 1)):
        raise IdcscanError("Probabilities must be finite numbers in [0, 1].")
    return y.astype(np.int64), p


def _none_if_nan(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with NaN (undefined) where den == 0."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _count_metrics(tp: np.ndarray, fp: np.ndarray, tn: np.ndarray, fn: np.ndarray) -> dict:
    """Threshold metrics from (possibly fractional, possibly vectorised) confusion counts.

    One definition serves both the point estimate and every bootstrap replicate, so an
    interval can never be computed with a subtly different formula than its estimate.
    """
    sens = _ratio(tp, tp + fn)
    spec = _ratio(tn, tn + fp)
    return {
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "balanced_accuracy": (sens + spec) / 2,  # NaN when a class is absent
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "sensitivity": sens,
        "specificity": spec,
        "precision": _ratio(tp, tp + fp),
    }


def _bin_index(probs: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bins on [0, 1]; p == 1 falls into the last bin."""
    return np.minimum((probs * n_bins).astype(np.int64), n_bins - 1)


def expected_calibration_error(labels: Any, probs: Any, n_bins: int = DEFAULT_ECE_BINS) -> float:
    """ECE of P(IDC): sum over equal-width bins of (bin share) x |fraction IDC - mean P(IDC)|.

    This is the gap the reliability diagram (calibration.png) draws, for the positive class.
    """
    y, p = _as_inputs(labels, probs)
    if y.size == 0:
        raise IdcscanError("Cannot compute calibration error of an empty set.")
    b = _bin_index(p, n_bins)
    sum_p = np.bincount(b, weights=p, minlength=n_bins)
    sum_y = np.bincount(b, weights=y.astype(np.float64), minlength=n_bins)
    return float(np.abs(sum_y - sum_p).sum() / y.size)


def binary_metrics(
    labels: Any, probs: Any, threshold: float | np.ndarray, n_bins: int = DEFAULT_ECE_BINS
) -> dict[str, Any]:
    """Every patch-level metric at ``threshold`` (a patch is IDC when P >= threshold).

    ``threshold`` may also be one value per patch (pooled out-of-fold predictions, each patch
    called at its own fold model's threshold); ``threshold`` in the result is then None.

    Metrics undefined for the data (AUC with one class present, precision with no positive
    calls, ...) are ``None`` rather than an exception or a misleading 0.
    """
    y, p = _as_inputs(labels, probs)
    if y.size == 0:
        raise IdcscanError("Cannot compute metrics on an empty set of patches.")
    thr = np.asarray(threshold, dtype=np.float64)
    pred = (p >= thr).astype(np.int64)
    (tn, fp), (fn, tp) = confusion_matrix(y, pred, labels=[0, 1]).tolist()
    both = 0 < y.sum() < y.size
    counts = _count_metrics(*(np.asarray(v, dtype=np.float64) for v in (tp, fp, tn, fn)))
    result: dict[str, Any] = {
        "auc": float(roc_auc_score(y, p)) if both else None,
        "pr_auc": float(average_precision_score(y, p)) if y.sum() > 0 else None,
    }
    result.update({k: _none_if_nan(float(v)) for k, v in counts.items()})
    result["ece"] = expected_calibration_error(y, p, n_bins)
    result["threshold"] = float(thr) if thr.ndim == 0 else None
    result["n_patches"] = int(y.size)
    result["confusion_matrix"] = [[int(tn), int(fp)], [int(fn), int(tp)]]
    return result


def choose_threshold(labels: Any, probs: Any) -> float:
    """The threshold maximising balanced accuracy (Youden's J = sensitivity + specificity - 1).

    Meant for validation data. Candidate cuts are the distinct scores (tied scores are one
    candidate, so a tie is never split). The returned value sits halfway between the chosen
    score and the next lower distinct score: it gives exactly the same calls on the validation
    set, but a patch a rounding error away from the cut (float32 vs float64, ONNX vs torch)
    is not flipped. When several cuts reach the same J, the one closest to 0.5 wins, so the
    choice is deterministic and departs from the neutral cut no further than the data demand.
    """
    y, p = _as_inputs(labels, probs)
    if not 0 < y.sum() < y.size:
        raise IdcscanError(
            "Choosing a threshold needs both IDC and non-IDC patches in the validation data."
        )
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    # thr[0] is +inf (call nothing positive); thr[1:] are the distinct scores, descending.
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]
    j = tpr - fpr
    lower = np.append(thr[1:], thr[-1])  # next lower distinct score (itself for the lowest)
    cuts = np.clip((thr + lower) / 2, 0.0, 1.0)
    best = np.flatnonzero(np.isclose(j, j.max(), rtol=0, atol=1e-12))
    pick = best[np.argmin(np.abs(cuts[best] - 0.5))]
    return float(cuts[pick])


# ----------------------------------------------------------------------------- bootstrap


@dataclass
class _UnitStats:
    """Per-resampling-unit sufficient statistics; a replicate is a weighted sum of units.

    A bootstrap replicate that draws unit ``u`` k times is the same as weighting its patches
    by k, so every metric can be computed from ``weights @ stats`` without copying patches.
    """

    pos: sparse.csr_array  # units x score groups: positive patches per distinct score
    neg: sparse.csr_array  # units x score groups: negative patches per distinct score
    counts: np.ndarray  # units x 4: tp, fp, tn, fn at the threshold
    bin_n: np.ndarray  # units x bins: patches per calibration bin
    bin_p: np.ndarray  # units x bins: sum of P(IDC) per bin
    bin_y: np.ndarray  # units x bins: sum of labels per bin

    @property
    def n_units(self) -> int:
        return self.counts.shape[0]

    @property
    def n_groups(self) -> int:
        return self.pos.shape[1]


def _unit_stats(
    y: np.ndarray, p: np.ndarray, unit: np.ndarray, n_units: int, threshold: float, n_bins: int
) -> _UnitStats:
    _, group = np.unique(p, return_inverse=True)  # ascending distinct scores
    n_groups = int(group.max()) + 1
    shape = (n_units, n_groups)
    ones = np.ones(y.size)
    pos = sparse.csr_array((ones * (y == 1), (unit, group)), shape=shape)
    neg = sparse.csr_array((ones * (y == 0), (unit, group)), shape=shape)
    pred = p >= threshold
    kinds = np.stack([(pred & (y == 1)), (pred & (y == 0)), (~pred & (y == 0)), (~pred & (y == 1))])
    counts = np.stack([np.bincount(unit, weights=k, minlength=n_units) for k in kinds], axis=1)
    b = _bin_index(p, n_bins)
    flat = unit * n_bins + b
    size = n_units * n_bins

    def per_bin(weights: np.ndarray | None) -> np.ndarray:
        return np.bincount(flat, weights=weights, minlength=size).reshape(n_units, n_bins)

    return _UnitStats(pos, neg, counts, per_bin(None), per_bin(p), per_bin(y.astype(np.float64)))


def _replicate_metrics(w: np.ndarray, s: _UnitStats) -> dict[str, np.ndarray]:
    """All scalar metrics for each row of unit weights ``w`` (replicates x units)."""
    P = (s.pos.T @ w.T).T  # replicates x groups, ascending score
    N = (s.neg.T @ w.T).T
    n_pos = P.sum(axis=1)
    n_neg = N.sum(axis=1)

    # AUC = P(score_pos > score_neg) + 0.5 P(tie), summed group by group.
    neg_below = np.cumsum(N, axis=1) - N
    auc = _ratio((P * (neg_below + 0.5 * N)).sum(axis=1), n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan

    # Average precision exactly as scikit-learn: sum over cuts of (recall step) x precision.
    tp_c = np.cumsum(P[:, ::-1], axis=1)
    fp_c = np.cumsum(N[:, ::-1], axis=1)
    precision = np.nan_to_num(_ratio(tp_c, tp_c + fp_c))
    recall_step = _ratio(P[:, ::-1], n_pos[:, None])
    ap = np.nansum(recall_step * precision, axis=1)
    ap[n_pos == 0] = np.nan

    tp, fp, tn, fn = (w @ s.counts).T
    out = {"auc": auc, "pr_auc": ap, **_count_metrics(tp, fp, tn, fn)}
    total = (w @ s.bin_n).sum(axis=1)
    out["ece"] = _ratio(np.abs(w @ s.bin_y - w @ s.bin_p).sum(axis=1), total)
    return out


def _bootstrap_ci(
    y: np.ndarray,
    p: np.ndarray,
    unit: np.ndarray,
    n_units: int,
    threshold: float,
    n_boot: int,
    seed: int,
    level: float,
    n_bins: int,
) -> dict[str, list[float | None]]:
    if not 0 < level < 1:
        raise IdcscanError(f"Confidence level must be between 0 and 1, got {level}.")
    if n_boot < 1:
        raise IdcscanError(f"Need at least one bootstrap resample, got {n_boot}.")
    if y.size == 0:
        raise IdcscanError("Cannot bootstrap an empty set of patches.")
    stats = _unit_stats(y, p, unit, n_units, threshold, n_bins)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _CHUNK_ELEMENTS // max(stats.n_groups, n_units, 1)))
    uniform = np.full(n_units, 1.0 / n_units)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in SCALAR_METRICS}
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        weights = rng.multinomial(n_units, uniform, size=size).astype(np.float64)
        for key, values in _replicate_metrics(weights, stats).items():
            parts[key].append(values)
    tail = (1 - level) / 2 * 100
    result: dict[str, list[float | None]] = {}
    for key in SCALAR_METRICS:
        values = np.concatenate(parts[key])
        values = values[np.isfinite(values)]
        if values.size == 0:
            result[key] = [None, None]
        else:
            low, high = np.percentile(values, [tail, 100 - tail])
            result[key] = [float(low), float(high)]
    return result


def patient_bootstrap_ci(
    labels: Any,
    probs: Any,
    patients: Any,
    threshold: float,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    n_bins: int = DEFAULT_ECE_BINS,
) -> dict[str, list[float | None]]:
    """Percentile intervals for every scalar metric, resampling patients with replacement.

    Each replicate draws as many patients as there are, with replacement, and keeps all their
    patches; metrics are recomputed on that set. Replicates where a metric is undefined (one
    class only) are left out of that metric's interval; ``[None, None]`` if none remain.
    """
    y, p = _as_inputs(labels, probs)
    ids = np.asarray(patients).ravel()
    if ids.size != y.size:
        raise IdcscanError(f"Got {ids.size} patient ids for {y.size} patches; they must match.")
    uniq, unit = np.unique(ids, return_inverse=True)
    return _bootstrap_ci(y, p, unit.ravel(), len(uniq), threshold, n_boot, seed, level, n_bins)


def patch_bootstrap_ci(
    labels: Any,
    probs: Any,
    threshold: float,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    n_bins: int = DEFAULT_ECE_BINS,
) -> dict[str, list[float | None]]:
    """Percentile intervals resampling single patches, as if they were independent.

    Too narrow for histopathology (patches of a patient are correlated); kept to show the
    difference against :func:`patient_bootstrap_ci`, not to report.
    """
    y, p = _as_inputs(labels, probs)
    return _bootstrap_ci(y, p, np.arange(y.size), y.size, threshold, n_boot, seed, level, n_bins)


def summarize(
    labels: Any,
    probs: Any,
    patients: Any,
    threshold: float,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """binary_metrics plus ``n_patients`` and ``ci95`` (patient bootstrap): one call for reports."""
    result = binary_metrics(labels, probs, threshold)
    ids = np.asarray(patients).ravel()
    result["n_patients"] = int(np.unique(ids).size)
    result["ci95"] = patient_bootstrap_ci(
        labels, probs, ids, threshold, n_boot=n_boot, seed=seed, level=level
    )
    return result


def patient_table(
    labels: Any, probs: Any, patients: Any, threshold: float
) -> list[dict[str, Any]]:
    """One row per patient: how much IDC there is, how much the model calls, and how well.

    ``auc`` is ``None`` for a patient whose patches are all one class.
    """
    y, p = _as_inputs(labels, probs)
    ids = np.asarray(patients).ravel()
    if ids.size != y.size:
        raise IdcscanError(f"Got {ids.size} patient ids for {y.size} patches; they must match.")
    uniq, unit = np.unique(ids, return_inverse=True)
    unit = unit.ravel()
    order = np.argsort(unit, kind="stable")
    bounds = np.searchsorted(unit[order], np.arange(len(uniq) + 1))
    rows = []
    for k, patient in enumerate(uniq):
        sel = order[bounds[k] : bounds[k + 1]]
        yk, pk = y[sel], p[sel]
        pred = pk >= threshold
        n_idc = int(yk.sum())
        rows.append(
            {
                "patient": str(patient),
                "n_patches": int(sel.size),
                "n_idc": n_idc,
                "idc_fraction_true": n_idc / sel.size,
                "idc_fraction_pred": float(pred.mean()),
                "mean_probability": float(pk.mean()),
                "auc": float(roc_auc_score(yk, pk)) if 0 < n_idc < sel.size else None,
                "accuracy": float((pred == (yk == 1)).mean()),
            }
        )
    return rows
