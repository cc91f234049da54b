"""The readers of each format, and ``open_slide`` that picks one for a file (or upload).

* ``TiffSlideReader``: SVS, NDPI, SCN, BIF, pyramidal/generic TIFF, through tiffslide (tiles
  decoded on demand; the full-resolution level is never held in memory).
* ``OpenSlideReader``: MRXS, DICOM WSI and the other formats only OpenSlide reads; openslide
  is an optional dependency (``pip install 'idcscan[openslide]'``), imported only when needed.
* ``PlainImageReader``: PNG/JPEG/BMP/WebP (and TIFFs tiffslide cannot read), through Pillow.
  These formats have no pyramid and no random access, so the whole image is decoded once
  and kept: its memory is the image's own size (W x H x 3 bytes).
"""

from __future__ import annotations

import io
import math
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps

from idcscan.errors import IdcscanError
from idcscan.slides.reader import (
    OPENSLIDE_SUFFIXES,
    PLAIN_SUFFIXES,
    SUPPORTED_SUFFIXES,
    TIFFSLIDE_SUFFIXES,
    SlideReader,
    as_rgb_array,
    plausible_mpp,
)
from idcscan.preprocessing import to_rgb


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
        from idcscan.slides.tiff_tiles import TiledPage

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
                        f"pixels, more than the {max_pixels:,} a plain picture may have here "
                        "(it is decoded whole); save it as a tiled pyramidal TIFF (e.g. `vips "
                        "tiffsave IN OUT.tif --tile --pyramid`), or map it with `idcscan slide`."
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


def open_slide(path: str | Path, max_plain_pixels: int | None = None) -> SlideReader:
    """Open any supported large image with the reader that suits its format.

    TIFF-family files go through tiffslide (bounded memory); formats only OpenSlide knows
    need the optional openslide; everything else Pillow decodes. A TIFF that tiffslide
    cannot parse falls back to OpenSlide (when installed) and then to Pillow.
    ``max_plain_pixels`` bounds the pictures Pillow decodes whole (None: no bound, for a
    file the user named on the command line).
    """
    path = Path(path)
    if not path.is_file():
        raise IdcscanError(f"{path} does not exist or is not a file.")
    suffix = path.suffix.lower()
    if suffix in OPENSLIDE_SUFFIXES:
        return OpenSlideReader(path)
    if suffix in PLAIN_SUFFIXES:
        return PlainImageReader(path, name=str(path), max_pixels=max_plain_pixels)
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
        return PlainImageReader(path, name=str(path), max_pixels=max_plain_pixels)
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
    else is decoded whole by ``idcscan.images`` (type by content, pixel limit
    checked from the header before decoding), so ``max_pixels`` bounds memory.
    """
    from idcscan.images import ImageTooLarge, decode_rgb

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
