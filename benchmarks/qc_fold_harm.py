"""What a fold that QC misses does to the map: the same tiles scored clean and folded, by a
CV fold model that never saw the patient.

QC catches few painted folds (docs/BENCHMARKS.md, "Artefact QC"), so the question a reader of
the map has is which way a missed fold pushes it. For every complete Kaggle patient in the
CV plan, its mosaic is folded ``--reps`` times by ``qc_fold_rules.py``'s generators (seeded
with the patient id, as there), and each tissue tile at least 1/4 covered by the doubled
layer is scored twice by the fold model whose *test* patients include the patient: as it
was, and folded. Tiles with any glass of a flap's lifted strip in them are left out, so
only the second layer differs. Tiles are scored alone (no slide-mode context) at the
bundle's threshold; the truth is the Kaggle label of the patch at that place, i.e. of the
lower layer (the upper one is the neighbouring tissue, mirrored).

Printed per tissue class (IDC, benign): tiles, share called IDC clean and folded, median
P(IDC), and the change in the called share with a 95% interval from resampling patients.

    python benchmarks/qc_fold_harm.py CV ../shared/data/idc-kaggle-subset/IDC_regular_ps50_idx5 \
        --fold flap --runtime onnxruntime
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from mosaic_slides import is_complete  # noqa: E402
from qc_accuracy import TILE, screen, tile_pixels, tiles_of  # noqa: E402
from qc_fold_rules import fold_and_clean_tiles, paint_fold  # noqa: E402

from idcscan.data.kaggle import layout_roots  # noqa: E402
from idcscan.data.mosaic import build_mosaic  # noqa: E402
from idcscan.runtime.predictor import Predictor  # noqa: E402
from idcscan.slides.qc import QCParams  # noqa: E402
from idcscan.slides.tissue import tile_fractions  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cv", type=Path, help="folder written by `idcscan cv`")
    ap.add_argument("kaggle", type=Path, help="the Kaggle folder (as cv_slides.py takes it)")
    ap.add_argument("--fold", choices=["band", "flap"], default="flap")
    ap.add_argument("--reps", type=int, default=3, help="folded copies per patient")
    ap.add_argument("--repeat", type=int, default=0, help="which CV repeat's folds to use")
    ap.add_argument("--runtime", default=None, help="engine: auto, onnxruntime or openvino")
    ap.add_argument("--boot", type=int, default=5000, help="patient resamples for the CIs")
    args = ap.parse_args()

    plan = [f for f in json.loads((args.cv / "folds.json").read_text())
            if f["repeat"] == args.repeat]  # fmt: skip
    fold_of = {str(p): f["index"] for f in plan for p in f["test"]}
    root = layout_roots(args.kaggle)[0]
    patients = sorted(p for p in fold_of if (root / p).is_dir() and is_complete(root / p))
    predictors: dict[int, Predictor] = {}
    # per patient: (IDC label, called clean, called folded, P clean, P folded) per fold tile
    per_patient: dict[str, np.ndarray] = {}
    for pid in patients:
        index = fold_of[pid]
        if index not in predictors:
            bundle = args.cv / f"fold-{index}" / "run" / "bundle"
            predictors[index] = Predictor(bundle, runtime=args.runtime)
        predictor = predictors[index]
        mosaic = build_mosaic(root / pid)
        image = mosaic.image
        xs, ys, tissue_tiles = screen(image, QCParams(enabled=False))
        tissue = tile_pixels(image.shape, xs[tissue_tiles], ys[tissue_tiles])
        rng = np.random.default_rng(int(pid))
        rows = []
        for _ in range(args.reps):
            folded, doubled, lifted, _ = paint_fold(args.fold, image, tissue, rng)
            # glass from a lifted strip in a tile would confound it: such tiles are not fold tiles
            fold, _ = fold_and_clean_tiles(doubled, lifted, None, xs, ys, tissue_tiles)
            idx = np.flatnonzero(fold)
            if not len(idx):
                continue
            idc = tile_fractions(mosaic.truth, xs[idx], ys[idx], TILE, 1.0) >= 0.5
            before = predictor.predict_proba(tiles_of(image, xs, ys, idx))
            after = predictor.predict_proba(tiles_of(folded, xs, ys, idx))
            t = predictor.threshold
            rows.append(np.column_stack([idc, before >= t, after >= t, before, after]))
        per_patient[pid] = np.concatenate(rows) if rows else np.empty((0, 5))
        n_idc = int(per_patient[pid][:, 0].sum())
        print(f"{pid} (fold {index}): {len(per_patient[pid])} fold tiles, {n_idc} IDC", flush=True)

    rng = np.random.default_rng(0)
    print(f"\n{args.fold} folds, {len(patients)} patients, {args.reps} per patient")
    print("| tissue under the fold | tiles | called IDC, clean | folded | median P(IDC), clean "
          "| folded | folded - clean, called share (95% CI) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, name in ((1, "IDC"), (0, "benign")):
        parts = [rows[rows[:, 0] == label] for rows in per_patient.values()]
        allrows = np.concatenate(parts)
        diff = allrows[:, 2].mean() - allrows[:, 1].mean()
        boots = []
        for _ in range(args.boot):
            pick = np.concatenate([parts[i] for i in rng.integers(len(parts), size=len(parts))])
            if len(pick):
                boots.append(pick[:, 2].mean() - pick[:, 1].mean())
        lo, hi = np.percentile(boots, [2.5, 97.5])
        print(f"| {name} | {len(allrows)} | {allrows[:, 1].mean():.1%} | {allrows[:, 2].mean():.1%} "
              f"| {np.median(allrows[:, 3]):.3f} | {np.median(allrows[:, 4]):.3f} "
              f"| {diff:+.1%} ({lo:+.1%} to {hi:+.1%}) |")


if __name__ == "__main__":
    main()
