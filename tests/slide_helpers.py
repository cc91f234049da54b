"""Slides with a known IDC region, painted from two synthetic textures that a tiny model can
tell apart: shared by the slide-mode and cohort tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

MPP = 0.25  # the scan's level 0, as a 40x scanner writes it
SCALE = 16  # level-0 pixels per training-scale pixel (4 µm / 0.25 µm)
DOWNSAMPLES = (1, 2, 4, 8)  # pyramid levels; the training scale (16) lies below the last
# in training-scale pixels: tissue on the left 200 px, glass beyond; IDC in a rectangle
TISSUE_WIDTH = 200
IDC = (55, 45, 165, 155)  # x0, y0, x1, y1
SIZE = (250, 200)  # width, height


def texture(rng: np.random.Generator, h: int, w: int, kind: str) -> np.ndarray:
    """'idc': crowded dark nuclei on purple; 'normal': pink stroma, sparse nuclei; 'glass'."""
    if kind == "glass":
        return np.clip(244 + rng.normal(0, 2, (h, w, 3)), 0, 255).astype(np.uint8)
    base, nucleus, density = {
        "idc": ((196, 128, 196), (80, 30, 120), 0.18),
        "normal": ((240, 176, 206), (120, 60, 150), 0.02),
    }[kind]
    img = np.empty((h, w, 3), np.float32)
    img[:] = base
    img += rng.normal(0, 10, (h, w, 1))
    img[rng.random((h, w)) < density] = nucleus
    return np.clip(img, 0, 255).astype(np.uint8)


def paint_slide(seed: int = 1) -> np.ndarray:
    """The slide at the training scale (4 µm/px)."""
    rng = np.random.default_rng(seed)
    w, h = SIZE
    img = texture(rng, h, w, "glass")
    img[:, :TISSUE_WIDTH] = texture(rng, h, TISSUE_WIDTH, "normal")
    x0, y0, x1, y1 = IDC
    img[y0:y1, x0:x1] = texture(rng, y1 - y0, x1 - x0, "idc")
    return img


def write_pyramid(path: Path, image: np.ndarray) -> None:
    """A tiled, deflate-compressed pyramidal TIFF (SubIFDs) at 0.25 µm/px, scale in the tags."""
    opts = dict(
        tile=(256, 256),
        photometric="rgb",
        compression="zlib",
        compressionargs={"level": 1},
        resolutionunit="CENTIMETER",
    )
    with tifffile.TiffWriter(path) as tif:
        for i, ds in enumerate(DOWNSAMPLES):
            f = SCALE // ds
            level = np.repeat(np.repeat(image, f, axis=0), f, axis=1)
            res = 1e4 / (MPP * ds)  # pixels per cm
            extra = {"subifds": len(DOWNSAMPLES) - 1} if i == 0 else {"subfiletype": 1}
            tif.write(level, resolution=(res, res), **extra, **opts)
