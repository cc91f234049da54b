"""Re-export a trained run's bundle with another in-graph TTA (2, 4 or 8 views, or none), to
measure what the view count costs at inference (serve_load.py, predictor_throughput.py)
without training again.

Usage:
    python benchmarks/reexport_tta.py RUN --views 2 --out BUNDLE_2V

The weights are the run's exported ones (``last.ckpt`` for ``--select last``); the card is
the run's own (threshold, calibration, data, metrics) with ``tta`` replaced. Only runs whose
calibration and threshold do not depend on the TTA outputs (calibration none, a fixed
threshold: the default) are accepted, since nothing here refits them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from idcscan.training.config import TrainConfig
from idcscan.training.export import export_bundle
from idcscan.training.finish import _best_state, check_onnx
from idcscan.training.train import build_network

#: card fields export_bundle writes itself
OWN_FIELDS = {"format_version", "name", "version", "backbone", "input_size", "patch_size",
              "mpp", "preprocessing", "onnx_file", "onnx_sha256", "versions", "created",
              "disclaimer", "tta", "card_sha256"}


def reexport(run: Path, views: int, out: Path) -> dict:
    """Write ``out``: the run's exported weights with ``views`` TTA views (1: none); returns
    the run's card."""
    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text())["config"])
    if cfg.calibration != "none" or cfg.threshold_rule == "balanced" or cfg.select != "last":
        raise SystemExit("Only runs with --calibration none, a fixed --threshold-rule and "
                         "--select last can be re-exported without refitting.")
    net = build_network(cfg)
    net.load_state_dict(_best_state(run / "checkpoints" / "last.ckpt"))
    card = json.loads((run / "bundle" / "model.json").read_text())
    fields = {k: v for k, v in card.items() if k not in OWN_FIELDS}
    tta = views > 1
    export_bundle(net.eval(), out, tta=tta, tta_views=max(views, 2), **fields)
    import numpy as np
    import torch
    probe = torch.from_numpy(np.random.default_rng(0).integers(
        0, 256, (8, net.pre.patch_size, net.pre.patch_size, 3), dtype=np.uint8))
    check_onnx(net, out, probe, tta=tta, views=max(views, 2))
    return card


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--views", type=int, required=True, choices=[1, 2, 4, 8],
                    help="1: no TTA")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    card = reexport(args.run, args.views, args.out)
    print(f"{args.out}: {args.views} view(s), threshold {card['threshold']}")


if __name__ == "__main__":
    main()
