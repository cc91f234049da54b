"""Regions of tiled TIFF pages decoded straight from their tiles (tifffile + imagecodecs).

tiffslide reads regions through zarr, whose asynchronous machinery costs a thread hand-off
per read: negligible for slide mode's long row bands, but it dominated Deep Zoom, where
every 254 px tile is its own small read (about 85 ms of 240 ms per tile on the shared
2-core machine). Here a region is read as the few TIFF tiles it touches: their bytes under
the file's own lock, each decoded by the page's own decoder (JPEG tables, predictors and
YCbCr handled by tifffile), and copied into place. Pages this does not handle (strips,
planar or 3-D tiles, odd sample types) return None from ``for_page``, and the caller keeps
the tiffslide path.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class TiledPage:
    """Random-access regions of one tiled, contiguous 2-D TIFF page."""

    def __init__(self, page: Any, filehandle: Any) -> None:
        self.page = page
        self.fh = filehandle
        self.width = int(page.imagewidth)
        self.height = int(page.imagelength)
        self.tw = int(page.tilewidth)
        self.th = int(page.tilelength)
        self.across = -(-self.width // self.tw)
        self.samples = int(page.samplesperpixel)
        self.decode = page.decode  # tifffile's cached decoder for this kind of page

    @classmethod
    def for_page(cls, page: Any, filehandle: Any) -> "TiledPage | None":
        try:
            usable = (
                page.is_tiled
                and page.planarconfig == 1
                and int(getattr(page, "tiledepth", 1) or 1) == 1
                and int(getattr(page, "imagedepth", 1) or 1) == 1
                and np.dtype(page.dtype) == np.uint8
                and int(page.samplesperpixel) in (1, 3, 4)
            )
        except Exception:  # unusual tags: let tiffslide handle the page
            return None
        return cls(page, filehandle) if usable else None

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Pixels [y, y+h) x [x, x+w) of the page (in bounds), H x W x samples uint8."""
        out = np.empty((h, w, self.samples), dtype=np.uint8)
        tx0, tx1 = x // self.tw, (x + w - 1) // self.tw
        ty0, ty1 = y // self.th, (y + h - 1) // self.th
        indices = [ty * self.across + tx for ty in range(ty0, ty1 + 1)
                   for tx in range(tx0, tx1 + 1)]  # fmt: skip
        offsets = self.page.dataoffsets
        counts = self.page.databytecounts
        jpegtables = getattr(self.page, "jpegtables", None)
        for data, index in self.fh.read_segments(
            [offsets[i] for i in indices], [counts[i] for i in indices], indices=indices,
            lock=self.fh.lock, sort=True,
        ):  # fmt: skip
            tile, _, _ = self.decode(data, index, jpegtables=jpegtables)
            ty, tx = divmod(index, self.across)
            ox, oy = tx * self.tw, ty * self.th
            sx0, sy0 = max(x, ox), max(y, oy)
            sx1 = min(x + w, ox + self.tw, self.width)
            sy1 = min(y + h, oy + self.th, self.height)
            if tile is None:  # an empty (never written) tile: white, as glass
                out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = 255
                continue
            tile = tile.reshape(self.th, self.tw, self.samples)
            out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = tile[sy0 - oy : sy1 - oy, sx0 - ox : sx1 - ox]
        return out
