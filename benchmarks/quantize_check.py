"""An int8 bundle against its fp32 original on patients neither trained on: AUC, balanced
accuracy, changed calls and speed, side by side.

    idcscan quantize CV/fold-0/run/bundle --out INT8 --calibration DATA
    python benchmarks/quantize_check.py CV/fold-0 INT8 DATA

CV/fold-0 is a fold folder of ``idcscan cv`` (its ``splits.csv`` names the fold's test
patients, whom its ``run/bundle`` never saw); DATA the packed dataset it was run on.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from idcscan.data.packed import load_packed
from idcscan.runtime.predictor import Predictor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("fold", type=Path, help="a fold folder of `idcscan cv`")
    ap.add_argument("int8", type=Path, help="the int8 bundle made from FOLD/run/bundle")
    ap.add_argument("data", type=Path, help="the packed dataset the CV ran on")
    args = ap.parse_args()
    test = load_packed(args.data, splits=args.fold / "splits.csv").subset("test")
    images, labels = test.images(), test.label
    probs = {}
    for name, bundle in (("fp32", args.fold / "run" / "bundle"), ("int8", args.int8)):
        predictor = Predictor(bundle)
        t0 = time.perf_counter()
        probs[name] = np.concatenate([predictor.predict_proba(images[i:i + 64])
                                      for i in range(0, len(images), 64)])  # fmt: skip
        rate = len(images) / (time.perf_counter() - t0)
        print(f"{name}: {len(images)} patches of {len(set(test.patient))} patients, "
              f"AUC {roc_auc_score(labels, probs[name]):.4f}, balanced accuracy (50%) "
              f"{balanced_accuracy_score(labels, probs[name] >= 0.5):.4f}, "
              f"{rate:.0f} images/s at batch 64")
    same = np.mean((probs["fp32"] >= 0.5) == (probs["int8"] >= 0.5))
    print(f"mean |ΔP(IDC)| {np.abs(probs['fp32'] - probs['int8']).mean():.4f}; "
          f"same call {same:.1%}")


if __name__ == "__main__":
    main()
