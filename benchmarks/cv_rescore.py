"""Re-score a finished CV run's out-of-fold patches with other bundles of the same folds
(e.g. each fold re-exported with another TTA view count by ``reexport_tta.py``), written in
the layout ``idcscan cv`` writes, so ``cv_compare.py`` can pair the result with any other run.

Usage:
    for i in 0 1 2 3 4; do python benchmarks/reexport_tta.py CV/fold-$i/run --views 4 \\
        --out CV4/fold-$i/run/bundle; done
    python benchmarks/cv_rescore.py CV CV4 DATA
    python benchmarks/cv_rescore.py CV4 CV4_BF16 DATA --runtime openvino --bundles CV4

Reads ``CV/oof_predictions.csv`` (which patch was tested in which fold), scores each fold's
patches with ``BUNDLES/fold-N/run/bundle`` (``BUNDLES`` defaults to OUT; the bundle's own TTA
and calibration; ``--runtime`` as on the commands, default auto), and writes
``OUT/oof_predictions.csv`` and an ``OUT/cv.json`` with per-fold AUC and balanced accuracy at
the bundle's threshold. Prints the per-fold figures, the engine, and the share of calls that
differ from CV's own out-of-fold file.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from idcscan.training.cv import write_csv
from idcscan.evaluation.metrics import binary_metrics
from idcscan.runtime.predictor import Predictor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cv", type=Path, help="finished `idcscan cv` folder")
    ap.add_argument("out", type=Path, help="folder holding fold-N/run/bundle to score with")
    ap.add_argument("data", type=Path, help="the prepared DATA both were run on")
    ap.add_argument("--bundles", type=Path, help="folder holding fold-N/run/bundle (default OUT)")
    ap.add_argument("--runtime", help="auto, onnxruntime or openvino (idcscan.runtime.engine)")
    args = ap.parse_args()
    bundles = args.bundles or args.out
    patches = np.load(args.data / "patches.npy", mmap_mode="r")
    with open(args.cv / "oof_predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    out, folds = [], []
    for fold in sorted({int(r["fold"]) for r in rows}):
        sel = [r for r in rows if int(r["fold"]) == fold]
        predictor = Predictor(bundles / f"fold-{fold}" / "run" / "bundle", runtime=args.runtime)
        idx = np.array([int(r["row"]) for r in sel])
        probs = predictor.predict_proba(np.ascontiguousarray(patches[idx]))
        labels = np.array([int(r["label"]) for r in sel])
        metrics = binary_metrics(labels, probs, predictor.threshold)
        folds.append({"fold": fold, **{k: metrics[k] for k in
                                       ("threshold", "auc", "balanced_accuracy")}})
        before = np.array([float(r["probability"]) for r in sel]) >= predictor.threshold
        changed = float(np.mean(before != (probs >= predictor.threshold)))
        print(f"fold {fold}: {len(sel):,} patches, AUC {folds[-1]['auc']:.4f}, "
              f"balanced accuracy {folds[-1]['balanced_accuracy']:.4f} ({predictor.engine.info}; "
              f"calls differing from {args.cv.name}: {changed:.2%})")
        out += [{**r, "probability": f"{p:.6f}"} for r, p in zip(sel, probs)]
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "oof_predictions.csv",
              ["row", "patient", "fold", "label", "probability"], out)
    (args.out / "cv.json").write_text(json.dumps({"folds": folds}, indent=1))


if __name__ == "__main__":
    main()
