"""One reader interface for every large image: whole-slide pyramids and plain pictures.

Slide mode, deep zoom and stain estimation only ever ask a reader for regions of a pyramid
level, so memory stays bounded by what is asked (a row band of tiles, a thumbnail). This
module is the interface (``SlideReader``) and what every reader shares; the readers of each
format and ``open_slide`` are in ``slide_formats``.

Coordinates follow OpenSlide: ``read_region(level, x, y, w, h)`` takes the top-left corner
in level-0 pixels and the size in pixels of ``level``. Anything outside the image is white
(glass), as the Kaggle edge crops were padded.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from idcscan.errors import IdcscanError
from idcscan.preprocessing import PAD_VALUE

#: Resolution metadata outside this range (µm/px) is not a microscope's: 72/96/300 dpi
#: screen or print defaults (350/265/85 µm/px) are ignored rather than trusted.
PLAUSIBLE_MPP = (0.05, 20.0)

TIFFSLIDE_SUFFIXES = {".svs", ".ndpi", ".tif", ".tiff", ".scn", ".bif", ".qptiff", ".btf"}
OPENSLIDE_SUFFIXES = {".mrxs", ".vms", ".vmu", ".svslide", ".dcm"}
PLAIN_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif"}
SUPPORTED_SUFFIXES = TIFFSLIDE_SUFFIXES | OPENSLIDE_SUFFIXES | PLAIN_SUFFIXES

#: Regions bigger than this many pixels are read in row bands when making a thumbnail.
_BAND_PIXELS = 16_000_000


def plausible_mpp(value: float | None) -> float | None:
    """``value`` if it looks like a microscope's scale, else None (unknown)."""
    if value is None or not math.isfinite(value):
        return None
    return float(value) if PLAUSIBLE_MPP[0] <= value <= PLAUSIBLE_MPP[1] else None


def as_rgb_array(arr: np.ndarray) -> np.ndarray:
    """Any HxW[xC] array a decoder returns (gray, RGBA, 16-bit) -> HxWx3 uint8 RGB."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.dtype != np.uint8:
        hi = 65535.0 if arr.dtype == np.uint16 else max(float(arr.max(initial=0)), 1.0)
        arr = np.clip(arr.astype(np.float32) / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
    channels = arr.shape[2]
    if channels == 1:
        return np.repeat(arr, 3, axis=2)
    if channels == 2 or channels >= 4:
        alpha = arr[..., -1:].astype(np.uint16)
        rgb = arr[..., :3] if channels >= 4 else np.repeat(arr[..., :1], 3, axis=2)
        blended = (rgb.astype(np.uint16) * alpha + PAD_VALUE * (255 - alpha) + 127) // 255
        return blended.astype(np.uint8)
    return np.ascontiguousarray(arr)


class SlideReader(ABC):
    """What slide mode needs from a large image, whatever its format."""

    #: whether ``read_level`` may run in several threads at once on this reader (Deep Zoom
    #: then decodes tiles of one slide in parallel instead of one at a time)
    thread_safe: bool = False

    #: short name of the backend ("tiffslide", "openslide", "pillow")
    backend: str = ""

    def __init__(self, name: str) -> None:
        self.name = name

    # -- metadata -----------------------------------------------------------------------
    @property
    @abstractmethod
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(width, height) of each pyramid level, finest first."""

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        w0, h0 = self.dimensions
        return tuple((w0 / w + h0 / h) / 2.0 for w, h in self.level_dimensions)

    @property
    @abstractmethod
    def mpp(self) -> float | None:
        """Level-0 µm per pixel from the file's metadata, or None when unknown/implausible."""

    # -- pixels -------------------------------------------------------------------------
    @abstractmethod
    def _read_level(self, level: int, lx: int, ly: int, w: int, h: int) -> np.ndarray:
        """An in-bounds region of ``level`` in that level's pixels, HxWx3 uint8."""

    def read_level(self, level: int, lx: int, ly: int, w: int, h: int) -> np.ndarray:
        """A region of ``level`` in that level's pixels; outside the image is white."""
        if not 0 <= level < self.level_count:
            raise IdcscanError(f"{self.name} has no pyramid level {level}.")
        out = np.full((h, w, 3), PAD_VALUE, dtype=np.uint8)
        lw, lh = self.level_dimensions[level]
        x0, y0 = max(lx, 0), max(ly, 0)
        x1, y1 = min(lx + w, lw), min(ly + h, lh)
        if x1 <= x0 or y1 <= y0:
            return out
        try:
            region = self._read_level(level, x0, y0, x1 - x0, y1 - y0)
        except IdcscanError:
            raise
        except Exception as exc:  # decoders raise many unrelated types on damaged data
            raise IdcscanError(
                f"Could not read pixels of {self.name} (level {level}, x={x0}, y={y0}): {exc}. "
                "The file may be truncated or damaged."
            ) from exc
        out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = region
        return out

    def read_region(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """``w`` x ``h`` pixels of ``level`` whose top-left corner is (x, y) in level 0."""
        ds = self.level_downsamples[level]
        return self.read_level(level, int(math.floor(x / ds)), int(math.floor(y / ds)), w, h)

    def best_level(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample``.

        Reading there and shrinking keeps all detail the target scale can show while decoding
        as few pixels as possible; a 0.1% tolerance absorbs pyramids whose sizes were rounded.
        """
        best = 0
        for level, ds in enumerate(self.level_downsamples):
            if ds <= downsample * 1.001:
                best = level if ds >= self.level_downsamples[best] else best
        return best

    def thumbnail(self, downsample: float, source_downsample: float | None = None) -> np.ndarray:
        """The whole image shrunk by ``downsample`` (HxWx3 uint8), read in bounded bands.

        The source is the coarsest level not coarser than ``source_downsample`` (default:
        ``downsample``; a larger value lets a cheap coarse level be enlarged a little rather
        than decoding a much finer one). Big sources are read and shrunk band by band, so
        memory stays near the thumbnail's own size.
        """
        w0, h0 = self.dimensions
        out_w = max(1, round(w0 / downsample))
        out_h = max(1, round(h0 / downsample))
        level = self.best_level(max(downsample, source_downsample or downsample))
        lw, lh = self.level_dimensions[level]
        if lw * lh <= _BAND_PIXELS:
            region = self.read_level(level, 0, 0, lw, lh)
            return resize(region, out_w, out_h)
        out = np.empty((out_h, out_w, 3), dtype=np.uint8)
        factor = lh / out_h
        rows_per_band = max(1, int(_BAND_PIXELS / lw / factor))
        for r0 in range(0, out_h, rows_per_band):
            r1 = min(out_h, r0 + rows_per_band)
            ly0, ly1 = round(r0 * factor), max(round(r1 * factor), round(r0 * factor) + 1)
            band = self.read_level(level, 0, ly0, lw, ly1 - ly0)
            out[r0:r1] = resize(band, out_w, r1 - r0)
        return out

    # -- lifetime -----------------------------------------------------------------------
    def close(self) -> None:  # noqa: B027  (optional for subclasses)
        pass

    def __enter__(self) -> "SlideReader":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "dimensions": list(self.dimensions),
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": [round(d, 4) for d in self.level_downsamples],
            "mpp": self.mpp,
        }


def resize(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Antialiased resize: area averaging (box) to shrink, bilinear to enlarge.

    Shrinking by area averaging is what scanners do to build pyramid levels, and it maps an
    integer factor exactly (each output pixel is the mean of the k x k pixels it covers), so
    a tile read from a finer level matches the same tile read from a coarser one.
    """
    if arr.shape[1] == width and arr.shape[0] == height:
        return arr
    shrinking = width <= arr.shape[1] and height <= arr.shape[0]
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    im = Image.fromarray(arr, mode="RGB")
    return np.asarray(im.resize((width, height), method), dtype=np.uint8)
