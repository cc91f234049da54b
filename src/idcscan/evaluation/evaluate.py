"""Evaluate an exported bundle on a packed dataset split: the numbers a results table quotes.

Scoring goes through :class:`idcscan.runtime.predictor.Predictor`, the same ONNX path that
``predict``, ``serve`` and ``slide`` use, so the evaluated model is byte for byte the served
one (torch is never imported). Metrics are for the call every output reports (IDC Positive
at calibrated P(IDC) >= 50%, ``idcscan.runtime.labels``); the ``review`` block measures the
bundle's review threshold, fixed on validation before the test data was seen. Outputs are
written into a temporary directory that replaces ``out`` only when
complete, so an interrupted run never leaves a half-written report behind.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from idcscan import DISCLAIMER, __version__
from idcscan.progress import progress_bar
from idcscan.data.packed import PackedDataset, load_packed
from idcscan.errors import IdcscanError
from idcscan.evaluation import plots
from idcscan.evaluation.metrics import (
    DEFAULT_ECE_BINS,
    binary_metrics,
    patient_table,
    summarize,
)
from idcscan.evaluation.report import render_report
from idcscan.runtime.labels import DECISION_THRESHOLD
from idcscan.runtime.model_card import tta_in_use
from idcscan.runtime.predictor import Predictor

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
PATIENTS_FILE = "patients.csv"
REPORT_FILE = "report.md"
PLOT_FILES = ("roc.png", "pr.png", "confusion_matrix.png", "calibration.png")
PREDICTION_COLUMNS = ["row", "patient", "x", "y", "label", "probability"]
PATIENT_COLUMNS = [
    "patient",
    "n_patches",
    "n_idc",
    "idc_fraction_true",
    "idc_fraction_pred",
    "mean_probability",
    "auc",
    "accuracy",
]


def check_output_dir(out: Path) -> None:
    """Refuse to replace a directory that is not (an earlier) evaluation report.

    Replacing ``out`` wholesale is what makes the write atomic; this guard keeps a typo such
    as ``--out ~`` from costing anyone their home directory.
    """
    if out.exists() and not out.is_dir():
        raise IdcscanError(f"{out} exists and is a file; choose a directory for the report.")
    if out.is_dir() and any(out.iterdir()) and not (out / METRICS_FILE).is_file():
        raise IdcscanError(
            f"{out} exists and is not an idcscan evaluation report; choose a new or empty "
            "directory (an earlier report there would be replaced)."
        )


def score_split(
    predictor: Predictor,
    ds: PackedDataset,
    tta: bool = False,
    batch_size: int = 256,
    progress: bool = True,
    description: str = "Scoring patches",
) -> np.ndarray:
    """P(IDC) for every entry of ``ds``, reading the memory map one batch at a time (one
    patient at a time for a bundle that normalises stains per group: each patient is a group,
    as in training)."""
    probs = np.empty(len(ds), dtype=np.float64)
    if predictor.group_norm is None:
        groups: list[np.ndarray | slice] = [slice(0, len(ds))]
    else:
        _, first = np.unique(ds.patient, return_index=True)
        groups = [np.flatnonzero(ds.patient == ds.patient[i]) for i in np.sort(first)]
    with progress_bar(progress) as bar:
        task = bar.add_task(description, total=len(ds))
        for rows in groups:
            positions = np.arange(len(ds))[rows]
            group = predictor.stain_group(ds.images(positions)) \
                if predictor.group_norm is not None else None
            for start in range(0, len(positions), batch_size):
                part = positions[start : start + batch_size]
                probs[part] = predictor.predict_proba(ds.images(part), tta=tta, group=group)
                bar.advance(task, len(part))
    return probs


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row[k] is None else row[k] for k in columns})


def _bundle_info(predictor: Predictor) -> dict[str, Any]:
    card = predictor.card
    return {
        "path": str(predictor.bundle.path),
        "name": card.name,
        "version": card.version,
        "backbone": card.backbone,
        "input_size": card.input_size,
        "patch_size": card.patch_size,
        "mpp": card.mpp,
        "temperature": predictor.temperature,
        "calibration": card.calibration.method,
        "threshold": predictor.threshold,
        "onnx_sha256": card.onnx_sha256,
        "demo": card.demo,
        "card_metrics": card.metrics,
        "card_training": card.training,
        "card_extra": card.model_extra or {},
    }


def _write_outputs(
    tmp: Path,
    summary: dict[str, Any],
    ds: PackedDataset,
    probs: np.ndarray,
    patients_rows: list[dict[str, Any]],
) -> None:
    (tmp / METRICS_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    predictions = (
        {
            "row": int(ds.rows[i]),
            "patient": ds.patient[i],
            "x": int(ds.x[i]),
            "y": int(ds.y[i]),
            "label": int(ds.label[i]),
            "probability": f"{probs[i]:.6f}",
        }
        for i in range(len(ds))
    )
    _write_csv(tmp / PREDICTIONS_FILE, PREDICTION_COLUMNS, list(predictions))
    _write_csv(tmp / PATIENTS_FILE, PATIENT_COLUMNS, patients_rows)
    labels = ds.label.astype(np.int64)
    threshold = summary["threshold"]
    ci = summary["ci95"]
    plots.plot_roc(labels, probs, tmp / "roc.png", threshold, summary["auc"], ci["auc"])
    plots.plot_pr(labels, probs, tmp / "pr.png", threshold, summary["pr_auc"], ci["pr_auc"])
    plots.plot_confusion_matrix(summary["confusion_matrix"], tmp / "confusion_matrix.png",
                                threshold)
    plots.plot_calibration(labels, probs, tmp / "calibration.png", DEFAULT_ECE_BINS,
                           summary["ece"])
    (tmp / REPORT_FILE).write_text(render_report(summary, patients_rows))


def _replace_dir(tmp: Path, out: Path) -> None:
    """Swap the finished ``tmp`` in for ``out`` with renames (no half-written state)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def evaluate(
    bundle: str | Path,
    data: str | Path,
    split: str = "test",
    out: str | Path | None = None,
    tta: bool = False,
    batch_size: int = 256,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
    splits: str | Path | None = None,
) -> dict[str, Any]:
    """Score ``split`` of the packed dataset ``data`` with ``bundle``; return metrics.json.

    ``splits``: a splits file (row, split) replacing the dataset's own assignment, as
    cross-validation uses to score each fold on its own test patients.

    With ``out`` the full report (metrics.json, predictions.csv, patients.csv, four plots,
    report.md) is written there. Intervals are percentile bootstraps over patients.
    """
    started = time.perf_counter()
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        check_output_dir(out_dir)
    if batch_size < 1:
        raise IdcscanError(f"--batch-size must be at least 1, got {batch_size}.")
    predictor = Predictor(bundle, batch_size=batch_size)
    ds = load_packed(data, splits).subset(split)
    size = predictor.pre.patch_size
    if ds.patches.shape[1:] != (size, size, 3):
        raise IdcscanError(
            f"{ds.root} holds patches of shape {ds.patches.shape[1:]}, but the bundle expects "
            f"({size}, {size}, 3); prepare the data at the bundle's patch size."
        )

    probs = score_split(predictor, ds, tta=tta, batch_size=batch_size, progress=progress)
    labels = ds.label.astype(np.int64)
    # The call (P(IDC) >= 50%) is what every output reports, so it is what is measured; the
    # bundle's review threshold gets its own block (what a flag catches and costs).
    threshold = DECISION_THRESHOLD
    summary: dict[str, Any] = {"disclaimer": DISCLAIMER}
    summary.update(summarize(labels, probs, ds.patient, threshold, n_boot=n_boot, seed=seed))
    patients_rows = patient_table(labels, probs, ds.patient, threshold)
    review = binary_metrics(labels, probs, predictor.threshold)
    summary.update(
        {
            "review": {
                key: review[key]
                for key in ("threshold", "sensitivity", "specificity", "precision",
                            "confusion_matrix")
            },
            "split": split,
            "tta": predictor.tta_views(tta) > 1,
            "tta_views": predictor.tta_views(tta),
            "tta_in_use": tta_in_use(predictor.card, tta),
            "bundle": _bundle_info(predictor),
            "runtime": predictor.engine.info.as_dict(),
            "data": {
                "path": str(ds.root),
                "split": split,
                "n_patches": len(ds),
                "n_patients": summary["n_patients"],
                "n_idc": int(labels.sum()),
                "idc_prevalence": float(labels.mean()),
                "prepare": ds.meta,
            },
            "ci": {
                "method": "percentile bootstrap, resampling patients with replacement",
                "level": 0.95,
                "n_boot": n_boot,
                "seed": seed,
            },
            "ece_bins": DEFAULT_ECE_BINS,
            "idcscan_version": __version__,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
    )
    summary["seconds"] = round(time.perf_counter() - started, 3)

    if out_dir is not None:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            _write_outputs(tmp, summary, ds, probs, patients_rows)
            _replace_dir(tmp, out_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return summary
