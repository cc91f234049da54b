"""Decoding untrusted images: content decides the type, limits hold before decoding."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from idcscan.images import (
    BadImage,
    ImageTooLarge,
    UnsupportedImage,
    decode_image,
    decode_rgb,
    png_data_url,
)
from idcscan.preprocessing import to_patch


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def rgb(rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))


def test_png_round_trips_exactly(rgb: Image.Image) -> None:
    decoded = decode_rgb(encode(rgb, "PNG"))
    assert decoded.mode == "RGB" and decoded.size == (60, 40)
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(rgb))


@pytest.mark.parametrize(
    "mode_maker",
    [
        lambda im: im.convert("L"),
        lambda im: im.convert("P"),
        lambda im: im.convert("RGBA"),
        lambda im: im.convert("LA"),
        lambda im: Image.fromarray(
            (np.asarray(im.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        ),
    ],
    ids=["grayscale", "palette", "rgba", "gray-alpha", "16-bit"],
)
def test_odd_modes_are_converted_not_refused(rgb: Image.Image, mode_maker) -> None:
    decoded = decode_rgb(encode(mode_maker(rgb), "PNG"))
    assert decoded.mode == "RGB" and decoded.size == (60, 40)
    assert to_patch(decoded).shape == (50, 50, 3)


def test_cmyk_jpeg_and_16_bit_tiff_are_accepted(rgb: Image.Image) -> None:
    assert decode_rgb(encode(rgb.convert("CMYK"), "JPEG")).mode == "RGB"
    sixteen = Image.fromarray(np.arange(2400, dtype=np.uint16).reshape(40, 60) * 27)
    decoded = decode_rgb(encode(sixteen, "TIFF"))
    assert decoded.mode == "RGB"
    # 16-bit data is scaled, not clipped: the darkest and brightest pixels stay apart.
    gray = np.asarray(decoded)[..., 0]
    assert gray.min() < 10 and gray.max() > 200


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF", "BMP", "WEBP", "GIF"])
def test_common_formats_decode(rgb: Image.Image, fmt: str) -> None:
    assert decode_rgb(encode(rgb, fmt)).size == (60, 40)


def test_one_pixel_image_is_answered() -> None:
    decoded = decode_rgb(encode(Image.new("RGB", (1, 1), (120, 40, 90)), "PNG"))
    patch = to_patch(decoded)
    assert patch.shape == (50, 50, 3)
    assert tuple(patch[0, 0]) == (120, 40, 90) and tuple(patch[-1, -1]) == (255, 255, 255)


def test_type_is_judged_by_content_not_name(tmp_path: Path, rgb: Image.Image) -> None:
    misnamed = tmp_path / "notes.txt"
    misnamed.write_bytes(encode(rgb, "PNG"))
    assert decode_rgb(misnamed).size == (60, 40)
    fake = tmp_path / "slide.png"
    fake.write_text("not an image at all")
    with pytest.raises(BadImage, match="slide.png"):
        decode_rgb(fake)


def test_truncated_and_random_bytes_are_bad_images(rgb: Image.Image, rng) -> None:
    data = encode(rgb, "PNG")
    with pytest.raises(BadImage, match="truncated"):
        decode_rgb(data[: len(data) // 2])
    with pytest.raises(BadImage):
        decode_rgb(encode(rgb, "JPEG")[:300])
    with pytest.raises(BadImage, match="not an image"):
        decode_rgb(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(BadImage, match="empty"):
        decode_rgb(b"")


def test_decompression_bomb_is_refused_from_the_header() -> None:
    # Over Pillow's own guard (judged inside Image.open) ...
    with pytest.raises(ImageTooLarge, match="limit"):
        decode_rgb(png_claiming(100_000, 100_000))
    # ... and over ours, which is lower: the header says 8000 x 8000, nothing is decoded.
    with pytest.raises(ImageTooLarge, match="8000 x 8000"):
        decode_rgb(png_claiming(8000, 8000), max_pixels=10_000_000)


def test_pixel_limit_is_configurable(rgb: Image.Image) -> None:
    data = encode(rgb, "PNG")
    with pytest.raises(ImageTooLarge):
        decode_rgb(data, max_pixels=60 * 40 - 1)
    assert decode_rgb(data, max_pixels=60 * 40).size == (60, 40)


@pytest.mark.parametrize(
    "make",
    [
        lambda im: encode(im, "ICO"),
        lambda im: encode(im, "PDF"),
        lambda im: b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9"/>',
        lambda im: b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"></svg>',
    ],
    ids=["ico", "pdf", "xml-svg", "svg"],
)
def test_formats_idcscan_does_not_decode_are_unsupported(rgb: Image.Image, make) -> None:
    with pytest.raises(UnsupportedImage, match="not supported"):
        decode_image(make(rgb))


def test_exif_orientation_is_applied(rgb: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    decoded = decode_rgb(encode(rgb, "JPEG", exif=exif.tobytes(), quality=95))
    assert decoded.size == (40, 60)


def test_png_data_url_decodes_back(rgb: Image.Image) -> None:
    import base64

    url = png_data_url(rgb)
    assert url.startswith("data:image/png;base64,")
    back = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert back.format == "PNG"
    np.testing.assert_array_equal(np.asarray(back), np.asarray(rgb))
