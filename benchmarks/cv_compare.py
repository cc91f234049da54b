"""Is recipe B better than recipe A? Two `idcscan cv` runs on the same folds, compared paired.

Usage:
    python benchmarks/cv_compare.py CV_A CV_B [--boot 2000] [--json FILE]

Prints each fold's AUC and balanced accuracy for both, the per-fold differences (mean, sd,
folds won), and the pooled out-of-fold difference with a 95% interval from a patient bootstrap
that draws the same patients for both recipes (idcscan.evaluation.cv_compare), then one line
saying whether that interval clears zero. This is how docs/RESULTS.md decides a default.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from idcscan.evaluation.cv_compare import COMPARED, compare_cv, verdict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", type=Path, help="the reference CV folder (e.g. the default recipe)")
    ap.add_argument("b", type=Path, help="the candidate CV folder")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples of patients")
    ap.add_argument("--json", type=Path, help="also write the whole comparison here")
    args = ap.parse_args()
    result = compare_cv(args.a, args.b, n_boot=args.boot)
    print(f"A = {args.a}\nB = {args.b}\n{result['n_patients']} patients, "
          f"{result['n_patches']} patches, {args.boot} paired patient resamples\n")
    print("| fold | AUC A | AUC B | B - A | bal. acc. A | bal. acc. B | B - A |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for f in result["folds"]:
        print(f"| {f['fold']} | {f['auc_a']:.4f} | {f['auc_b']:.4f} | "
              f"{f['auc_b'] - f['auc_a']:+.4f} | {f['balanced_accuracy_a']:.4f} | "
              f"{f['balanced_accuracy_b']:.4f} | "
              f"{f['balanced_accuracy_b'] - f['balanced_accuracy_a']:+.4f} |")
    for m, s in result["per_fold"].items():
        sd = f" ± {s['sd_difference']:.4f}" if s["sd_difference"] is not None else ""
        print(f"\nper fold, {m}: B - A = {s['mean_difference']:+.4f}{sd}, "
              f"B ahead in {s['folds_b_ahead']} of {s['folds']} folds")
    print("\n| pooled out of fold | A | B | B - A (95% CI, paired) | resamples with B ahead |")
    print("| --- | --- | --- | --- | --- |")
    for m in COMPARED:
        p = result["pooled"][m]
        low, high = p["ci95"]
        print(f"| {m} | {p['a']:.4f} | {p['b']:.4f} | {p['difference']:+.4f} "
              f"({low:+.4f} to {high:+.4f}) | {p['share_b_ahead']:.0%} |")
    print()
    print(verdict(result, "auc"))
    print(verdict(result, "balanced_accuracy"))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
