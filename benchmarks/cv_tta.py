"""Does test-time augmentation pay? Each CV fold's exported weights scored on its own test
patients with one view and with the 8 dihedral views, in PyTorch (the same network the bundle
holds; the bundle itself has whichever the recipe baked in).

Usage:
    python benchmarks/cv_tta.py CV DATA [--checkpoint last|best]

Prints per-fold and pooled out-of-fold AUC and balanced accuracy at the 50% call for both.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from idcscan.data.packed import load_packed
from idcscan.model.config import TrainConfig
from idcscan.model.finish import _best_state, _val_logits
from idcscan.model.train import build_network


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cv", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--checkpoint", default="last", choices=["last", "best"])
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ys, single, multi = [], [], []
    print("| fold | patches | AUC 1 view | AUC 8 views | bal. acc. 1 view | bal. acc. 8 views |")
    print("| --- | --- | --- | --- | --- | --- |")
    for fold_dir in sorted(args.cv.glob("fold-*"), key=lambda p: int(p.name.split("-")[1])):
        run = fold_dir / "run"
        cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text())["config"])
        net = build_network(cfg)
        ckpts = sorted((run / "checkpoints").glob("best-*.ckpt")) if args.checkpoint == "best" \
            else [run / "checkpoints" / "last.ckpt"]
        net.load_state_dict(_best_state(ckpts[-1]))
        test = load_packed(args.data, fold_dir / "splits.csv").subset("test")
        images = torch.from_numpy(np.ascontiguousarray(test.images()))
        y = np.asarray(test.label)
        p1 = 1 / (1 + np.exp(-_val_logits(net, images).astype(np.float64)))
        p8 = 1 / (1 + np.exp(-_val_logits(net, images, tta=True).astype(np.float64)))
        ys.append(y), single.append(p1), multi.append(p8)
        print(f"| {fold_dir.name} | {len(y):,} | {roc_auc_score(y, p1):.3f} | "
              f"{roc_auc_score(y, p8):.3f} | {balanced_accuracy_score(y, p1 >= 0.5):.3f} | "
              f"{balanced_accuracy_score(y, p8 >= 0.5):.3f} |", flush=True)
    y, p1, p8 = np.concatenate(ys), np.concatenate(single), np.concatenate(multi)
    print(f"| pooled | {len(y):,} | {roc_auc_score(y, p1):.3f} | {roc_auc_score(y, p8):.3f} | "
          f"{balanced_accuracy_score(y, p1 >= 0.5):.3f} | "
          f"{balanced_accuracy_score(y, p8 >= 0.5):.3f} |")


if __name__ == "__main__":
    main()
