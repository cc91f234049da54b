"""How much artefact QC catches, and how much clean tissue it costs, on real tissue.

Each complete Kaggle patient is tiled back into its mosaic (real H&E at the training scale,
4 µm/px), then artefacts with a known footprint are painted on copies of it, one kind per
copy: pen strokes (green, blue, black ink, 160 µm wide, transmission multiplied by the ink's
colour), out-of-focus squares (1 mm, Gaussian blur of 6 µm), a fold (a band of tissue whose
transmission is squared: two layers) and an air bubble (a 480 µm disk washed out to a pale,
flat grey). Tiles are laid and screened exactly as slide mode does (thumbnail at 16 px per
tile, tissue mask, ``qc.screen_tiles``, then ``qc.blurry`` on the 50 px tiles).

* caught: of the tissue tiles at least a quarter covered by the artefact, the share QC left out
* clean loss: of the tissue tiles the artefact does not touch, the share QC left out
* "clean" rows: the unpainted mosaic (every left-out tile is a loss)

    python benchmarks/qc_accuracy.py ../shared/data/idc-kaggle-subset/IDC_regular_ps50_idx5 \
        --patients 9123 9126 8864 8956 9023
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from idcscan.data.mosaic import build_mosaic
from idcscan.slides.qc import QCParams, blurry, screen_tiles
from idcscan.slides.reader import resize
from idcscan.slides.tissue import TissueParams, tile_fractions, tissue_mask

TILE = 50  # px at 4 µm/px
MPP = 4.0
INKS = {"green": (40, 140, 70), "blue": (40, 70, 180), "black": (30, 30, 35)}


def screen(image: np.ndarray, qc: QCParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tile xs, ys, scored) over ``image`` as slide mode screens it."""
    h, w = image.shape[:2]
    cols, rows = -(-w // TILE), -(-h // TILE)
    xs = np.tile(np.arange(cols) * TILE, rows)
    ys = np.repeat(np.arange(rows) * TILE, cols)
    mask_ds = TILE / 16
    thumb = resize(image, max(1, round(w / mask_ds)), max(1, round(h / mask_ds)))
    scale = w / thumb.shape[1]
    mask, _ = tissue_mask(thumb, MPP * scale)
    scored_idx, _, _, _ = screen_tiles(
        thumb, mask, xs, ys, TILE, scale, MPP, TissueParams().min_tissue_fraction, qc
    )
    patches = tiles_of(image, xs, ys, scored_idx)
    scored = np.zeros(len(xs), bool)
    scored[scored_idx[~blurry(patches, qc)]] = True
    return xs, ys, scored


def tiles_of(image: np.ndarray, xs: np.ndarray, ys: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The ``idx`` tiles of ``image`` (n x TILE x TILE x 3), padded with glass at the edges."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((0, -(-h // TILE) * TILE - h), (0, -(-w // TILE) * TILE - w), (0, 0)),
                    constant_values=255)  # fmt: skip
    return np.stack([padded[ys[i]:ys[i] + TILE, xs[i]:xs[i] + TILE] for i in idx])


def tile_pixels(shape: tuple[int, ...], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """A mask of ``shape[:2]`` set under the tiles with corners ``xs``/``ys``."""
    mask = np.zeros(shape[:2], bool)
    for x, y in zip(xs, ys):
        mask[y:y + TILE, x:x + TILE] = True
    return mask


def spots(rng: np.random.Generator, tissue: np.ndarray, n: int, margin: int) -> list[tuple[int, int]]:
    """``n`` centres on tissue, away from the border."""
    ys, xs = np.nonzero(tissue[margin:-margin, margin:-margin])
    pick = rng.choice(len(xs), size=n, replace=False)
    return [(int(xs[i]) + margin, int(ys[i]) + margin) for i in pick]


def paint(kind: str, image: np.ndarray, tissue: np.ndarray, rng: np.random.Generator):
    """A copy of ``image`` with one kind of artefact, and the artefact's footprint."""
    out = image.astype(np.float32)
    h, w = tissue.shape
    foot = np.zeros((h, w), bool)
    yy, xx = np.mgrid[:h, :w]
    if kind == "pen":
        for (cx, cy), ink in zip(spots(rng, tissue, 3, 60), INKS.values()):
            angle = rng.uniform(0, np.pi)
            dx, dy = np.cos(angle), np.sin(angle)
            along = (xx - cx) * dx + (yy - cy) * dy
            across = -(xx - cx) * dy + (yy - cy) * dx
            stroke = (np.abs(across) <= 20) & (np.abs(along) <= 250)
            out[stroke] = out[stroke] * (0.1 + 0.9 * np.array(ink) / 255.0)
            foot |= stroke
    elif kind == "blur":
        soft = ndimage.gaussian_filter(out, (1.5, 1.5, 0))
        for cx, cy in spots(rng, tissue, 2, 130):
            box = (np.abs(xx - cx) <= 125) & (np.abs(yy - cy) <= 125)
            out[box] = soft[box]
            foot |= box
    elif kind == "fold":
        (cx, cy), = spots(rng, tissue, 1, 120)
        band = (np.abs(xx - cx) <= 100) & (np.abs(yy - cy) <= 30) & tissue
        out[band] = out[band] ** 2 / 255.0
        foot |= band
    elif kind == "bubble":
        (cx, cy), = spots(rng, tissue, 1, 70)
        disk = (xx - cx) ** 2 + (yy - cy) ** 2 <= 60**2
        rim = disk & ~((xx - cx) ** 2 + (yy - cy) ** 2 <= 56**2)
        out[disk] = 226.0 + (out[disk] - out[disk].mean(axis=0)) * 0.05
        out[rim] = 90.0
        foot |= disk
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), foot


def _cells(row: list[int], bold: bool = False) -> str:
    c1, n1, c2, n2, lost, n_clean = row
    b = "**" if bold else ""

    def pct(a: int, n: int, digits: int = 1) -> str:
        return f"{b}{a / n:.{digits}%}{b}" if n else "-"

    return (f"{n1} | {pct(c1, n1)} | {n2} | {pct(c2, n2)} | {n_clean} | "
            f"{pct(lost, n_clean, 2)}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path, help="Kaggle folder (IDC_regular_ps50_idx5)")
    ap.add_argument("--patients", nargs="+", default=["9123", "9126", "8864", "8956", "9023"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    qc = QCParams()
    rng = np.random.default_rng(args.seed)
    kinds = ["clean", "pen", "blur", "fold", "bubble"]
    # caught, artefact tiles (>= 1/4 covered), caught, tiles >= 1/2 covered, lost, clean tiles
    totals = {k: [0, 0, 0, 0, 0, 0] for k in kinds}
    print("| patient | artefact | tiles >= 1/4 covered | caught | tiles >= 1/2 covered | caught "
          "| clean tiles | clean loss |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    t0 = time.perf_counter()
    for pid in args.patients:
        mosaic = build_mosaic(args.data / pid)
        image = mosaic.image
        h, w = image.shape[:2]
        xs0, ys0, scored_clean = screen(image, QCParams(enabled=False))
        # tissue tiles of the clean mosaic, in pixels
        tissue_px = tile_pixels(image.shape, xs0[scored_clean], ys0[scored_clean])
        for kind in kinds:
            if kind == "clean":
                painted, foot = image, np.zeros((h, w), bool)
            else:
                painted, foot = paint(kind, image, tissue_px, rng)
            xs, ys, scored = screen(painted, qc)
            share = tile_fractions(foot, xs, ys, TILE, 1.0)
            touched = tile_fractions(foot, xs - 1, ys - 1, TILE + 2, 1.0) > 0
            hit = scored_clean & (share >= 0.25)
            most = scored_clean & (share >= 0.5)
            clean = scored_clean & ~touched
            row = [int((hit & ~scored).sum()), int(hit.sum()), int((most & ~scored).sum()),
                   int(most.sum()), int((clean & ~scored).sum()), int(clean.sum())]  # fmt: skip
            totals[kind] = [a + b for a, b in zip(totals[kind], row)]
            print(f"| {pid} | {kind} | {_cells(row)} |")
    for kind, row in totals.items():
        print(f"| **all** | {kind} | {_cells(row, bold=True)} |")
    print(f"\n{len(args.patients)} patients, {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
