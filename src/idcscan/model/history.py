"""Training curves from ``RUN/metrics.csv``: losses and validation AUC per round."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402


def read_metrics(path: Path) -> list[dict[str, float | None]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in rows]


def plot_curves(metrics_csv: Path, out: Path) -> Path:
    """Two panels (loss; validation AUC) against optimizer step, phase 2 start marked."""
    rows = read_metrics(metrics_csv)
    fig = Figure(figsize=(9, 3.6), dpi=120)
    ax_loss, ax_auc = fig.subplots(1, 2)
    step = [r["step"] for r in rows]
    for key, label in (("train_loss", "train loss (weighted, smoothed)"),
                       ("val_loss", "validation loss")):
        pts = [(s, r[key]) for s, r in zip(step, rows) if r.get(key) is not None]
        if pts:
            ax_loss.plot(*zip(*pts), marker="o", label=label)
    pts = [(s, r["val_auc"]) for s, r in zip(step, rows) if r.get("val_auc") is not None]
    if pts:
        ax_auc.plot(*zip(*pts), marker="o", color="tab:green")
        best = max(pts, key=lambda p: p[1])
        ax_auc.annotate(f"best {best[1]:.4f}", best, textcoords="offset points", xytext=(0, -14),
                        ha="center")
    phase1 = [s for s, r in zip(step, rows) if r.get("phase") == 1]
    if phase1 and any(r.get("phase") == 2 for r in rows):
        for ax in (ax_loss, ax_auc):
            ax.axvline(max(phase1), color="grey", linestyle=":", label="backbone unfrozen")
    ax_loss.set(xlabel="optimizer step", ylabel="loss", title="Loss")
    ax_auc.set(xlabel="optimizer step", ylabel="AUC", title="Validation AUC")
    ax_loss.legend(fontsize=8)
    for ax in (ax_loss, ax_auc):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp)
    tmp.replace(out)
    return out
