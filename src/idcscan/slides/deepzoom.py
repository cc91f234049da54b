"""Deep Zoom tiles of any slide reader, for a browser viewer (OpenSeadragon).

Deep Zoom halves the image from level ``n - 1`` (full size) down to level 0 (1 x 1 px) and
cuts every level into ``tile_size`` squares that share ``overlap`` pixels with their
neighbours (the layout OpenSlide's ``DeepZoomGenerator`` serves). A tile is read from the
coarsest pyramid level that is not coarser than the tile's own scale, through the reader's
``read_level``, and shrunk by area averaging: only the tile's own region is ever decoded,
never a whole level.

A slide without a pyramid (a plain image, a single-level TIFF) would need a huge region for
each coarse tile. For those levels the tiles come from one overview image of the whole slide
(longest side ``OVERVIEW_SIDE``), made once, band by band (``SlideReader.thumbnail``). Shrinking
that overview again for every request cost 3-15 ms a tile (more than a tile read from the
slide), and every viewer asks for these coarse tiles first; there are few of them (at most
``OVERVIEW_TILES_CACHED``), so their JPEG bytes are kept once made.
"""

from __future__ import annotations

import io
import math
import threading

import numpy as np
from PIL import Image

from idcscan.slides.reader import SlideReader, resize

TILE_SIZE = 254
OVERLAP = 1
JPEG_QUALITY = 80
#: A tile is read from the slide when its source region is at most this many level pixels
#: per side per tile pixel ratio (4x: a 254 px tile from <= 1016 px); else from the overview.
MAX_SOURCE_RATIO = 4.0
OVERVIEW_SIDE = 2048
#: Bound on the encoded tiles kept per slide (those cut from the overview; about 100 for a
#: pyramidal slide, a few hundred for a large plain image; 5-20 kB each).
OVERVIEW_TILES_CACHED = 1024


class DeepZoom:
    """The Deep Zoom pyramid of one open slide (thread-safe if the reader is)."""

    def __init__(
        self, reader: SlideReader, tile_size: int = TILE_SIZE, overlap: int = OVERLAP
    ) -> None:
        self.reader = reader
        self.tile_size = tile_size
        self.overlap = overlap
        self.width, self.height = reader.dimensions
        self.level_count = max(1, math.ceil(math.log2(max(self.width, self.height, 1)))) + 1
        self._overview: tuple[np.ndarray, float] | None = None
        self._overview_lock = threading.Lock()
        self._jpeg_cache: dict[tuple[int, int, int], bytes] = {}

    # -- geometry ---------------------------------------------------------------------
    def scale(self, level: int) -> float:
        """Level-0 pixels per pixel of Deep Zoom ``level``."""
        return float(2 ** (self.level_count - 1 - level))

    def level_size(self, level: int) -> tuple[int, int]:
        s = self.scale(level)
        return max(1, math.ceil(self.width / s)), max(1, math.ceil(self.height / s))

    def tile_grid(self, level: int) -> tuple[int, int]:
        w, h = self.level_size(level)
        return math.ceil(w / self.tile_size), math.ceil(h / self.tile_size)

    def tile_box(self, level: int, col: int, row: int) -> tuple[int, int, int, int] | None:
        """(x0, y0, x1, y1) of a tile in the level's pixels, overlap included; None if absent."""
        if not 0 <= level < self.level_count:
            return None
        cols, rows = self.tile_grid(level)
        if not (0 <= col < cols and 0 <= row < rows):
            return None
        w, h = self.level_size(level)
        t, o = self.tile_size, self.overlap
        x0 = col * t - (o if col > 0 else 0)
        y0 = row * t - (o if row > 0 else 0)
        return x0, y0, min((col + 1) * t + o, w), min((row + 1) * t + o, h)

    def dzi(self) -> str:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
            f'Format="jpeg" Overlap="{self.overlap}" TileSize="{self.tile_size}">'
            f'<Size Height="{self.height}" Width="{self.width}"/></Image>\n'
        )

    # -- pixels -----------------------------------------------------------------------
    def from_overview(self, level: int) -> bool:
        """Whether ``level``'s tiles are cut from the overview, not read from the slide."""
        s = self.scale(level)
        return s / self.reader.level_downsamples[self.reader.best_level(s)] > MAX_SOURCE_RATIO

    def tile_jpeg(self, level: int, col: int, row: int) -> bytes | None:
        """The tile as JPEG bytes (what the viewer fetches), or None for a missing tile."""
        key = (level, col, row)
        cached = self._jpeg_cache.get(key)
        if cached is not None:
            return cached
        rgb = self.tile(level, col, row)
        if rgb is None:
            return None
        data = jpeg_bytes(rgb)
        if self.from_overview(level) and len(self._jpeg_cache) < OVERVIEW_TILES_CACHED:
            self._jpeg_cache[key] = data  # one dict store: safe across threads under the GIL
        return data

    def tile(self, level: int, col: int, row: int) -> np.ndarray | None:
        """The tile's RGB pixels (HxWx3 uint8), or None for a tile that does not exist."""
        box = self.tile_box(level, col, row)
        if box is None:
            return None
        x0, y0, x1, y1 = box
        s = self.scale(level)
        # the tile's region in level-0 pixels, clipped to the image
        bx0, by0 = x0 * s, y0 * s
        bx1, by1 = min(x1 * s, self.width), min(y1 * s, self.height)
        if self.from_overview(level):
            return self._from_overview(bx0, by0, bx1, by1, x1 - x0, y1 - y0)
        src = self.reader.best_level(s)
        ds = self.reader.level_downsamples[src]
        lx0, ly0 = math.floor(bx0 / ds), math.floor(by0 / ds)
        lx1, ly1 = max(math.ceil(bx1 / ds), lx0 + 1), max(math.ceil(by1 / ds), ly0 + 1)
        region = self.reader.read_level(src, lx0, ly0, lx1 - lx0, ly1 - ly0)
        return shrink(region, x1 - x0, y1 - y0)

    def overview(self) -> tuple[np.ndarray, float]:
        """The whole slide shrunk to ``OVERVIEW_SIDE`` (made once) and its downsample."""
        with self._overview_lock:
            if self._overview is None:
                ds = max(1.0, max(self.width, self.height) / OVERVIEW_SIDE)
                self._overview = (self.reader.thumbnail(ds), ds)
            return self._overview

    def _from_overview(
        self, bx0: float, by0: float, bx1: float, by1: float, w: int, h: int
    ) -> np.ndarray:
        image, _ = self.overview()
        oh, ow = image.shape[:2]
        sx, sy = self.width / ow, self.height / oh
        ox0, oy0 = math.floor(bx0 / sx), math.floor(by0 / sy)
        ox1 = min(max(math.ceil(bx1 / sx), ox0 + 1), ow)
        oy1 = min(max(math.ceil(by1 / sy), oy0 + 1), oh)
        return shrink(np.ascontiguousarray(image[oy0:oy1, ox0:ox1]), w, h)

    def thumbnail(self, side: int = 256) -> np.ndarray:
        """A small picture of the whole slide (longest side ``side``) from the overview."""
        image, _ = self.overview()
        oh, ow = image.shape[:2]
        f = side / max(ow, oh)
        return resize(image, max(1, round(ow * f)), max(1, round(oh * f)))


def shrink(region: np.ndarray, w: int, h: int) -> np.ndarray:
    """``region`` resized to w x h: an integer box reduction first (Pillow's ``reduce``, several
    times faster than a general resize of the whole region), then an exact area resize."""
    k = min(region.shape[1] // max(w, 1), region.shape[0] // max(h, 1))
    if k < 2:
        return resize(region, w, h)
    im = Image.fromarray(region, mode="RGB").reduce(k)
    if im.size == (w, h):
        return np.asarray(im)
    return np.asarray(im.resize((w, h), Image.Resampling.BOX))


def jpeg_bytes(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
