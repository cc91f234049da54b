"""Artefact QC before scoring: pen marks, out-of-focus tiles, folds and bubbles.

Slide mode scores every tile the tissue mask keeps; ink, blur, folded tissue and air bubbles
look like tissue to that mask (they are coloured, or lie inside it) but say nothing about
IDC. This module finds them, so slide mode can leave them out of the scored tissue, draw
them as their own layer and count them in ``summary.json``.

The rules follow HistoQC (Janowczyk et al., JCO Clinical Cancer Informatics 2019), adapted
to the scales slide mode already works at:

* **pen** (HistoQC learns ink from example images; the colour rules here are the ones its
  examples encode): H&E never transmits more green than red and blue, so green ink is
  ``G - max(R, B) > pen_green``; blue ink is far bluer than hematoxylin
  (``B - R > pen_blue``, and ``B > G``); black ink is dark and grey (``gray < pen_black``,
  saturation under ``pen_black_max_saturation``), where HistoQC's ``darktissue`` rule uses
  ``gray < 0.15``. On the 5 complete Kaggle patients 99.9% of tissue pixels have
  ``G - max(R, B) <= 3``, ``B - R <= 34`` and ``gray >= 63``.
* **blur** (HistoQC ``BlurDetectionModule``: the mean absolute Laplacian of the grey image,
  below a threshold, is out of focus): judged per tile on the very pixels the model sees (the
  tile at the training scale), so a tile is refused exactly when the model would be shown a
  blurred patch, and only on its tissue pixels (flat glass beside sharp tissue is no blur).
  Sharp Kaggle patches have a mean ``|Laplacian|`` of 19-69 (1st-95th percentile, whole
  patch); blurred by a 4 µm Gaussian, 3-12. The threshold is ``blur_laplacian``.
* **fold** (HistoQC ``LightDarkModule`` ``darktissue``): a doubled layer of tissue transmits
  the square of the light a single one does: it is markedly darker than the slide's own
  tissue and still stained. Flagged where the locally averaged grey level is below
  ``fold_relative`` times the tissue's 75th-percentile grey, saturation above
  ``fold_min_saturation``, in regions of at least ``fold_min_um2``. Deliberately strict
  (0.4): dense IDC is dark too, and on the Kaggle mosaics looser lines (0.5, 0.75) lost
  0.2% and 9.6% of clean tissue (up to 1% and 33% of one patient's), nearly all of it
  tumour, while still missing most painted folds (docs/BENCHMARKS.md). In effect only
  near-black stained ridges are flagged, as HistoQC's ``darktissue`` rule (grey below 0.15)
  does. Of the other cues tried (optical density ratio, stain amounts, saturation,
  brightness floor), those checked on held-out patients lost 1-5% of their clean tissue.
  In a simulation a missed fold lowered P(IDC) under it rather than raised it.
* **bubble** (HistoQC ``getIntensityThresholdPercent:bubble``: grey between 0.82 and 0.94
  with little local variation): pale, flat regions inside the tissue outline, at least
  ``bubble_min_um2``.

Pen, fold and bubble are found on the thumbnail slide mode already makes for the tissue mask;
blur on the tiles. The label image uses ``KIND_CODES``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

KINDS = ("pen", "blur", "fold", "bubble")
#: blur is judged on a tile's pixels darker than this grey level (not glass), and only when
#: they are at least this share of the tile
BLUR_GLASS_GRAY = 220.0
BLUR_MIN_TISSUE = 0.1
#: folds are judged against this percentile of the tissue's grey levels
FOLD_REFERENCE_PERCENTILE = 75
KIND_CODES = {kind: code for code, kind in enumerate(KINDS, start=1)}
#: colours of the QC layer (RGB), by kind
KIND_COLORS = {
    "pen": (0, 200, 255),
    "blur": (255, 200, 0),
    "fold": (170, 0, 255),
    "bubble": (0, 230, 120),
}


@dataclass(frozen=True)
class QCParams:
    enabled: bool = True
    #: green ink: G - max(R, B) above this (0-255)
    pen_green: int = 15
    #: blue ink: B - R above this (0-255)
    pen_blue: int = 60
    #: black ink: grey level below this, saturation below the next (0-255)
    pen_black: int = 50
    pen_black_max_saturation: int = 100
    #: ink marks smaller than this (µm²) are dropped (specks, dust)
    pen_min_um2: float = 2_000.0
    #: a tile whose mean |Laplacian| (grey 0-255, training scale) is below this is blurred
    blur_laplacian: float = 10.0
    fold_relative: float = 0.4
    fold_min_saturation: int = 60
    fold_min_um2: float = 20_000.0
    #: bubbles: grey level band (0-1, HistoQC's) and the largest local std (0-255)
    bubble_gray: tuple[float, float] = (0.82, 0.94)
    bubble_max_std: float = 4.0
    bubble_min_um2: float = 40_000.0
    #: share of a tile that must be artefact for the tile to be left out
    min_artefact_fraction: float = 0.25

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gray(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _saturation(rgb: np.ndarray) -> np.ndarray:
    hsv = np.asarray(Image.fromarray(rgb, mode="RGB").convert("HSV"), dtype=np.uint8)
    return hsv[..., 1]


def _drop_small(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    if not mask.any():
        return mask
    labels, n = ndimage.label(mask)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= max(min_pixels, 1.0)
    keep[0] = False
    return keep[labels]


def pen_mask(rgb: np.ndarray, mpp: float, params: QCParams = QCParams()) -> np.ndarray:
    """Ink of any colour the rules know (bool, same size as ``rgb``)."""
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    green = (g - np.maximum(r, b)) > params.pen_green
    blue = ((b - r) > params.pen_blue) & (b > g)
    black = (_gray(rgb) < params.pen_black) & (_saturation(rgb) < params.pen_black_max_saturation)
    ink = green | blue | black
    ink = ndimage.binary_closing(ink, iterations=1)
    return _drop_small(ink, params.pen_min_um2 / (mpp * mpp))


def fold_mask(
    rgb: np.ndarray, tissue: np.ndarray, mpp: float, params: QCParams = QCParams()
) -> np.ndarray:
    """Folded (doubled) tissue: much darker than the slide's tissue, still stained."""
    if not tissue.any():
        return np.zeros_like(tissue)
    gray = ndimage.uniform_filter(_gray(rgb), size=5)
    # the tissue's typical grey, robust to a fold covering up to half of it
    reference = float(np.percentile(gray[tissue], FOLD_REFERENCE_PERCENTILE))
    dark = (gray < params.fold_relative * reference) & (
        _saturation(rgb) > params.fold_min_saturation
    )
    dark = ndimage.binary_closing(dark, iterations=2) & tissue
    return _drop_small(dark, params.fold_min_um2 / (mpp * mpp))


def bubble_mask(
    rgb: np.ndarray, tissue: np.ndarray, mpp: float, params: QCParams = QCParams()
) -> np.ndarray:
    """Pale, flat regions inside the tissue outline (air under the coverslip)."""
    if not tissue.any():
        return np.zeros_like(tissue)
    gray = _gray(rgb)
    mean = ndimage.uniform_filter(gray, size=5)
    std = np.sqrt(np.maximum(ndimage.uniform_filter(gray * gray, size=5) - mean * mean, 0.0))
    lo, hi = params.bubble_gray
    flat = (mean >= lo * 255) & (mean <= hi * 255) & (std <= params.bubble_max_std)
    inside = ndimage.binary_fill_holes(tissue)
    return _drop_small(flat & inside, params.bubble_min_um2 / (mpp * mpp))


def artefact_labels(
    rgb: np.ndarray, tissue: np.ndarray, mpp: float, params: QCParams = QCParams()
) -> np.ndarray:
    """Per pixel of the thumbnail, 0 (clean) or the ``KIND_CODES`` code of its artefact.

    ``tissue`` is the tissue mask of ``rgb`` (same size); ink is found anywhere (pen
    crosses tissue and glass), folds and bubbles only in or inside the tissue.
    """
    labels = np.zeros(rgb.shape[:2], dtype=np.uint8)
    if not params.enabled:
        return labels
    # later kinds do not overwrite earlier ones: ink is the surest call
    for kind, mask in (
        ("bubble", bubble_mask(rgb, tissue, mpp, params)),
        ("fold", fold_mask(rgb, tissue, mpp, params)),
        ("pen", pen_mask(rgb, mpp, params)),
    ):
        labels[mask] = KIND_CODES[kind]
    return labels


def blurry(patches: np.ndarray, params: QCParams = QCParams()) -> np.ndarray:
    """Per tile (n x p x p x 3 uint8, the model's input), whether it is out of focus."""
    n = len(patches)
    if n == 0 or not params.enabled:
        return np.zeros(n, dtype=bool)
    gray = _gray(patches)
    lap = np.abs(
        gray[:, :-2, 1:-1] + gray[:, 2:, 1:-1] + gray[:, 1:-1, :-2] + gray[:, 1:-1, 2:]
        - 4.0 * gray[:, 1:-1, 1:-1]
    )
    # judged on the tile's tissue only: flat glass beside sharp tissue is not blur
    tissue = (gray[:, 1:-1, 1:-1] < BLUR_GLASS_GRAY).reshape(n, -1)
    counts = tissue.sum(axis=1)
    mean = (lap.reshape(n, -1) * tissue).sum(axis=1) / np.maximum(counts, 1)
    judged = counts >= BLUR_MIN_TISSUE * tissue.shape[1]
    return judged & (mean < params.blur_laplacian)


def tile_kinds(
    labels: np.ndarray, xs: np.ndarray, ys: np.ndarray, tile: float, scale: float,
    min_fraction: float,
) -> np.ndarray:
    """Per tile, the code of the artefact covering at least ``min_fraction`` of it (0: none).

    Where several kinds do, the one covering most of the tile wins.
    """
    from idcscan.slides.tissue import tile_fractions

    best = np.zeros(len(xs), dtype=np.uint8)
    best_share = np.zeros(len(xs), dtype=np.float64)
    for code in range(1, len(KINDS) + 1):
        layer = labels == code
        if not layer.any():
            continue
        share = tile_fractions(layer, xs, ys, tile, scale)
        better = (share >= min_fraction) & (share > best_share)
        best[better] = code
        best_share[better] = share[better]
    return best


def qc_layer(labels: np.ndarray) -> Image.Image:
    """The label image as a palette PNG: index = kind code, colours ``KIND_COLORS``, index 0
    transparent. The same file is the QC layer a viewer lays over the slide and a label
    image other tools read (pixel value = code)."""
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    palette = [255, 255, 255]
    for kind in KINDS:
        palette.extend(KIND_COLORS[kind])
    image.putpalette(palette + [0, 0, 0] * (256 - len(palette) // 3))
    image.info["transparency"] = 0
    return image


def screen_tiles(
    thumb: np.ndarray, tissue: np.ndarray, xs: np.ndarray, ys: np.ndarray, tile: float,
    scale: float, mpp: float, min_tissue: float, params: QCParams = QCParams(),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Which tiles slide mode scores, and which tissue tiles artefacts take away.

    ``thumb``/``tissue``: the thumbnail and its tissue mask (``scale`` level-0 px per pixel,
    ``mpp`` µm per level-0 px); ``xs``/``ys``: every tile's corner, ``tile`` its side (level-0
    px). A tile is tissue when ``min_tissue`` of it is tissue; it is scored when that still
    holds with the artefacts taken away and less than ``params.min_artefact_fraction`` of it
    is artefact. Returns (scored tile indices, left-out tile indices,
    their kind codes, the label image).
    """
    from idcscan.slides.tissue import tile_fractions

    tissue_tiles = np.flatnonzero(tile_fractions(tissue, xs, ys, tile, scale) >= min_tissue)
    labels = artefact_labels(thumb, tissue, mpp * scale, params)
    tx, ty = xs[tissue_tiles], ys[tissue_tiles]
    clean = tile_fractions(tissue & (labels == 0), tx, ty, tile, scale) >= min_tissue
    # a tile partly under ink or a fold still shows it to the model: out, too
    clean &= tile_fractions(labels > 0, tx, ty, tile, scale) < params.min_artefact_fraction
    left_out = tissue_tiles[~clean]
    kinds = tile_kinds(labels, xs[left_out], ys[left_out], tile, scale, 1e-9)
    return tissue_tiles[clean], left_out, kinds, labels


def paint_tiles(
    labels: np.ndarray, tissue: np.ndarray, tiles: np.ndarray, cols: int, stride: int,
    tile: int, scale: float, code: int,
) -> None:
    """Mark tiles' tissue in the label image with ``code`` (where no other artefact is)."""
    h, w = labels.shape
    rows, tcols = np.divmod(tiles, cols)
    for r, c in zip(rows.tolist(), tcols.tolist()):
        x0, y0 = round(c * stride / scale), round(r * stride / scale)
        x1 = min(w, max(x0 + 1, round((c * stride + tile) / scale)))
        y1 = min(h, max(y0 + 1, round((r * stride + tile) / scale)))
        box = labels[y0:y1, x0:x1]
        box[(box == 0) & tissue[y0:y1, x0:x1]] = code
