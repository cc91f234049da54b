"""Candidate fold rules against the shipped one, on development and held-out patients.

Folds are the artefact QC does not catch (docs/BENCHMARKS.md, "Artefact QC"). A rule chosen
on the 5 patients ``qc_accuracy.py`` uses could be tuned to them, so this script scores
candidates on any list of complete Kaggle patients: choose on one list, report on another.

Each patient's mosaic is painted ``--reps`` times with a fold, at places drawn from a
generator seeded with the patient id, and screened exactly as slide mode does with the
candidate in place of ``qc.fold_mask``. Printed per candidate: caught (fold tiles at least
1/4 covered that QC left out) and clean loss (untouched tissue tiles left out, on the clean
mosaic and on the painted copies).

Folds (``--fold``):
  band   the fold of ``qc_accuracy.py``: a 240 x 800 µm band whose transmission is squared
         (the tissue laid exactly on itself, so every texture lines up)
  flap   a strip of tissue (160-320 x 800 µm) flipped over a line onto its neighbour, as
         sections fold at a cut or a tear: the strip's place becomes glass, and the tissue
         beyond the line is covered by the strip's mirror image, transmissions multiplied
         (Beer-Lambert). The two layers are different tissue, so gaps in one are covered by
         the other. The footprint is where tissue tiles lie under tissue tiles (gaps inside
         a tile count); where the mirror falls on glass the flap is one layer only. A tile
         with any of the lifted strip's glass in it is not a fold tile (it may be left out
         for lack of tissue, not for the fold), and no tile the flap touched is clean.

Candidates (``--rules``):
  shipped              the rule in idcscan.slides.qc (darkness against the slide's tissue)
  saturation:P:K       "as saturated as K stacked layers of typical tissue": min/max of RGB
                       (1 - HSV saturation), 5-pixel mean, below its P-th tissue percentile
                       raised to K. Under Beer-Lambert a doubled layer squares each
                       channel's transmission, so min/max goes to its square: P 50, K 2 is
                       "a fold of the slide's median tissue".
  floor:Q:R            "its lightest spots are dark": a doubled layer of different tissue
                       covers the gaps and pale cytoplasm of each layer, so the local
                       Q-th percentile of grey (7-pixel window, ~90 µm on slide mode's
                       thumbnail) falls below R times the tissue's median of that statistic.

    python benchmarks/qc_fold_rules.py ../shared/data/idc-kaggle-subset/IDC_regular_ps50_idx5 \
        --patients 9123 9126 8864 8956 9023 --rules shipped saturation:50:2 saturation:10:1.5
    python benchmarks/qc_fold_rules.py ../shared/data/idc-kaggle-subset/IDC_regular_ps50_idx5 \
        --patients 9123 9126 8864 8956 9023 --fold flap --rules shipped floor:90:0.85
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))

from qc_accuracy import TILE, paint, screen, tile_pixels  # noqa: E402

import idcscan.slides.qc as qc  # noqa: E402
from idcscan.data.mosaic import build_mosaic  # noqa: E402
from idcscan.slides.tissue import tile_fractions  # noqa: E402

FoldRule = Callable[..., np.ndarray]
SHIPPED: FoldRule = qc.fold_mask


def saturation_rule(percentile: float, layers: float) -> FoldRule:
    def fold_mask(rgb: np.ndarray, tissue: np.ndarray, mpp: float,
                  params: qc.QCParams = qc.QCParams()) -> np.ndarray:
        if not tissue.any():
            return np.zeros_like(tissue)
        f = rgb.astype(np.float32)
        ratio = ndimage.uniform_filter(f.min(axis=2) / np.maximum(f.max(axis=2), 1.0), size=5)
        typical = float(np.percentile(ratio[tissue], percentile))
        found = ndimage.binary_closing(ratio < typical**layers, iterations=2) & tissue
        return qc._drop_small(found, params.fold_min_um2 / (mpp * mpp))

    return fold_mask


def floor_rule(percentile: float, relative: float) -> FoldRule:
    def fold_mask(rgb: np.ndarray, tissue: np.ndarray, mpp: float,
                  params: qc.QCParams = qc.QCParams()) -> np.ndarray:
        if not tissue.any():
            return np.zeros_like(tissue)
        light = ndimage.percentile_filter(qc._gray(rgb), percentile, size=7)
        typical = float(np.median(light[tissue]))
        found = ndimage.binary_closing(light < relative * typical, iterations=2) & tissue
        return qc._drop_small(found, params.fold_min_um2 / (mpp * mpp))

    return fold_mask


RULES = {"saturation": saturation_rule, "floor": floor_rule}


def parse_rule(text: str) -> FoldRule:
    if text == "shipped":
        return SHIPPED
    kind, a, b = text.split(":")
    if kind not in RULES:
        raise SystemExit(f"unknown rule {text!r}")
    return RULES[kind](float(a), float(b))


#: flap centres lie this far inside the image, beyond the flap's reach (hypot(80, 100) px)
FLAP_MARGIN = 140


def paint_flap(
    image: np.ndarray, tissue: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A copy of ``image`` with a flap folded over (``--fold flap``); where it lies doubled,
    the lifted strip (now glass), and everything the flap touched."""
    h, w = tissue.shape
    m = FLAP_MARGIN
    ys, xs = np.nonzero(tissue[m:-m, m:-m])
    i = rng.integers(len(xs))
    cx, cy = xs[i] + m, ys[i] + m
    angle = rng.uniform(0, np.pi)
    nx, ny = np.cos(angle), np.sin(angle)
    width = rng.uniform(40, 80)  # px at 4 µm/px
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    across = (xx - cx) * nx + (yy - cy) * ny
    along = np.abs(-(xx - cx) * ny + (yy - cy) * nx) <= 100
    covered = (across >= 0) & (across <= width) & along
    lifted = (across < 0) & (across >= -width) & along
    mx = np.clip(np.round(xx - 2 * across * nx), 0, w - 1).astype(int)
    my = np.clip(np.round(yy - 2 * across * ny), 0, h - 1).astype(int)
    f = image.astype(np.float32)
    out = f.copy()
    out[covered] = f[covered] * f[my, mx][covered] / 255.0
    out[lifted] = 250.0 + rng.normal(0.0, 1.5, size=(int(lifted.sum()), 3))
    doubled = covered & tissue & tissue[my, mx]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), doubled, lifted, covered | lifted


def paint_fold(
    kind: str, image: np.ndarray, tissue: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``--fold`` ``kind`` painted on a copy of ``image``: (image, doubled, lifted, touched);
    the band lifts nothing and touches only where it lies (None, None)."""
    if kind == "flap":
        return paint_flap(image, tissue, rng)
    return (*paint("fold", image, tissue, rng), None, None)


def fold_and_clean_tiles(
    doubled: np.ndarray, lifted: np.ndarray | None, touched: np.ndarray | None,
    xs: np.ndarray, ys: np.ndarray, tissue_tiles: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per tile: a fold tile (tissue, >= 1/4 doubled, none of a lifted strip's glass) and a
    clean one (tissue the fold did not touch)."""
    cover = tile_fractions(doubled, xs, ys, TILE, 1.0)
    fold, clean = tissue_tiles & (cover >= 0.25), tissue_tiles & (cover == 0)
    if lifted is not None:
        fold &= tile_fractions(lifted, xs, ys, TILE, 1.0) == 0
    if touched is not None:
        clean &= tile_fractions(touched, xs, ys, TILE, 1.0) == 0
    return fold, clean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path, help="Kaggle folder (IDC_regular_ps50_idx5)")
    ap.add_argument("--patients", nargs="+", required=True)
    ap.add_argument("--rules", nargs="+", default=["shipped", "saturation:50:2"])
    ap.add_argument("--reps", type=int, default=3, help="painted copies per patient")
    ap.add_argument("--fold", choices=["band", "flap"], default="band",
                    help="how the fold is painted (see above)")
    args = ap.parse_args()
    rules = {name: parse_rule(name) for name in args.rules}
    totals = {name: np.zeros(4, dtype=np.int64) for name in rules}  # caught, folds, lost, clean
    print("| patient | rule | fold tiles | caught | clean tiles | clean loss |")
    print("| --- | --- | --- | --- | --- | --- |")
    for pid in args.patients:
        image = build_mosaic(args.data / pid).image
        qc.fold_mask = SHIPPED
        xs, ys, tissue_tiles = screen(image, qc.QCParams(enabled=False))
        tissue = tile_pixels(image.shape, xs[tissue_tiles], ys[tissue_tiles])
        rng = np.random.default_rng(int(pid))
        painted = [paint_fold(args.fold, image, tissue, rng) for _ in range(args.reps)]
        for name, rule in rules.items():
            qc.fold_mask = rule
            row = np.zeros(4, dtype=np.int64)
            _, _, scored = screen(image, qc.QCParams())
            row[2:] += [(tissue_tiles & ~scored).sum(), tissue_tiles.sum()]
            for copy, foot, lifted, touched in painted:
                _, _, scored = screen(copy, qc.QCParams())
                fold, clean = fold_and_clean_tiles(foot, lifted, touched, xs, ys, tissue_tiles)
                row += [(fold & ~scored).sum(), fold.sum(), (clean & ~scored).sum(), clean.sum()]
            totals[name] += row
            print(f"| {pid} | {name} | {row[1]} | {row[0] / max(row[1], 1):.1%} | {row[3]} | "
                  f"{row[2] / max(row[3], 1):.2%} |", flush=True)
        qc.fold_mask = SHIPPED
    for name, (caught, folds, lost, clean) in totals.items():
        print(f"| **all** | {name} | {folds} | **{caught / max(folds, 1):.1%}** | {clean} | "
              f"**{lost / max(clean, 1):.2%}** |")


if __name__ == "__main__":
    main()
