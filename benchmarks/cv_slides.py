"""Slide mode under cross-validation: every complete patient scored by a fold model that never
trained on it (nor chose its checkpoint, calibration or threshold from it).

For each complete patient of the packed dataset, the CV plan (``CV/folds.json``, written by
``idcscan cv``) names the fold whose *test* patients include it; that fold's exported bundle
maps the patient's mosaic exactly as ``idcscan mosaic`` + ``idcscan slide`` would, and the
tiles are compared with the patch labels at the same place (see ``mosaic_slides.py``).

Usage:
    python benchmarks/cv_slides.py CV DATA KAGGLE_DIR --out DIR [--repeat 0]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from mosaic_slides import is_complete, report, score_patient  # noqa: E402

from idcscan.data.kaggle import layout_roots  # noqa: E402
from idcscan.data.packed import load_packed  # noqa: E402
from idcscan.runtime.predictor import Predictor  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cv", type=Path, help="folder written by `idcscan cv`")
    ap.add_argument("data", type=Path, help="the packed dataset it cross-validated")
    ap.add_argument("kaggle", type=Path, help="the Kaggle folder DATA was prepared from")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--repeat", type=int, default=0, help="which CV repeat's folds to use")
    args = ap.parse_args()

    plan = [f for f in json.loads((args.cv / "folds.json").read_text())
            if f["repeat"] == args.repeat]
    fold_of = {p: f["index"] for f in plan for p in f["test"]}
    root = layout_roots(args.kaggle)[0]
    patients = sorted(set(load_packed(args.data).patient.tolist()))
    complete = [p for p in patients if (root / p).is_dir() and is_complete(root / p)]
    print(f"{len(patients)} patients, {len(complete)} complete")

    rows, all_labels, all_probs = [], [], []
    predictors: dict[int, Predictor] = {}
    for pid in complete:
        index = fold_of[pid]
        bundle = args.cv / f"fold-{index}" / "run" / "bundle"
        predictor = predictors.setdefault(index, Predictor(bundle))
        row, labels, probs = score_patient(predictor, root / pid, args.out)
        row["fold"] = index
        rows.append(row)
        all_labels.append(labels)
        all_probs.append(probs)
    report(rows, all_labels, all_probs, args.out / "cv_slides.json", extra_columns=("fold",))


if __name__ == "__main__":
    main()
