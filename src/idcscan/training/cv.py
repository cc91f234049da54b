"""``run_cv``: patient-grouped K-fold cross-validation of a training recipe.

DIR/
  cv_config.json        the recipe and CV settings (a re-run must match them)
  folds.json            which patients are train / val / test in every fold
  fold-N/splits.csv     that fold's split of every patch (row, split): training and
                        evaluation read the packed dataset through it, nothing is copied
  fold-N/run/           the training run (``idcscan train``'s outputs, bundle/ included)
  fold-N/test/          ``idcscan evaluate`` of the bundle on the fold's test patients
  fold-N/val_predictions.csv   the bundle on the fold's inner validation patients
  fold-N/metrics.json   written last: the fold is done (a re-run skips it)
  oof_predictions.csv   row, patient, fold, label, probability (each patch once per repeat)
  cv.json, cv.png, cv.md
  ensemble/             with ``--export-ensemble``: one bundle averaging every fold's model

Every fold runs the same library function as ``idcscan train`` and is scored through its
exported ONNX bundle by ``idcscan.evaluation.evaluate``, so a CV figure is a figure of the
very artefact a user would deploy. A fold interrupted in training resumes from its last
checkpoint; one interrupted elsewhere restarts that step; finished folds are never redone.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from idcscan import DISCLAIMER, __version__
from idcscan.data.folds import Fold, fold_splits, make_folds, patient_stats
from idcscan.data.packed import PackedDataset, load_packed, write_splits
from idcscan.errors import IdcscanError
from idcscan.evaluation.cv_summary import summarize_folds
from idcscan.evaluation.evaluate import PREDICTIONS_FILE, evaluate, score_split
from idcscan.runtime.engine import REFERENCE_RUNTIME, EngineInfo
from idcscan.runtime.predictor import Predictor
from idcscan.training.config import write_json  # torch-free, like this module

CV_CONFIG = "cv_config.json"
PLAN = "folds.json"
SPLITS_FILE = "splits.csv"
FOLD_METRICS = "metrics.json"
VAL_PREDICTIONS = "val_predictions.csv"
PRED_COLUMNS = ["row", "patient", "label", "probability"]
#: Recipe keys that may differ between the runs of one CV (they do not change the model).
_NOT_RECIPE = ("progress", "num_workers", "accelerator", "max_minutes")


@dataclass
class CVSettings:
    folds: int = 5
    repeats: int = 1
    #: Seed of the folds (and the bootstrap); the recipe's own seed drives training.
    seed: int = 0
    #: Share of each training fold's patients held out as its inner validation set.
    val_frac: float = 0.2
    #: Stop after training this many new folds (the rest runs on the next invocation).
    max_folds: int | None = None
    n_boot: int = 1000
    progress: bool = True
    #: When every fold is done, write DIR/ensemble: one bundle averaging the folds.
    export_ensemble: bool = False


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]] | Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def read_predictions(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {"row": np.array([int(r["row"]) for r in rows], dtype=np.int64),
            "patient": np.array([r["patient"] for r in rows], dtype=str),
            "label": np.array([int(r["label"]) for r in rows], dtype=np.int64),
            "probability": np.array([float(r["probability"]) for r in rows])}


def _check_plan(out: Path, data: Path, recipe: dict[str, Any], settings: CVSettings,
                folds: list[Fold]) -> None:
    """Write the plan on the first run; on a re-run refuse to mix recipes or fold layouts."""
    config = {"data": str(data.resolve()),
              "recipe": {k: v for k, v in recipe.items() if k not in _NOT_RECIPE},
              "folds": settings.folds, "repeats": settings.repeats, "seed": settings.seed,
              "val_frac": settings.val_frac}
    plan = [f.to_dict() for f in folds]
    if (out / CV_CONFIG).is_file():
        saved = json.loads((out / CV_CONFIG).read_text())
        if json.loads(json.dumps(config, default=str)) != saved.get("cv"):
            raise IdcscanError(
                f"{out} holds a cross-validation with other settings ({out / CV_CONFIG}); "
                "re-run with the same data, recipe and CV options, or choose another --out.")
        if json.loads((out / PLAN).read_text()) != plan:
            raise IdcscanError(f"The folds in {out / PLAN} differ from those this version "
                               "makes for these settings; choose another --out.")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / PLAN, plan)
    write_json(out / CV_CONFIG, {"cv": config, "max_minutes_per_fold": recipe.get("max_minutes"),
                                 "idcscan_version": __version__, "disclaimer": DISCLAIMER})


def _score_to_csv(bundle: Path, ds: PackedDataset, path: Path, progress: bool) -> None:
    probs = score_split(Predictor(bundle), ds, progress=progress,
                        description="Scoring validation patients")
    write_csv(path, PRED_COLUMNS, ({"row": int(r), "patient": p, "label": int(y),
                                    "probability": f"{q:.6f}"}
                                   for r, p, y, q in zip(ds.rows, ds.patient, ds.label, probs)))


def run_fold(data: Path, ds: PackedDataset, fold: Fold, fold_dir: Path,
             recipe: dict[str, Any], settings: CVSettings) -> dict[str, Any]:
    """Train, export and score one fold; returns (and writes last) its metrics.json."""
    from idcscan.training.config import CHECKPOINTS, CONFIG_NAME, TrainConfig
    from idcscan.training.train import train

    started = time.time()
    fold_dir.mkdir(parents=True, exist_ok=True)
    splits = fold_dir / SPLITS_FILE
    write_splits(splits, ds.rows, fold_splits(ds, fold))
    run_dir = fold_dir / "run"
    bundle = run_dir / "bundle"
    if not (bundle / "model.json").is_file():
        resume = (run_dir / CONFIG_NAME).is_file() and \
            (run_dir / CHECKPOINTS / "last.ckpt").is_file()
        if not resume and run_dir.exists():
            shutil.rmtree(run_dir)  # interrupted before its first checkpoint: start over
        cfg = TrainConfig(**{**recipe, "data": str(data), "out": str(run_dir),
                             "splits": str(splits), "resume": resume,
                             "progress": settings.progress})
        train(cfg, started=started)
    summary = evaluate(bundle, data, split="test", out=fold_dir / "test", splits=splits,
                       n_boot=settings.n_boot, seed=settings.seed, progress=settings.progress)
    fold_ds = load_packed(data, splits)
    _score_to_csv(bundle, fold_ds.subset("val"), fold_dir / VAL_PREDICTIONS, settings.progress)
    card = summary["bundle"]
    metrics = {
        "fold": fold.index, "repeat": fold.repeat, "fold_in_repeat": fold.fold,
        "patients": {"train": len(fold.train), "val": len(fold.val), "test": len(fold.test)},
        "test": {k: v for k, v in summary.items()
                 if k not in ("bundle", "data", "disclaimer", "ci")},
        # the call the test figures were measured at (P(IDC) >= 50%, as ``evaluate`` does),
        # and the bundle's review threshold chosen on the fold's inner validation patients
        "threshold": summary.get("threshold", card["threshold"]),
        "review_threshold": card["threshold"], "temperature": card["temperature"],
        "validation": card["card_metrics"].get("validation", {}),
        "seconds": round(time.time() - started, 1),
        "disclaimer": DISCLAIMER,
    }
    write_json(fold_dir / FOLD_METRICS, metrics)
    return metrics


def fold_dir(out: Path, fold: Fold) -> Path:
    return out / f"fold-{fold.index}"


def run_cv(data: str | Path, out: str | Path, recipe: dict[str, Any],
           settings: CVSettings | None = None) -> dict[str, Any]:
    """Cross-validate ``recipe`` (TrainConfig fields) on every patient of ``data``.

    Returns cv.json's contents. With ``settings.max_folds`` only that many new folds are
    trained; cv.json then says ``complete: false`` and a re-run continues.
    """
    settings = settings or CVSettings()
    data, out = Path(data), Path(out)
    if int(recipe.get("devices", 1)) > 1:
        raise IdcscanError("idcscan cv trains one fold at a time on one device; drop --devices "
                           "or run several cv commands with different --out.")
    if settings.max_folds is not None and settings.max_folds < 0:
        raise IdcscanError("--max-folds cannot be negative.")
    ds = load_packed(data)
    folds = make_folds(patient_stats(ds), settings.folds, settings.repeats, settings.seed,
                       settings.val_frac)
    _check_plan(out, data, recipe, settings, folds)
    trained = 0
    for fold in folds:
        if (fold_dir(out, fold) / FOLD_METRICS).is_file():
            continue
        if settings.max_folds is not None and trained >= settings.max_folds:
            break
        run_fold(data, ds, fold, fold_dir(out, fold), recipe, settings)
        trained += 1
    result = summarize_cv(out, folds, settings)
    if settings.export_ensemble and result["complete"]:
        result["ensemble"] = str(export_ensemble(out, folds, result, ds))
    return result


def export_ensemble(out: Path, folds: list[Fold], result: dict[str, Any],
                    ds: PackedDataset) -> Path:
    """DIR/ensemble: the folds' bundles averaged in one graph, with the threshold chosen on
    all out-of-fold predictions (every patient, each scored by a model that never saw it)."""
    from idcscan.training.ensemble import build_ensemble

    members = [fold_dir(out, f) / "run" / "bundle" for f in folds]
    oof = result["thresholds"]["oof"]
    target = out / "ensemble"
    tmp = out / ".ensemble.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    pooled = result["pooled"]
    build_ensemble(
        members, tmp, threshold=oof["threshold"],
        threshold_rule=f"max balanced accuracy on the pooled out-of-fold predictions "
                       f"({pooled['n_patients']} patients, {pooled['n_patches']} patches)",
        metrics={"cv": {"mean": result["mean"], "sd": result["sd"],
                        "pooled": {k: pooled[k] for k in ("auc", "balanced_accuracy", "f1",
                                                          "ci95", "n_patients")},
                        "note": "cross-validated figures of the members; the ensemble itself "
                                "has not been tested on unseen patients"}})
    # The merged graph must give the mean of the members' probabilities.
    sample = ds.images(slice(0, min(32, len(ds))))
    expected = np.mean([Predictor(m, runtime=REFERENCE_RUNTIME).predict_proba(sample)
                        for m in members], axis=0)
    got = Predictor(tmp, runtime=REFERENCE_RUNTIME).predict_proba(sample)
    if not np.allclose(got, expected, atol=1e-4):
        raise RuntimeError("The ensemble graph does not average its members; this is a bug "
                           "in idcscan's ensemble export.")
    if target.exists():
        shutil.rmtree(target)
    tmp.replace(target)
    return target


def summarize_cv(out: Path, folds: list[Fold], settings: CVSettings) -> dict[str, Any]:
    """OOF predictions, cv.json, the plot and the report from the folds finished so far."""
    from idcscan.evaluation.cv_report import plot_cv, render_cv_report

    done = [f for f in folds if (fold_dir(out, f) / FOLD_METRICS).is_file()]
    records = [json.loads((fold_dir(out, f) / FOLD_METRICS).read_text()) for f in done]
    tests = [read_predictions(fold_dir(out, f) / "test" / PREDICTIONS_FILE) for f in done]
    vals = [read_predictions(fold_dir(out, f) / VAL_PREDICTIONS) for f in done]
    oof_rows = []
    for f, t in zip(done, tests):
        oof_rows.extend({"row": int(r), "patient": p, "fold": f.index, "label": int(y),
                         "probability": f"{q:.6f}"}
                        for r, p, y, q in zip(t["row"], t["patient"], t["label"],
                                              t["probability"]))
    write_csv(out / "oof_predictions.csv", ["row", "patient", "fold", "label", "probability"],
              oof_rows)
    result = {
        "disclaimer": DISCLAIMER,
        "complete": len(done) == len(folds),
        "folds_done": len(done),
        "folds_planned": len(folds),
        "settings": asdict(settings),
        **summarize_folds(records, tests, vals, n_boot=settings.n_boot, seed=settings.seed),
        # what scored the test patients (folds resumed on another machine may differ)
        "engines": sorted({EngineInfo(**rt).label for rt in
                           (r["test"].get("runtime") for r in records) if rt}),
        "idcscan_version": __version__,
    }
    result["cv_config"] = json.loads((out / CV_CONFIG).read_text())["cv"]
    write_json(out / "cv.json", result)
    if records:
        plot_cv(result, tests, out / "cv.png")
    (out / "cv.md").write_text(render_cv_report(result))
    return result
