"""A large pyramidal TIFF made up on the spot: for viewer tests and tile-server benchmarks.

Real whole-slide images are gigabytes; tests and benchmarks need one of 20,000-50,000 px a
side that is written in seconds. This one is mostly glass with a few H&E-coloured tissue
ellipses (pink stroma with scattered nuclei; dense purple nests in part of each), written
tile by tile (deflate, 256 px tiles, a 4x pyramid in SubIFDs, scale in the resolution tags),
so neither writing nor reading ever holds a level in memory. Glass tiles are one shared
array, which is what makes it fast. Never a real patient.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GLASS = 244
TILE = 256


@dataclass(frozen=True)
class Ellipse:
    cx: float
    cy: float
    rx: float
    ry: float

    def bounds(self) -> tuple[float, float, float, float]:
        return self.cx - self.rx, self.cy - self.ry, self.cx + self.rx, self.cy + self.ry

    def inside(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        return ((xs - self.cx) / self.rx) ** 2 + ((ys - self.cy) / self.ry) ** 2 <= 1.0


def tissue_layout(width: int, height: int, seed: int = 0, n: int = 3) -> list[Ellipse]:
    """A few tissue pieces covering a few percent of the slide."""
    rng = np.random.default_rng(seed)
    side = min(width, height)
    out = []
    for _ in range(n):
        rx, ry = rng.uniform(0.04, 0.07, 2) * side
        cx = rng.uniform(rx, width - rx)
        cy = rng.uniform(ry, height - ry)
        out.append(Ellipse(float(cx), float(cy), float(rx), float(ry)))
    return out


def _nest(e: Ellipse) -> Ellipse:
    """The dense (IDC-like) part of a tissue piece."""
    return Ellipse(e.cx + e.rx * 0.3, e.cy, e.rx * 0.35, e.ry * 0.35)


def _textures(seed: int, variants: int = 4) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A few stroma and nest tiles, made once: tiles are cut from them, not drawn each time."""
    rng = np.random.default_rng(seed)

    def one(base: tuple[int, int, int], density: float) -> np.ndarray:
        img = np.empty((TILE, TILE, 3), dtype=np.float32)
        img[:] = base
        img += rng.normal(0, 9, (TILE, TILE, 1))
        img[rng.random((TILE, TILE)) < density] = (95, 40, 135)
        return np.clip(img, 0, 255).astype(np.uint8)

    stroma = [one((236, 170, 204), 0.03) for _ in range(variants)]
    nests = [one((190, 120, 190), 0.16) for _ in range(variants)]
    return stroma, nests


def _box_vs(e: Ellipse, x0: float, y0: float, x1: float, y1: float) -> int:
    """-1: box outside the ellipse, 1: box inside it, 0: crossing its edge."""
    bx0, by0, bx1, by1 = e.bounds()
    if bx0 >= x1 or bx1 <= x0 or by0 >= y1 or by1 <= y0:
        return -1
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]])
    if e.inside(corners[:, 0], corners[:, 1]).all():
        return 1
    return 0


def render_region(
    pieces: list[Ellipse], x0: int, y0: int, w: int, h: int, ds: float,
    textures: tuple[list[np.ndarray], list[np.ndarray]],
) -> np.ndarray:
    """Pixels of one tile-sized region at downsample ``ds`` (level pixels), RGB uint8."""
    stroma, nests = textures
    k = (x0 // TILE * 7 + y0 // TILE * 13) % len(stroma)
    bx0, by0, bx1, by1 = x0 * ds, y0 * ds, (x0 + w) * ds, (y0 + h) * ds
    states = [(_box_vs(e, bx0, by0, bx1, by1), _box_vs(_nest(e), bx0, by0, bx1, by1))
              for e in pieces]  # fmt: skip
    if all(t == -1 for t, _ in states):
        return np.full((h, w, 3), GLASS, dtype=np.uint8)
    if any(n == 1 for _, n in states):
        return nests[k][:h, :w].copy()
    if any(t == 1 for t, _ in states) and all(n == -1 for _, n in states):
        return stroma[k][:h, :w].copy()
    xs = (x0 + np.arange(w) + 0.5) * ds
    ys = (y0 + np.arange(h) + 0.5) * ds
    gx, gy = np.meshgrid(xs, ys)
    out = np.full((h, w, 3), GLASS, dtype=np.uint8)
    for e in pieces:
        tissue = e.inside(gx, gy)
        out[tissue] = stroma[k][:h, :w][tissue]
        nest = _nest(e).inside(gx, gy)
        out[nest] = nests[k][:h, :w][nest]
    return out


def _tiles(
    pieces: list[Ellipse], width: int, height: int, ds: float, seed: int
) -> Iterator[bytes]:
    """The level's tiles, row-major, deflate-encoded here (glass is encoded only once)."""
    import imagecodecs

    textures = _textures(seed)
    glass = imagecodecs.zlib_encode(np.full((TILE, TILE, 3), GLASS, np.uint8).tobytes(), 1)
    for ty in range(math.ceil(height / TILE)):
        for tx in range(math.ceil(width / TILE)):
            tile = render_region(pieces, tx * TILE, ty * TILE, TILE, TILE, ds, textures)
            if tile[0, 0, 0] == GLASS and (tile == GLASS).all():
                yield glass
            else:
                yield imagecodecs.zlib_encode(tile.tobytes(), 1)


def write_synthetic_wsi(
    path: str | Path,
    width: int,
    height: int,
    mpp: float = 0.5,
    seed: int = 0,
    min_level_side: int = 1024,
) -> Path:
    """Write the slide; returns ``path``. Levels shrink 4x until the long side is small."""
    import tifffile

    path = Path(path)
    downsamples = [1]
    while max(width, height) / (downsamples[-1] * 4) >= min_level_side:
        downsamples.append(downsamples[-1] * 4)
    pieces = tissue_layout(width, height, seed)
    opts = dict(
        tile=(TILE, TILE),
        photometric="rgb",
        compression="zlib",
        resolutionunit="CENTIMETER",
        dtype=np.uint8,
    )
    with tifffile.TiffWriter(path, bigtiff=width * height * 3 > 2**31) as tif:
        for i, ds in enumerate(downsamples):
            w, h = math.ceil(width / ds), math.ceil(height / ds)
            res = 1e4 / (mpp * ds)
            extra = {"subifds": len(downsamples) - 1} if i == 0 else {"subfiletype": 1}
            tif.write(
                _tiles(pieces, w, h, ds, seed), shape=(h, w, 3),
                resolution=(res, res), **extra, **opts,
            )  # fmt: skip
    return path
