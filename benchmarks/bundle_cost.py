"""Cost per patch of two bundles, measured side by side: images per second on this CPU.

Usage:
    python benchmarks/bundle_cost.py BUNDLE_A BUNDLE_B [--runtime onnxruntime] [--batch 64]
        [--rounds 12] [--seconds 3]

Both bundles (paths or shipped names) run on the same engine, in alternating rounds of
``--seconds`` each, so a machine that gets busier or quieter during the run slows both alike;
the median images/s of each and their ratio are printed. Inputs are real-looking random
patches (uint8, 50 x 50); a model's cost does not depend on what the patch shows.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from idcscan.runtime.predictor import Predictor


def rate(predictor: Predictor, patches: np.ndarray, seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        predictor.predict_proba(patches)
        done += len(patches)
    return done / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "openvino"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    patches = np.random.default_rng(0).integers(0, 256, (args.batch, 50, 50, 3), np.uint8)
    predictors = {name: Predictor(name, runtime=args.runtime, batch_size=args.batch)
                  for name in (args.a, args.b)}
    for p in predictors.values():  # warm up: graph compilation, first allocations
        rate(p, patches, 1.0)
    rates: dict[str, list[float]] = {name: [] for name in predictors}
    for _ in range(args.rounds):
        for name, p in predictors.items():
            rates[name].append(rate(p, patches, args.seconds))
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
          f"engine {args.runtime}, batch {args.batch}, {args.rounds} alternating rounds of "
          f"{args.seconds:g} s\n")
    print("| bundle | views x members | images/s (median) | min - max |")
    print("| --- | --- | --- | --- |")
    for name, values in rates.items():
        card = predictors[name].card
        extra = card.model_extra or {}
        views = (extra.get("tta") or {}).get("views", 1)
        members = len((extra.get("ensemble") or {}).get("members") or []) or 1
        print(f"| {name} | {views} x {members} | {statistics.median(values):.1f} | "
              f"{min(values):.1f} - {max(values):.1f} |")
    a, b = (statistics.median(rates[n]) for n in (args.a, args.b))
    print(f"\nB / A images per second: {b / a:.3f} (B costs {a / b:.3f} times A per patch)")


if __name__ == "__main__":
    main()
