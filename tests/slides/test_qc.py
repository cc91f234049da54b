"""Artefact QC: ink, blur, folds and bubbles painted on synthetic H&E are found; clean tissue is kept."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from idcscan.slides.qc import (
    KIND_CODES,
    QCParams,
    artefact_labels,
    blurry,
    qc_layer,
    screen_tiles,
)

MPP = 12.5  # µm per thumbnail pixel: what slide mode's mask works at (16 px per 200 µm tile)


def he_tissue(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Pink stroma with purple nuclei, sharp, like the mask thumbnail of real H&E."""
    img = np.empty((h, w, 3), np.float32)
    img[:] = (228, 160, 200)
    img += rng.normal(0, 12, (h, w, 1))
    img[rng.random((h, w)) < 0.15] = (120, 60, 150)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def slide(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 160 x 160 px thumbnail (2 x 2 mm): tissue everywhere but a glass margin."""
    img = np.full((160, 160, 3), 244, np.uint8)
    img[16:144, 16:144] = he_tissue(rng, 128, 128)
    tissue = np.zeros((160, 160), bool)
    tissue[16:144, 16:144] = True
    return img, tissue


def test_clean_tissue_has_no_artefacts(slide) -> None:
    img, tissue = slide
    labels = artefact_labels(img, tissue, MPP)
    assert not labels.any()


@pytest.mark.parametrize(
    "ink", [(40, 140, 70), (40, 70, 180), (30, 30, 35)], ids=["green", "blue", "black"]
)
def test_ink_is_found_where_it_was_drawn(slide, ink) -> None:
    img, tissue = slide
    inked = img.astype(np.float32)
    stroke = np.zeros(tissue.shape, bool)
    stroke[60:72, 20:140] = True  # a 150 µm wide stroke across the tissue
    inked[stroke] = inked[stroke] * np.array(ink) / 255.0  # ink absorbs: transmission multiplies
    labels = artefact_labels(inked.astype(np.uint8), tissue, MPP)
    pen = labels == KIND_CODES["pen"]
    assert pen[stroke].mean() > 0.9
    assert pen[~ndimage.binary_dilation(stroke, iterations=2)].mean() < 0.01


def test_a_dark_fold_is_found_but_dense_tumour_is_not(slide, rng) -> None:
    img, tissue = slide
    folded = img.astype(np.float32)
    band = np.zeros(tissue.shape, bool)
    band[90:130, 30:130] = True  # 0.5 x 1.25 mm of tissue folded into a near-black, still
    # stained ridge: grey ~35, under HistoQC's "darktissue" line (0.15 x 255)
    folded[band] = np.array([60.0, 15.0, 70.0]) + rng.normal(0, 4, (int(band.sum()), 1))
    nest = np.zeros(tissue.shape, bool)
    nest[30:70, 30:90] = True  # dense tumour: crowded nuclei, dark but a single layer
    dense = he_tissue(rng, 40, 60).astype(np.float32)
    dense[rng.random((40, 60)) < 0.6] = (110, 55, 145)
    folded[nest] = dense.reshape(-1, 3)
    labels = artefact_labels(folded.astype(np.uint8), tissue, MPP)
    fold = labels == KIND_CODES["fold"]
    assert fold[band].mean() > 0.8
    assert fold[~ndimage.binary_dilation(band, iterations=3)].mean() < 0.01
    assert not fold[nest].any()  # an IDC detector must not throw its tumour away


def test_a_bubble_is_found(slide) -> None:
    img, tissue = slide
    bubbled = img.astype(np.float32)
    yy, xx = np.mgrid[:160, :160]
    disk = (yy - 80) ** 2 + (xx - 80) ** 2 <= 30**2
    bubbled[disk] = 226.0 + (bubbled[disk] - bubbled[disk].mean(axis=0)) * 0.05
    labels = artefact_labels(np.clip(bubbled, 0, 255).astype(np.uint8), tissue, MPP)
    bubble = labels == KIND_CODES["bubble"]
    assert bubble[disk].mean() > 0.7
    assert bubble[~ndimage.binary_dilation(disk, iterations=3)].mean() < 0.01


def test_blur_is_judged_per_tile_on_its_tissue(rng: np.random.Generator) -> None:
    sharp = np.stack([he_tissue(rng, 50, 50) for _ in range(6)])
    soft = np.stack(
        [ndimage.gaussian_filter(p.astype(np.float32), (1.5, 1.5, 0)).astype(np.uint8)
         for p in sharp]
    )  # fmt: skip
    half_glass = sharp.copy()
    half_glass[:, :, 25:] = 244  # sharp tissue beside flat glass: not blur
    glass = np.full((2, 50, 50, 3), 244, np.uint8)  # nothing to judge
    flags = blurry(np.concatenate([sharp, soft, half_glass, glass]))
    assert flags.tolist() == [False] * 6 + [True] * 6 + [False] * 6 + [False] * 2
    assert not blurry(soft, QCParams(enabled=False)).any()


def test_screen_tiles_leaves_out_inked_tissue_tiles(slide) -> None:
    img, tissue = slide
    inked = img.copy()
    inked[16:48, 16:144] = (40, 140, 70)  # the top two tile rows are under green ink
    # 10 x 10 tiles of 16 thumbnail px (200 µm); level 0 = thumbnail here (scale 1)
    xs = np.tile(np.arange(10) * 16, 10)
    ys = np.repeat(np.arange(10) * 16, 10)
    scored, left_out, kinds, labels = screen_tiles(inked, tissue, xs, ys, 16, 1.0, MPP, 0.25)
    tissue_tiles = {r * 10 + c for r in range(1, 9) for c in range(1, 9)}
    inked_tiles = {r * 10 + c for r in (1, 2) for c in range(1, 9)}
    assert set(left_out.tolist()) == inked_tiles
    assert set(scored.tolist()) == tissue_tiles - inked_tiles
    assert (kinds == KIND_CODES["pen"]).all()
    layer = qc_layer(labels)
    assert layer.mode == "P" and layer.info["transparency"] == 0
    assert np.asarray(layer)[20, 50] == KIND_CODES["pen"] and np.asarray(layer)[100, 100] == 0
