"""Does test-time augmentation pay, and how many views? Each CV fold's exported weights
scored on its own test patients with 1, 2, 4 and 8 dihedral views (``idcscan.tta``'s sets), in
PyTorch (the same network and views the bundle's graph holds), then each view count compared
with 8 views, paired on the same patients (``idcscan.evaluation.cv_compare``).

Usage:
    python benchmarks/cv_tta.py CV DATA [--views 1 2 4 8] [--checkpoint last|best]
        [--boot 2000] [--json FILE]

Prints per-fold and pooled out-of-fold AUC and balanced accuracy at the 50% call, and for
each view count the pooled difference from 8 views with its patient-bootstrap 95% CI.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from idcscan.data.packed import load_packed
from idcscan.evaluation.cv_compare import paired_bootstrap
from idcscan.training.config import TrainConfig
from idcscan.training.finish import _best_state, _val_logits
from idcscan.training.train import build_network


def _probs(net: torch.nn.Module, images: torch.Tensor, views: int) -> np.ndarray:
    logits = _val_logits(net, images, tta=views > 1, views=max(views, 2))
    return 1 / (1 + np.exp(-logits.astype(np.float64)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cv", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--views", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--checkpoint", default="last", choices=["last", "best"])
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    views = sorted(set(args.views) | {8})
    ys, patients, probs = [], [], {v: [] for v in views}
    head = " | ".join(f"AUC {v}" for v in views) + " | " + \
        " | ".join(f"bal. acc. {v}" for v in views)
    print(f"| fold | patches | {head} |")
    print("| --- | --- |" + " --- |" * (2 * len(views)))
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
        ys.append(y), patients.append(np.asarray(test.patient).astype(str))
        row = {v: _probs(net, images, v) for v in views}
        for v in views:
            probs[v].append(row[v])
        aucs = " | ".join(f"{roc_auc_score(y, row[v]):.4f}" for v in views)
        bals = " | ".join(f"{balanced_accuracy_score(y, row[v] >= 0.5):.4f}" for v in views)
        print(f"| {fold_dir.name} | {len(y):,} | {aucs} | {bals} |", flush=True)
    y, pid = np.concatenate(ys), np.concatenate(patients)
    pooled = {v: np.concatenate(probs[v]) for v in views}
    aucs = " | ".join(f"{roc_auc_score(y, pooled[v]):.4f}" for v in views)
    bals = " | ".join(f"{balanced_accuracy_score(y, pooled[v] >= 0.5):.4f}" for v in views)
    print(f"| pooled | {len(y):,} | {aucs} | {bals} |\n")
    print(f"Paired on {np.unique(pid).size} patients ({args.boot} resamples), "
          "each view count minus 8 views:\n")
    print("| views | model evaluations per patch | AUC - AUC(8) (95% CI) | "
          "bal. acc. - bal. acc.(8) (95% CI) |")
    print("| --- | --- | --- | --- |")
    report = {}
    for v in views:
        if v == 8:
            continue
        res = paired_bootstrap(y, pooled[8], pooled[v], pid, 0.5, 0.5, n_boot=args.boot)
        report[v] = res
        cells = [f"{res[m]['difference']:+.4f} ({res[m]['ci95'][0]:+.4f} to "
                 f"{res[m]['ci95'][1]:+.4f})" for m in ("auc", "balanced_accuracy")]
        print(f"| {v} | {v} | {cells[0]} | {cells[1]} |")
    if args.json:
        args.json.write_text(json.dumps({str(k): v for k, v in report.items()}, indent=2))


if __name__ == "__main__":
    main()
