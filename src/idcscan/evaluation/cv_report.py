"""cv.png and cv.md: a cross-validation as a person reads it, built from cv.json alone
(plus the out-of-fold predictions for the ROC curves)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from idcscan import DISCLAIMER
from idcscan.evaluation.plots import IDC_COLOR, NEUTRAL_COLOR, _figure, _save
from idcscan.evaluation.report import METRIC_LABELS

PLOTTED = ("auc", "balanced_accuracy", "f1", "sensitivity", "specificity")


def _fmt(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def plot_cv(result: dict[str, Any], tests: list[dict[str, np.ndarray]], path: Path) -> Path:
    """Left: each fold's metrics (dots) with mean ± sd; right: per-fold and pooled ROC."""
    fig = _figure(10.0, 4.4)
    ax, ax_roc = fig.subplots(1, 2, width_ratios=[1.3, 1])
    folds = result["folds"]
    rng = np.random.default_rng(0)
    for i, key in enumerate(PLOTTED):
        vals = [f[key] for f in folds if f[key] is not None]
        x = i + rng.uniform(-0.12, 0.12, len(vals))
        ax.scatter(x, vals, s=18, color=NEUTRAL_COLOR, zorder=2,
                   label="fold" if i == 0 else None)
        mean, sd = result["mean"][key], result["sd"][key]
        if mean is not None:
            ax.errorbar(i + 0.28, mean, yerr=sd or 0, fmt="o", color=IDC_COLOR, capsize=4,
                        zorder=3, label="mean ± sd" if i == 0 else None)
        pooled = (result.get("pooled") or {}).get(key)
        if pooled is not None:
            ax.scatter(i + 0.28, pooled, marker="x", color="black", zorder=4,
                       label="pooled OOF" if i == 0 else None)
    ax.set_xticks(range(len(PLOTTED)), [k.replace("_", "\n") for k in PLOTTED], fontsize=8)
    ax.set_ylim(0.0, 1.02)
    ax.set_ylabel("test patients of each fold")
    ax.set_title(f"{result['folds_done']} of {result['folds_planned']} folds", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")

    ax_roc.plot([0, 1], [0, 1], ls="--", color=NEUTRAL_COLOR, lw=1)
    for t in tests:
        if 0 < t["label"].sum() < t["label"].size:
            fpr, tpr, _ = roc_curve(t["label"], t["probability"])
            ax_roc.plot(fpr, tpr, color=NEUTRAL_COLOR, lw=0.8, alpha=0.7)
    y = np.concatenate([t["label"] for t in tests])
    p = np.concatenate([t["probability"] for t in tests])
    pooled = result.get("pooled") or {}
    if 0 < y.sum() < y.size:
        fpr, tpr, _ = roc_curve(y, p)
        ci = (pooled.get("ci95") or {}).get("auc") or [None, None]
        label = f"pooled OOF AUC {_fmt(pooled.get('auc'))}"
        if ci[0] is not None:
            label += f" ({_fmt(ci[0])}-{_fmt(ci[1])})"
        ax_roc.plot(fpr, tpr, color=IDC_COLOR, lw=2, label=label)
    ax_roc.plot([], [], color=NEUTRAL_COLOR, lw=0.8, label="each fold")
    ax_roc.set_xlabel("1 - specificity")
    ax_roc.set_ylabel("sensitivity")
    ax_roc.set_title("ROC, out-of-fold", fontsize=10)
    ax_roc.legend(fontsize=8, loc="lower right")
    fig.suptitle("Patient-grouped cross-validation (research use only)", fontsize=10)
    return _save(fig, path)


def render_cv_report(result: dict[str, Any]) -> str:
    cfg = result.get("cv_config", {})
    train_seed = (cfg.get("recipe") or {}).get("seed", cfg.get("seed"))
    seeds = (f"seed {cfg.get('seed')}" if train_seed == cfg.get("seed")
             else f"fold seed {cfg.get('seed')}, training seed {train_seed}")
    lines = [
        "# Cross-validation report", "",
        f"> {DISCLAIMER}", "",
        f"{cfg.get('folds')}-fold patient-grouped cross-validation, {cfg.get('repeats')} "
        f"repeat(s), {seeds}, on `{cfg.get('data')}`: "
        f"{result['folds_done']} of {result['folds_planned']} folds done"
        + ("." if result["complete"] else " (incomplete: re-run the same command to continue)."),
        "",
    ]
    if not result["folds"]:
        return "\n".join(lines + ["No fold has finished yet.", ""])
    pooled = result["pooled"]
    lines += ["## Summary", "", "| metric | mean ± sd over folds | pooled out-of-fold (95% CI, "
              "patients) |", "| --- | --- | --- |"]
    for key in ("auc", "balanced_accuracy", "f1", "sensitivity", "specificity", "ece"):
        ci = pooled["ci95"].get(key) or [None, None]
        lines.append(f"| {METRIC_LABELS[key]} | {_fmt(result['mean'][key])} ± "
                     f"{_fmt(result['sd'][key])} | {_fmt(pooled[key])} ({_fmt(ci[0])}-"
                     f"{_fmt(ci[1])}) |")
    engines = ", ".join(result.get("engines") or []) or "not recorded"
    lines += ["", f"Pooled: {pooled['n_patches']:,} patches of {pooled['n_patients']} "
              "patients, each called as its fold was evaluated (P(IDC) >= 50%). "
              f"Scored by: {engines}.", "",
              "## Folds", "",
              "| fold | patients | patches | AUC | balanced acc. | F1 | review threshold | "
              "val AUC |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for f in result["folds"]:
        lines.append(f"| {f['fold']} | {f['n_patients']} | {f['n_patches']:,} | {_fmt(f['auc'])} "
                     f"| {_fmt(f['balanced_accuracy'])} | {_fmt(f['f1'])} | "
                     f"{_fmt(f.get('review_threshold', f['threshold']))} | "
                     f"{_fmt(f['val_auc'])} |")
    th = result.get("thresholds") or {}
    lines += ["", "## Thresholds", "", "| threshold chosen on | value (sd over folds) | "
              "balanced acc. (OOF) | F1 (OOF) |", "| --- | --- | --- | --- |",
              f"| none: the call, P(IDC) >= 50% | 0.500 | "
              f"{_fmt(pooled['balanced_accuracy'])} | {_fmt(pooled['f1'])} |",
              f"| each fold's inner validation (the review threshold in each bundle) | "
              f"{_fmt(th['bundle']['mean'])} ({_fmt(th['bundle']['sd'])}) | "
              f"{_fmt(th['bundle']['oof']['balanced_accuracy'])} | "
              f"{_fmt(th['bundle']['oof']['f1'])} |"]
    if "pooled_validation" in th:
        pv = th["pooled_validation"]
        lines.append(f"| all inner-validation patients pooled ({pv['n_patients']}) | "
                     f"{_fmt(pv['threshold'])} | {_fmt(pv['oof']['balanced_accuracy'])} | "
                     f"{_fmt(pv['oof']['f1'])} |")
    if "crossfit" in th:
        cf = th["crossfit"]
        lines.append(f"| the other folds' out-of-fold predictions | {_fmt(cf['mean'])} "
                     f"({_fmt(cf['sd'])}) | {_fmt(cf['oof']['balanced_accuracy'])} | "
                     f"{_fmt(cf['oof']['f1'])} |")
    if "oof" in th:
        lines.append(f"| all out-of-fold predictions (in-sample) | {_fmt(th['oof']['threshold'])}"
                     f" | {_fmt(th['oof']['oof']['balanced_accuracy'])} | "
                     f"{_fmt(th['oof']['oof']['f1'])} |")
    cal = result.get("calibration") or {}
    lines += ["", f"Temperature per fold: {_fmt(th['temperature']['mean'])} ± "
              f"{_fmt(th['temperature']['sd'])}; best cut on each fold's own test patients: "
              f"{_fmt(th['test_optimal']['mean'])} ± {_fmt(th['test_optimal']['sd'])}.", ""]
    if "oof_temperature" in cal:
        lines += [f"Calibration: out-of-fold ECE {_fmt(cal['ece'])}; a second temperature "
                  f"fitted on the other folds' out-of-fold predictions "
                  f"({_fmt(cal['crossfit_temperature']['mean'])} ± "
                  f"{_fmt(cal['crossfit_temperature']['sd'])}) gives ECE "
                  f"{_fmt(cal['ece_crossfit_rescaled'])}.", ""]
    lines += [
              f"Files: cv.json, oof_predictions.csv, cv.png, fold-N/. {DISCLAIMER}", ""]
    return "\n".join(lines)
