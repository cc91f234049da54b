"""The evaluation figures: ROC, precision-recall, confusion matrix, reliability diagram.

Figures are built with matplotlib's object API (``Figure`` + Agg canvas), never pyplot, so
plotting works headless, in threads (the server) and leaves no global figure state behind.
Each function writes one PNG atomically and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from idcscan.evaluation.metrics import DEFAULT_ECE_BINS

DPI = 120
IDC_COLOR = "#c0392b"
NEUTRAL_COLOR = "#7f8c8d"


def _figure(width: float = 4.8, height: float = 4.4) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=DPI)
    tmp.replace(path)
    return path


def _ci_text(name: str, value: float | None, ci: Sequence[float | None] | None) -> str:
    if value is None:
        return f"{name} undefined"
    if ci and ci[0] is not None:
        return f"{name} {value:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f})"
    return f"{name} {value:.3f}"


def plot_roc(
    labels: np.ndarray,
    probs: np.ndarray,
    path: str | Path,
    threshold: float | None = None,
    auc: float | None = None,
    ci: Sequence[float | None] | None = None,
) -> Path:
    """ROC curve with the operating point of the bundle's threshold marked."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color=NEUTRAL_COLOR, lw=1, label="chance")
    if 0 < labels.sum() < labels.size:
        fpr, tpr, _ = roc_curve(labels, probs)
        ax.plot(fpr, tpr, color=IDC_COLOR, lw=2, label=_ci_text("AUC", auc, ci))
    if threshold is not None and 0 < labels.sum() < labels.size:
        pred = probs >= threshold
        sens = pred[labels == 1].mean()
        fpr_at = pred[labels == 0].mean()
        ax.plot(fpr_at, sens, "o", color="black", label=f"threshold {threshold:.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity (false positive rate)",
           ylabel="sensitivity (true positive rate)", title="ROC, patch level")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_pr(
    labels: np.ndarray,
    probs: np.ndarray,
    path: str | Path,
    threshold: float | None = None,
    pr_auc: float | None = None,
    ci: Sequence[float | None] | None = None,
) -> Path:
    """Precision-recall curve; the dashed line is the precision of calling everything IDC."""
    fig = _figure()
    ax = fig.add_subplot()
    prevalence = float(labels.mean()) if labels.size else 0.0
    ax.axhline(prevalence, ls="--", color=NEUTRAL_COLOR, lw=1,
               label=f"prevalence {prevalence:.3f}")
    if labels.sum() > 0:
        precision, recall, _ = precision_recall_curve(labels, probs)
        ax.step(recall, precision, where="post", color=IDC_COLOR, lw=2,
                label=_ci_text("AP", pr_auc, ci))
        if threshold is not None:
            pred = probs >= threshold
            if pred.any():
                ax.plot(pred[labels == 1].mean(), labels[pred].mean(), "o", color="black",
                        label=f"threshold {threshold:.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (sensitivity)", ylabel="precision",
           title="Precision-recall, patch level")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], path: str | Path, threshold: float | None = None
) -> Path:
    """2x2 counts ([[tn, fp], [fn, tp]]) with row percentages (share of each true class)."""
    cm = np.asarray(matrix, dtype=np.int64)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    fig = _figure(4.4, 4.0)
    ax = fig.add_subplot()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    names = ["no IDC", "IDC"]
    for i in range(2):
        for j in range(2):
            color = "white" if share[i, j] > 0.6 else "black"
            ax.text(j, i, f"{cm[i, j]:,}\n{share[i, j]:.1%}", ha="center", va="center",
                    color=color, fontsize=11)
    title = "Confusion matrix" + (f" (P >= {threshold:.3f})" if threshold is not None else "")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=names, yticklabels=names,
           xlabel="predicted", ylabel="true", title=title)
    return _save(fig, path)


def plot_calibration(
    labels: np.ndarray,
    probs: np.ndarray,
    path: str | Path,
    n_bins: int = DEFAULT_ECE_BINS,
    ece: float | None = None,
) -> Path:
    """Reliability diagram (fraction IDC vs mean P(IDC) per bin) over a histogram of P(IDC).

    Uses the same equal-width bins as the ECE, so the bars' gaps are what the ECE sums.
    """
    edges = np.linspace(0, 1, n_bins + 1)
    index = np.minimum((probs * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    mean_p = np.bincount(index, weights=probs, minlength=n_bins)
    frac = np.bincount(index, weights=labels.astype(float), minlength=n_bins)
    filled = count > 0
    mean_p = np.divide(mean_p, count, out=np.zeros(n_bins), where=filled)
    frac = np.divide(frac, count, out=np.zeros(n_bins), where=filled)

    fig = _figure(4.8, 5.4)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], ls="--", color=NEUTRAL_COLOR, lw=1, label="perfect calibration")
    top.plot(mean_p[filled], frac[filled], "o-", color=IDC_COLOR, lw=2,
             label="model" + (f" (ECE {ece:.3f})" if ece is not None else ""))
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="fraction truly IDC",
            title="Reliability diagram, patch level")
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.bar(edges[:-1], count, width=1 / n_bins, align="edge", color=NEUTRAL_COLOR)
    bottom.set(xlabel="predicted P(IDC)", ylabel="patches")
    bottom.set_yscale("symlog")
    return _save(fig, path)
