"""How should slide mode turn tile probabilities into an IDC fraction? Counting rules compared
under CV, on the tiles ``cv_slides.py`` already scored.

Slide mode reports the IDC share of a slide's tissue. The shipped rule counts the tiles whose
context P(IDC) reaches the area threshold (IDC more likely than not at the training IDC
share, ``idcscan.runtime.labels.area_threshold``). Counting is pulled towards the training
share, so a slide that is mostly IDC reads low. Two rules from the quantification literature
avoid that pull without a free parameter, so they can be judged on the 21 complete patients
without being tuned to them:

* ``mean``: probabilistic classify-and-count, the mean of P(IDC) moved to the training share
  (the expected IDC share if P(IDC) is calibrated there);
* ``em``: the IDC share that maximum-likelihood prior adaptation settles on (Saerens,
  Latinne & Decaestecker, 2002), starting from the training share;

each on the context probabilities (``probability`` in tiles.csv) and on the tiles scored
alone (``patch_probability``). Prints each patient's fractions, then per rule the mean and
median absolute error, patients within 0.08, and the paired difference from the shipped
rule with a 95% interval from resampling patients.

Usage:
    python benchmarks/slide_counting_rules.py CVS CV [--boot 5000] [--repeat 0]

CVS is the ``--out`` folder of ``cv_slides.py``; CV the ``idcscan cv`` folder whose fold
bundles scored it (their cards give each fold's area threshold).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from mosaic_slides import read_csv  # noqa: E402

from idcscan.runtime.bundle import load_bundle  # noqa: E402
from idcscan.runtime.labels import area_threshold  # noqa: E402
from idcscan.runtime.predictor import sigmoid  # noqa: E402

_EPS = 1e-6


def logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p / (1.0 - p))


def em_prior(p: np.ndarray, train_prior: float, iterations: int = 500) -> float:
    """Saerens et al. (2002): the test prior under which the re-weighted posteriors agree."""
    prior = train_prior
    for _ in range(iterations):
        a = p * prior / train_prior
        b = (1.0 - p) * (1.0 - prior) / (1.0 - train_prior)
        new = float(np.mean(a / (a + b)))
        if abs(new - prior) < 1e-8:
            return new
        prior = new
    return prior


def rules(threshold: float) -> dict[str, Callable[[np.ndarray], float]]:
    """The rules for one bundle. ``threshold`` is where its P(IDC) means "at the training share"."""
    shift = float(logit(threshold))
    train_prior = 1.0 - threshold

    def at_training_share(p: np.ndarray) -> np.ndarray:
        return sigmoid(logit(p) - shift)

    return {
        "count (shipped)": lambda p: float(np.mean(p >= threshold)),
        "mean": lambda p: float(np.mean(at_training_share(p))),
        "em": lambda p: em_prior(at_training_share(p), train_prior),
    }


def read_tiles(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = read_csv(path)
    context = np.array([float(r["probability"]) for r in rows])
    alone = np.array([float(r.get("patch_probability") or r["probability"]) for r in rows])
    return context, alone


def paired_interval(diff: np.ndarray, n_boot: int, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cvs", type=Path, help="the --out folder of benchmarks/cv_slides.py")
    ap.add_argument("cv", type=Path, help="the idcscan cv folder whose bundles scored it")
    ap.add_argument("--boot", type=int, default=5000, help="patient resamples")
    args = ap.parse_args()

    patients = json.loads((args.cvs / "cv_slides.json").read_text())["patients"]
    thresholds: dict[int, float] = {}
    truth, estimates = [], {}
    for row in patients:
        fold = int(row["fold"])
        if fold not in thresholds:
            card = load_bundle(args.cv / f"fold-{fold}" / "run" / "bundle", verify=False).card
            thresholds[fold] = area_threshold(card)[0]
        folder = args.cvs / "slides" / row["patient"]
        tiles = next(folder.glob("*/tiles.csv"))
        context, alone = read_tiles(tiles)
        truth.append(float(row["idc_fraction_true"]))
        for name, rule in rules(thresholds[fold]).items():
            estimates.setdefault(f"{name}, context", []).append(rule(context))
            estimates.setdefault(f"{name}, alone", []).append(rule(alone))

    t = np.array(truth)
    names = list(estimates)
    print("| patient | truth | " + " | ".join(names) + " |")
    print("| --- | --- |" + " --- |" * len(names))
    for i, row in enumerate(patients):
        print(f"| {row['patient']} | {t[i]:.3f} | "
              + " | ".join(f"{estimates[n][i]:.3f}" for n in names) + " |")

    shipped = np.abs(np.array(estimates[names[0]]) - t)
    print(f"\n{len(t)} patients, {args.boot} paired patient resamples\n")
    print("| rule | mean error | median error | within 0.08 | minus shipped (95% CI) |")
    print("| --- | --- | --- | --- | --- |")
    for n in names:
        err = np.abs(np.array(estimates[n]) - t)
        lo, hi = paired_interval(err - shipped, args.boot)
        diff = "" if n == names[0] else f"{np.mean(err - shipped):+.4f} ({lo:+.4f} to {hi:+.4f})"
        print(f"| {n} | {err.mean():.4f} | {np.median(err):.4f} | "
              f"{np.count_nonzero(err <= 0.08)}/{len(err)} | {diff} |")


if __name__ == "__main__":
    main()
