"""One reader interface for every large image: whole-slide pyramids and plain pictures.

Slide mode only ever asks a reader for regions of a pyramid level, so memory stays bounded
by what is asked (a row band of tiles, a thumbnail) for pyramidal formats:

* ``TiffSlideReader``: SVS, NDPI, SCN, BIF, pyramidal/generic TIFF, through tiffslide (tiles
  decoded on demand; the full-resolution level is never held in memory).
* ``OpenSlideReader``: MRXS and the other formats only OpenSlide reads; openslide is an
  optional dependency (``pip install 'idcscan[openslide]'``), imported only when needed.
* ``PlainImageReader``: PNG/JPEG/BMP/WebP (and TIFFs tiffslide cannot read), through Pillow.
  These formats have no pyramid and no random access, so the whole image is decoded once
  and kept: its memory is the image's own size (W x H x 3 bytes).

Coordinates follow OpenSlide: ``read_region(level, x, y, w, h)`` takes the top-left corner
in level-0 pixels and the size in pixels of ``level``. Anything outside the image is white
(glass), as the Kaggle edge crops were padded.
"""

from __future__ import annotations

import io
import math
import warnings
from abc import ABC, abstractmethod
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps

from idcscan.errors import IdcscanError
from idcscan.preprocessing import PAD_VALUE, to_rgb

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


class _PyramidReader(SlideReader):
    """Readers of OpenSlide-style libraries: levels, downsamples and mpp read once at open."""

    _dims: tuple[tuple[int, int], ...]
    _downsamples: tuple[float, ...]
    _mpp: float | None

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._dims

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._downsamples

    @property
    def mpp(self) -> float | None:
        return self._mpp



class TiffSlideReader(_PyramidReader):
    """SVS, NDPI, pyramidal and generic TIFF through tiffslide (tiles decoded on demand)."""

    backend = "tiffslide"

    def __init__(self, source: str | Path | BinaryIO, name: str | None = None) -> None:
        import tiffslide

        super().__init__(name or str(source))
        try:
            self._slide = tiffslide.TiffSlide(source)
            self._dims = tuple(
                (int(w), int(h)) for w, h in self._slide.level_dimensions
            )
            self._downsamples = tuple(float(d) for d in self._slide.level_downsamples)
            props = self._slide.properties
        except Exception as exc:  # tifffile/zarr raise many types on bad input
            raise IdcscanError(
                f"Cannot open {self.name} as a TIFF/whole-slide image: {exc}. "
                "Is the file complete and in a supported format?"
            ) from exc
        self._mpp = _mpp_from_properties(props, "tiffslide.mpp-x", "tiffslide.mpp-y")
        self.format = str(props.get("tiffslide.vendor") or "tiff")
        self._tiled = self._tiled_pages(props)
        if any(r is not None for r in self._tiled):
            # tifffile's handle seeks then reads, and by default its lock is a no-op:
            # concurrent reads returned corrupt tiles (deflate errors, wrong pixels). With
            # the lock only the seek+read is serialised; decoding runs in parallel.
            self._slide.ts_tifffile.filehandle.set_lock(True)
        # tiffslide's own (zarr) path is not known to be safe: parallel only when every
        # level is read through the direct tile reader
        self.thread_safe = all(r is not None for r in self._tiled)

    def _tiled_pages(self, props: Any) -> list[Any]:
        """Per level, a direct tile reader when the level is a plain tiled page (else None)."""
        from idcscan.inference.tiff_tiles import TiledPage

        try:
            tif = self._slide.ts_tifffile
            series = tif.series[int(props.get("tiffslide.series-index") or 0)]
            pages = [lvl.keyframe for lvl in series.levels]
        except Exception:  # any surprise: tiffslide reads every level
            return [None] * len(self._dims)
        if len(pages) != len(self._dims):
            return [None] * len(self._dims)
        readers = []
        for page, (w, h) in zip(pages, self._dims):
            same = int(page.imagewidth) == w and int(page.imagelength) == h
            readers.append(TiledPage.for_page(page, tif.filehandle) if same else None)
        return readers

    def _read_level(self, level: int, lx: int, ly: int, w: int, h: int) -> np.ndarray:
        direct = self._tiled[level]
        if direct is not None:
            return as_rgb_array(direct.read(lx, ly, w, h))
        # tiffslide maps level-0 locations to level pixels with int(x / ds); ceil(lx * ds)
        # lands exactly on lx for any downsample >= 1.
        ds = self._downsamples[level]
        location = (math.ceil(lx * ds), math.ceil(ly * ds))
        arr = self._slide.read_region(location, level, (w, h), as_array=True, padding=False)
        return as_rgb_array(np.asarray(arr))

    def close(self) -> None:
        self._slide.close()


def _mpp_from_properties(props: Any, key_x: str, key_y: str) -> float | None:
    try:
        mpp_x = float(props.get(key_x)) if props.get(key_x) is not None else None
        mpp_y = float(props.get(key_y)) if props.get(key_y) is not None else None
    except (TypeError, ValueError):
        return None
    values = [v for v in (mpp_x, mpp_y) if v is not None]
    return plausible_mpp(sum(values) / len(values)) if values else None


class OpenSlideReader(_PyramidReader):
    """MRXS and every other format OpenSlide reads (optional dependency)."""

    backend = "openslide"
    thread_safe = True  # OpenSlide's handles are documented thread-safe

    def __init__(self, path: str | Path) -> None:
        openslide = import_openslide(Path(path))
        super().__init__(str(path))
        try:
            self._slide = openslide.OpenSlide(str(path))
        except Exception as exc:  # OpenSlideError, OpenSlideUnsupportedFormatError
            raise IdcscanError(f"OpenSlide cannot open {path}: {exc}") from exc
        self._dims = tuple((int(w), int(h)) for w, h in self._slide.level_dimensions)
        self._downsamples = tuple(float(d) for d in self._slide.level_downsamples)
        self._mpp = _mpp_from_properties(
            self._slide.properties, openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y
        )
        self.format = str(self._slide.properties.get(openslide.PROPERTY_NAME_VENDOR) or "openslide")

    def _read_level(self, level: int, lx: int, ly: int, w: int, h: int) -> np.ndarray:
        ds = self._downsamples[level]
        rgba = self._slide.read_region((round(lx * ds), round(ly * ds)), level, (w, h))
        return as_rgb_array(np.asarray(rgba))

    def close(self) -> None:
        self._slide.close()


def import_openslide(path: Path) -> Any:
    try:
        import openslide
    except (ImportError, OSError) as exc:
        raise IdcscanError(
            f"Reading {path.suffix or path.name} files needs OpenSlide, which is not installed "
            f"({exc}). Install it with `pip install 'idcscan[openslide]'` "
            "(openslide-bin + openslide-python), or convert the slide to pyramidal TIFF."
        ) from exc
    return openslide


class PlainImageReader(SlideReader):
    """PNG/JPEG/TIFF/... through Pillow: one level, decoded once, held in memory.

    ``max_pixels`` guards against decompression bombs (judged from the header, before
    decoding); None lifts Pillow's own limit, which is right for trusted CLI inputs.
    """

    backend = "pillow"

    def __init__(
        self,
        source: str | Path | bytes | BinaryIO,
        name: str | None = None,
        max_pixels: int | None = None,
    ) -> None:
        super().__init__(name or str(source))
        if isinstance(source, bytes):
            source = io.BytesIO(source)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # bomb and corrupt-EXIF chatter; errors raise
                # Pillow's bomb guard is process-wide; lifted only while opening a file the
                # user named (trusted input), with our own explicit limit checked below.
                previous = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = None
                try:
                    im = Image.open(source)
                finally:
                    Image.MAX_IMAGE_PIXELS = previous
            with im:
                if max_pixels is not None and im.width * im.height > max_pixels:
                    raise IdcscanError(
                        f"{self.name} is {im.width} x {im.height} = {im.width * im.height:,} "
                        f"pixels, more than the limit of {max_pixels:,}."
                    )
                self._mpp = mpp_from_dpi(im.info.get("dpi"))
                self.format = str(im.format or "image")
                im.load()
                upright = _upright(im)
                self._array = np.asarray(to_rgb(upright), dtype=np.uint8)
        except IdcscanError:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise IdcscanError(
                f"Cannot read {self.name} as an image: {exc}. Give a PNG, JPEG or TIFF file "
                "(or a whole-slide format such as SVS/NDPI)."
            ) from exc
        h, w = self._array.shape[:2]
        self._dims = ((w, h),)

    @classmethod
    def from_array(
        cls, array: np.ndarray, name: str, mpp: float | None = None
    ) -> "PlainImageReader":
        """A reader over an RGB array already decoded (e.g. an upload), without copying it."""
        reader = cls.__new__(cls)
        SlideReader.__init__(reader, name)
        reader._array = as_rgb_array(np.asarray(array))
        reader._mpp = plausible_mpp(mpp) if mpp is not None else None
        reader.format = "array"
        h, w = reader._array.shape[:2]
        reader._dims = ((w, h),)
        return reader

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._dims

    @property
    def mpp(self) -> float | None:
        return self._mpp

    @property
    def array(self) -> np.ndarray:
        return self._array

    def _read_level(self, level: int, lx: int, ly: int, w: int, h: int) -> np.ndarray:
        return self._array[ly : ly + h, lx : lx + w]

    def close(self) -> None:
        self._array = np.empty((0, 0, 3), dtype=np.uint8)


def mpp_from_dpi(dpi: Any) -> float | None:
    """µm/px from Pillow's ``info["dpi"]`` when it is a microscope's scale, else None."""
    if dpi is None:
        return None
    try:
        values = [float(Fraction(str(v))) if not isinstance(v, float) else v for v in dpi]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    values = [v for v in values if v > 0]
    if not values:
        return None
    return plausible_mpp(25_400.0 / (sum(values) / len(values)))


def _upright(im: Image.Image) -> Image.Image:
    """Apply an EXIF orientation if there is one (cameras); no copy when there is none."""
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # a damaged EXIF block is no reason to refuse the pixels
        return im
    return ImageOps.exif_transpose(im) if orientation not in (None, 1) else im


def open_slide(path: str | Path) -> SlideReader:
    """Open any supported large image with the reader that suits its format.

    TIFF-family files go through tiffslide (bounded memory); formats only OpenSlide knows
    need the optional openslide; everything else Pillow decodes. A TIFF that tiffslide
    cannot parse falls back to OpenSlide (when installed) and then to Pillow.
    """
    path = Path(path)
    if not path.is_file():
        raise IdcscanError(f"{path} does not exist or is not a file.")
    suffix = path.suffix.lower()
    if suffix in OPENSLIDE_SUFFIXES:
        return OpenSlideReader(path)
    if suffix in PLAIN_SUFFIXES:
        return PlainImageReader(path, name=str(path))
    errors: list[str] = []
    if suffix in TIFFSLIDE_SUFFIXES or _looks_like_tiff(path):
        try:
            return TiffSlideReader(path, name=str(path))
        except IdcscanError as exc:
            errors.append(str(exc))
        try:
            import_openslide(path)
            return OpenSlideReader(path)
        except IdcscanError as exc:
            errors.append(str(exc))
    try:
        return PlainImageReader(path, name=str(path))
    except IdcscanError as exc:
        errors.append(str(exc))
    if suffix in TIFFSLIDE_SUFFIXES:
        raise IdcscanError(f"Cannot read {path}: {errors[0]}")
    raise IdcscanError(
        f"{path} is not an image or slide idcscan can read; give a PNG, JPEG or TIFF image or "
        f"a whole-slide file ({', '.join(sorted(SUPPORTED_SUFFIXES))})."
    )


def _looks_like_tiff(path: Path) -> bool:
    with open(path, "rb") as fh:
        magic = fh.read(4)
    return magic[:2] in (b"II", b"MM")


def open_slide_bytes(
    data: bytes, name: str, max_pixels: int, training_mpp: float = 4.0
) -> SlideReader:
    """Open an uploaded large image held in memory (the server): nothing touches the disk.

    Tiled or pyramidal TIFFs are read region by region from the bytes through tiffslide;
    their size is judged in pixels at the training scale (the work they cause). Everything
    else is decoded whole by ``idcscan.inference.images`` (type by content, pixel limit
    checked from the header before decoding), so ``max_pixels`` bounds memory.
    """
    from idcscan.inference.images import ImageTooLarge, decode_rgb

    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        try:
            reader: SlideReader | None = TiffSlideReader(io.BytesIO(data), name=name)
        except IdcscanError:
            reader = None  # let Pillow try, and word the error
        if reader is not None and (reader.level_count > 1 or _is_tiled(reader)):
            w, h = reader.dimensions
            scale = (reader.mpp or training_mpp) / training_mpp
            work = w * h * scale * scale
            if work > max_pixels:
                reader.close()
                raise ImageTooLarge(
                    f"{name}: {w} x {h} pixels at {reader.mpp or training_mpp:g} µm/px is "
                    f"{work:,.0f} pixels at the training scale; the limit is {max_pixels:,}. "
                    "Map it with `idcscan slide` instead."
                )
            return reader
        if reader is not None:
            reader.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as header:
                mpp = mpp_from_dpi(header.info.get("dpi"))
        except Exception:  # decode_rgb below words the error
            mpp = None
    rgb = decode_rgb(data, max_pixels=max_pixels, source=name)
    return PlainImageReader.from_array(np.asarray(rgb, dtype=np.uint8), name=name, mpp=mpp)


def _is_tiled(reader: TiffSlideReader) -> bool:
    try:
        return bool(reader._slide.ts_tifffile.pages[0].is_tiled)
    except Exception:  # best effort: an untiled answer only means Pillow decodes it whole
        return False
