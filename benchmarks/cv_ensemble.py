"""Out-of-fold predictions of CV runs at a chosen number of TTA views, and of their average:
what an ensemble of those recipes would have scored, at a chosen cost per patch.

Usage:
    python benchmarks/cv_ensemble.py DATA CV [CV ...] --views 2 --out DIR

Every fold's exported weights (``last.ckpt``) are scored on the fold's own test patients in
PyTorch with ``--views`` dihedral views (the same network and views a bundle's graph holds).
For each CV run this writes ``DIR/<run>-<views>v/`` and for their mean P(IDC) (what
``training.ensemble`` builds) ``DIR/ensemble-<views>v/``, each holding the two files
``benchmarks/cv_compare.py`` reads: ``oof_predictions.csv`` (row, patient, fold, label,
probability) and ``cv.json`` (per-fold AUC and balanced accuracy at the 50% call, pooled
metrics with patient-bootstrap intervals). The per-member CSVs are what
``idcscan build-shipped --oof`` takes.

With ``--bundles`` it also writes each fold's bundles at ``--views``: every run's model
(``DIR/<run>-<views>v/fold-N/run/bundle``) and their ensemble graph
(``DIR/ensemble-<views>v/fold-N/run/bundle``, ``training.ensemble``), with the CV plan beside
them, so ``benchmarks/cv_slides.py DIR/ensemble-2v DATA KAGGLE`` maps the complete patients
with the very graphs that would ship.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import shutil
import sys

import numpy as np
import torch

from idcscan.data.packed import load_packed
from idcscan.evaluation.metrics import binary_metrics, summarize
from idcscan.training.config import TrainConfig
from idcscan.training.finish import _best_state, _val_logits
from idcscan.training.train import build_network

sys.path.insert(0, str(Path(__file__).parent))
from reexport_tta import reexport  # noqa: E402


def fold_dirs(cv: Path) -> list[Path]:
    return sorted(cv.glob("fold-*"), key=lambda p: int(p.name.split("-")[1]))


def score_run(cv: Path, data: Path, views: int) -> dict[str, np.ndarray]:
    """rows, folds, patients, labels and P(IDC) of every test patch of every fold."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("row", "fold", "patient", "label",
                                                          "probability")}
    for fold_dir in fold_dirs(cv):
        run = fold_dir / "run"
        cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text())["config"])
        net = build_network(cfg)
        net.load_state_dict(_best_state(run / "checkpoints" / "last.ckpt"))
        test = load_packed(data, fold_dir / "splits.csv").subset("test")
        images = torch.from_numpy(np.ascontiguousarray(test.images()))
        logits = _val_logits(net.eval(), images, tta=views > 1, views=max(views, 2))
        parts["row"].append(np.asarray(test.rows))
        parts["fold"].append(np.full(len(test), int(fold_dir.name.split("-")[1])))
        parts["patient"].append(np.asarray(test.patient).astype(str))
        parts["label"].append(np.asarray(test.label))
        parts["probability"].append(1 / (1 + np.exp(-logits.astype(np.float64))))
        print(f"  {cv.name} {fold_dir.name}: {len(test):,} patches", flush=True)
    return {k: np.concatenate(v) for k, v in parts.items()}


def write_cv_like(out: Path, scored: dict[str, np.ndarray], boot: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "oof_predictions.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["row", "patient", "fold", "label", "probability"])
        for r, p, f, y, q in zip(scored["row"], scored["patient"], scored["fold"],
                                 scored["label"], scored["probability"]):
            writer.writerow([int(r), p, int(f), int(y), f"{q:.6f}"])
    folds = []
    for f in np.unique(scored["fold"]):
        sel = scored["fold"] == f
        m = binary_metrics(scored["label"][sel], scored["probability"][sel], 0.5)
        folds.append({"fold": int(f), "threshold": 0.5, "auc": m["auc"],
                      "balanced_accuracy": m["balanced_accuracy"]})
    pooled = summarize(scored["label"], scored["probability"], scored["patient"], 0.5,
                       n_boot=boot)
    summary = {"folds": folds, "pooled": pooled}
    (out / "cv.json").write_text(json.dumps(summary, indent=2))
    return summary


def write_bundles(cvs: list[Path], views: int, out: Path) -> None:
    """Each fold's models at ``views`` views and their ensemble, as CV folders."""
    from idcscan.training.ensemble import build_ensemble

    names = [f"{cv.name}-{views}v" for cv in cvs] + (
        [f"ensemble-{views}v"] if len(cvs) > 1 else [])
    for name in names:
        (out / name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cvs[0] / "folds.json", out / name / "folds.json")
    for fold in fold_dirs(cvs[0]):
        members = []
        for cv in cvs:
            target = out / f"{cv.name}-{views}v" / fold.name / "run" / "bundle"
            reexport(cv / fold.name / "run", views, target)
            members.append(target)
        if len(cvs) > 1:
            build_ensemble(members, out / f"ensemble-{views}v" / fold.name / "run" / "bundle",
                           threshold=0.5, threshold_rule="fixed 0.5")
        print(f"  bundles of {fold.name} written", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path, help="the packed dataset the CV runs used")
    ap.add_argument("cv", type=Path, nargs="+", help="finished `idcscan cv` folders")
    ap.add_argument("--views", type=int, default=2, choices=[1, 2, 4, 8])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--bundles", action="store_true",
                    help="also write each fold's bundles at --views and their ensemble")
    args = ap.parse_args()
    if args.bundles:
        write_bundles(args.cv, args.views, args.out)
    runs = [score_run(cv, args.data, args.views) for cv in args.cv]
    order = [np.lexsort((r["row"], r["fold"])) for r in runs]
    runs = [{k: v[o] for k, v in r.items()} for r, o in zip(runs, order)]
    for r in runs[1:]:
        if not (np.array_equal(r["row"], runs[0]["row"])
                and np.array_equal(r["fold"], runs[0]["fold"])):
            raise SystemExit("The CV runs did not test the same patches in the same folds.")
    print("| scored | views | pooled AUC (95% CI) | balanced accuracy (95% CI) |")
    print("| --- | --- | --- | --- |")
    named = [(f"{cv.name}-{args.views}v", r) for cv, r in zip(args.cv, runs)]
    if len(runs) > 1:
        mean = dict(runs[0], probability=np.mean([r["probability"] for r in runs], axis=0))
        named.append((f"ensemble-{args.views}v", mean))
    for name, scored in named:
        p = write_cv_like(args.out / name, scored, args.boot)["pooled"]
        ci = p["ci95"]
        print(f"| {name} | {args.views} | {p['auc']:.4f} ({ci['auc'][0]:.4f}-"
              f"{ci['auc'][1]:.4f}) | {p['balanced_accuracy']:.4f} "
              f"({ci['balanced_accuracy'][0]:.4f}-{ci['balanced_accuracy'][1]:.4f}) |")


if __name__ == "__main__":
    main()
