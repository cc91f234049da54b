"""Decode untrusted image bytes or files into Pillow images, safely.

Everything that reaches the model from outside (uploads, files named on the command line)
goes through ``decode_image``. The rules, and why:

* The type is judged by the content (Pillow's identification of the leading bytes), never by a
  file name or a client's ``Content-Type``: both are whatever the sender typed.
* Only well-known raster formats are decoded (``ACCEPTED_FORMATS``). Pillow identifies many
  more, some of which hand the data to outside programs (EPS runs Ghostscript) or exist only
  on some platforms (WMF); refusing them is cheaper than auditing them.
* The pixel count is checked from the header, before any pixel is decoded (``Image.open`` is
  lazy), so a small file that claims 100000 x 100000 pixels (a decompression bomb) costs
  nothing. Pillow's own guard (``Image.MAX_IMAGE_PIXELS``) is left as it is, because it is
  process-wide; when it fires first we report the same "too large" error.
* Odd modes (grayscale, palette, RGBA, 16-bit, CMYK) are converted later by
  ``idcscan.preprocessing.to_rgb``, never refused; any decodable size, 1 x 1 included, is read.
"""

from __future__ import annotations

import base64
import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from idcscan.errors import IdcscanError
from idcscan.preprocessing import to_rgb

#: Pillow format names decoded, with the names a person knows them by.
ACCEPTED_FORMATS: dict[str, str] = {
    "PNG": "PNG",
    "JPEG": "JPEG",
    "MPO": "JPEG",  # multi-picture JPEG from some cameras; the first picture is read
    "TIFF": "TIFF",
    "BMP": "BMP",
    "DIB": "BMP",
    "WEBP": "WebP",
    "GIF": "GIF",
    "PPM": "PNM",
    "JPEG2000": "JPEG 2000",
    "AVIF": "AVIF",
}
ACCEPTED_NAMES = "PNG, JPEG, TIFF, BMP, WebP, GIF, PNM, JPEG 2000 or AVIF"

#: Leading bytes of formats people send that Pillow cannot decode at all; they earn a
#: "wrong type" answer (415) instead of "broken image" (400).
_UNDECODABLE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "PDF"),
    (b"<svg", "SVG"),
    (b"<?xml", "XML/SVG"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"II\xbc", "JPEG XR"),
    (b"DICM", "DICOM"),
    (b"%!PS", "PostScript"),
)
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1")

DEFAULT_MAX_PIXELS = 50_000_000


class ImageError(IdcscanError):
    """An image that cannot be used; subclasses say why (the server maps them to 4xx)."""


class ImageTooLarge(ImageError):
    """More pixels than allowed, judged from the header (HTTP 413). ``size``: (width,
    height) as the header claims it, when it could be read."""

    def __init__(self, message: str, size: tuple[int, int] | None = None) -> None:
        super().__init__(message)
        self.size = size


class BadImage(ImageError):
    """Not an image, or a damaged/truncated one (HTTP 400)."""


class UnsupportedImage(ImageError):
    """A real image in a format idcscan does not decode (HTTP 415)."""


def _sniff_undecodable(head: bytes) -> str | None:
    """Name of a known non-decodable format from the leading bytes, if any."""
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    for signature, name in _UNDECODABLE_SIGNATURES:
        if stripped.startswith(signature):
            return name
    if stripped[:4].lower() == b"<svg" or b"<svg" in stripped[:512].lower():
        return "SVG"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "HEIF/HEIC"
    return None


def _msg(source: str | None, text: str) -> str:
    """Prefix a message with the input's name, or capitalise it when there is none."""
    return f"{source}: {text}" if source else text[:1].upper() + text[1:]


def decode_image(
    data: bytes | str | Path,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    source: str | None = None,
) -> Image.Image:
    """Fully decode ``data`` (bytes or a file path) into a Pillow image of its own mode.

    ``source`` names the input in error messages (a file name). Raises ``ImageTooLarge``,
    ``BadImage`` or ``UnsupportedImage``; never returns a half-read image.
    """
    if isinstance(data, (str, Path)):
        path = Path(data)
        source = source or str(path)
        try:
            with open(path, "rb") as fh:
                head = fh.read(512)
        except OSError as exc:
            raise BadImage(_msg(source, f"cannot read the file ({exc.strerror or exc}).")) from exc
        opener: Path | io.BytesIO = path
    else:
        head = bytes(data[:512])
        opener = io.BytesIO(data)
    if not head:
        raise BadImage(_msg(source, "the file is empty."))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(opener)
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(_too_large(source, None, max_pixels)) from exc
        except UnidentifiedImageError as exc:
            kind = _sniff_undecodable(head)
            if kind:
                raise UnsupportedImage(
                    _msg(source, f"{kind} files are not supported; send a {ACCEPTED_NAMES} image.")
                ) from exc
            raise BadImage(
                _msg(
                    source,
                    f"this is not an image idcscan can read (not a valid {ACCEPTED_NAMES} file).",
                )
            ) from exc
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise BadImage(_msg(source, f"the image header is damaged ({exc}).")) from exc

        try:
            if image.format not in ACCEPTED_FORMATS:
                raise UnsupportedImage(
                    _msg(
                        source,
                        f"{image.format} images are not supported; send a {ACCEPTED_NAMES} image.",
                    )
                )
            if image.width * image.height > max_pixels:
                raise ImageTooLarge(_too_large(source, image.size, max_pixels), image.size)
            try:
                image.load()
            except Image.DecompressionBombError as exc:
                raise ImageTooLarge(_too_large(source, None, max_pixels)) from exc
            except Exception as exc:  # decoders raise OSError, ValueError, SyntaxError, ...
                raise BadImage(
                    _msg(source, f"the image is damaged or truncated, cannot decode it ({exc}).")
                ) from exc
        except ImageError:
            image.close()
            raise
    # A detached, upright copy: frees the file handle (multi-frame files keep theirs open) and
    # applies the EXIF orientation a camera or phone wrote, so overlays match what people see.
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:  # a damaged EXIF block is no reason to refuse the pixels
        upright = image.copy()
    image.close()
    return upright


def _too_large(source: str | None, size: tuple[int, int] | None, max_pixels: int) -> str:
    claimed = f"{size[0]} x {size[1]} pixels" if size else "more pixels than can be decoded safely"
    return _msg(
        source,
        f"the image header claims {claimed}; the limit is {max_pixels:,} pixels. "
        "Send a smaller image (or a crop of it).",
    )


def decode_rgb(
    data: bytes | str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, source: str | None = None
) -> Image.Image:
    """``decode_image`` followed by the project's one conversion to 8-bit RGB."""
    image = decode_image(data, max_pixels=max_pixels, source=source)
    try:
        return to_rgb(image)
    except Exception as exc:  # an exotic mode Pillow decodes but cannot convert
        raise UnsupportedImage(
            _msg(source, f"images in Pillow mode {image.mode} cannot be converted to RGB.")
        ) from exc


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def png_data_url(image: Image.Image) -> str:
    """A ``data:image/png;base64,...`` URL a browser shows directly (no file written)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")
