"""Bad input never gets a 500 nor writes a file; odd but valid images are answered.

400: no usable upload or a broken image; 413: too many bytes (declared or streamed) or pixels
(judged from the header); 415: an image format idcscan does not decode.
"""

from __future__ import annotations

import asyncio
import builtins
import io
import os
import struct
import tempfile
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from idcscan.server.app import create_app
from idcscan.server.state import ServerSettings

SMALL_LIMIT_MB = 0.05  # ~52 kB: lets the tests cross the byte limit cheaply


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


BOUNDARY = "XyZb0und"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def multipart_head(field: str, filename: str) -> bytes:
    """The opening of a multipart body up to where the file's bytes start."""
    return (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; "
        f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()


def multipart(field: str, filename: str, data: bytes) -> bytes:
    return multipart_head(field, filename) + data + f"\r\n--{BOUNDARY}--\r\n".encode()


@pytest.fixture(scope="module")
def app(tiny_bundle: Path):
    return create_app(tiny_bundle, settings=ServerSettings(max_upload_mb=SMALL_LIMIT_MB))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


@pytest.fixture
def rgb() -> Image.Image:
    rng = np.random.default_rng(8)
    return Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))


def assert_error(response: httpx.Response, status: int, *words: str, use: str | None = None
                 ) -> None:
    """The error answer: {"error"}, plus {"use"} where the upload belongs elsewhere."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ({"error"} if use is None else {"error", "use"}), body
    assert body.get("use") == use
    assert isinstance(body["error"], str) and len(body["error"]) > 15
    for word in words:
        assert word.lower() in body["error"].lower(), body["error"]


# ------------------------------------------------------------------------ accepted inputs


@pytest.mark.parametrize(
    "make",
    [
        lambda im: encode(im.convert("L"), "PNG"),
        lambda im: encode(im.convert("P"), "PNG"),
        lambda im: encode(im.convert("RGBA"), "PNG"),
        lambda im: encode(
            Image.fromarray(np.asarray(im.convert("L"), dtype=np.uint16) * 257), "PNG"
        ),
        lambda im: encode(im.convert("CMYK"), "JPEG"),
        lambda im: encode(Image.new("RGB", (1, 1), (200, 30, 90)), "PNG"),
        lambda im: encode(im, "WEBP", lossless=True),
        lambda im: encode(im, "TIFF"),
    ],
    ids=["grayscale", "palette", "rgba", "16-bit", "cmyk-jpeg", "1x1", "webp", "tiff"],
)
def test_valid_images_of_any_mode_and_size_are_answered(client, rgb, make) -> None:
    response = client.post("/predict", files={"file": ("upload.png", make(rgb), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["class_name"] in ("IDC Positive", "IDC Negative")


def test_name_and_client_type_do_not_decide(client, rgb) -> None:
    data = encode(rgb, "PNG")
    as_txt = client.post("/predict", files={"file": ("notes.txt", data, "text/plain")})
    as_png = client.post("/predict", files={"file": ("img.png", data, "image/png")})
    assert as_txt.status_code == 200
    assert as_txt.json()["probability_positive"] == as_png.json()["probability_positive"]
    fake = client.post("/predict", files={"file": ("img.png", b"GIF? no. text.", "image/png")})
    assert_error(fake, 400, "not an image")


# ------------------------------------------------------------------------ refused: 400


def test_empty_body(client) -> None:
    empty = client.post("/predict", content=b"", headers={"Content-Type": MULTIPART})
    assert_error(empty, 400, "empty")
    assert_error(client.post("/predict"), 400)


def test_wrong_field_name(client, rgb) -> None:
    response = client.post("/predict", files={"image": ("a.png", encode(rgb, "PNG"))})
    assert_error(response, 400, "'file'", "'image'")


def test_not_multipart(client, rgb) -> None:
    raw = client.post("/predict", content=encode(rgb, "PNG"), headers={"Content-Type": "image/png"})
    assert_error(raw, 400, "multipart/form-data")
    as_json = client.post("/predict", json={"file": "aGVsbG8="})
    assert_error(as_json, 400, "multipart/form-data")


def test_empty_file_and_malformed_multipart(client, rgb) -> None:
    assert_error(client.post("/predict", files={"file": ("a.png", b"")}), 400, "empty")
    unterminated = multipart("file", "a.png", encode(rgb, "PNG"))[:-20]
    response = client.post("/predict", content=unterminated, headers={"Content-Type": MULTIPART})
    assert_error(response, 400, "multipart")
    no_boundary = client.post(
        "/predict", content=b"--x\r\n", headers={"Content-Type": "multipart/form-data"}
    )
    assert_error(no_boundary, 400, "multipart/form-data")


def test_truncated_png_and_random_bytes(client, rgb) -> None:
    data = encode(rgb, "PNG")
    half = client.post("/predict", files={"file": ("t.png", data[: len(data) // 2])})
    assert_error(half, 400, "truncated")
    noise = np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    assert_error(client.post("/predict", files={"file": ("r.png", noise)}), 400, "not an image")


def test_bad_query_parameter_is_400_not_422(client, rgb) -> None:
    files = {"file": ("a.png", encode(rgb, "PNG"))}
    response = client.post("/predict?explain=perhaps", files=files)
    assert_error(response, 400, "explain")


# ------------------------------------------------------------------------ refused: 413, 415


def test_over_the_limit_by_content_length(client) -> None:
    body = multipart("file", "big.png", b"\0" * 200_000)
    response = client.post("/predict", content=body, headers={"Content-Type": MULTIPART})
    # too large for a patch: the large-image view, with its larger limits, is named
    assert_error(response, 413, "limit", "POST /slide", use="/slide")


def test_over_the_limit_while_streaming_without_or_with_a_lying_length(app) -> None:
    """Chunked uploads and false Content-Length headers are cut off at the limit."""
    limit = int(SMALL_LIMIT_MB * 1024 * 1024)
    chunk = 8192

    async def run(headers: dict[str, str]) -> tuple[httpx.Response, int]:
        sent = 0

        async def body():
            nonlocal sent
            head = multipart_head("file", "big.png")
            sent += len(head)
            yield head
            while sent < 50 * limit:  # far more than allowed; the server must stop reading
                sent += chunk
                yield b"\0" * chunk

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            response = await c.post("/predict", content=body(), headers=headers)
        return response, sent

    chunked = {"Content-Type": MULTIPART}
    lying = {"Content-Type": MULTIPART, "Content-Length": "900"}
    for headers in (chunked, lying):
        response, sent = asyncio.run(run(headers))
        assert_error(response, 413, "limit", use="/slide")
        assert sent <= limit + 2 * chunk + 1024


def test_decompression_bomb_is_413_from_the_header(client) -> None:
    for width, height, use in ((100_000, 100_000, None), (8000, 8000, "/slide")):
        files = {"file": ("bomb.png", png_claiming(width, height))}
        response = client.post("/predict", files=files)
        assert_error(response, 413, "pixels", use=use)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda im: encode(im, "ICO"), "ICO"),
        (lambda im: encode(im, "PDF"), "PDF"),
        (lambda im: b'<svg xmlns="http://www.w3.org/2000/svg" width="5" height="5"/>', "SVG"),
    ],
)
def test_formats_idcscan_does_not_decode_are_415(client, rgb, make, name) -> None:
    response = client.post("/predict", files={"file": ("x.png", make(rgb), "image/png")})
    assert_error(response, 415, name, "not supported")


def test_unknown_routes_and_methods_answer_json(client) -> None:
    assert_error(client.get("/nothing-here"), 404)
    assert client.get("/predict").json().keys() == {"error"}
    assert client.get("/predict").status_code == 405


def test_batch_refuses_the_whole_request_only_when_the_request_is_bad(client, rgb) -> None:
    wrong_field = client.post("/predict/batch", files={"file": ("a.png", encode(rgb, "PNG"))})
    assert_error(wrong_field, 400, "'files'")
    good = encode(rgb, "PNG")
    files = [("files", ("a.png", good)), ("files", ("bomb.png", png_claiming(100_000, 100_000))),
             ("files", ("x.ico", encode(rgb, "ICO")))]
    results = client.post("/predict/batch", files=files).json()["results"]
    assert "probability_positive" in results[0]
    assert "pixels" in results[1]["error"] and "ICO" in results[2]["error"]


# ------------------------------------------------------------------------ nothing on disk


def test_no_request_writes_a_file(app, rgb, monkeypatch, tmp_path: Path) -> None:
    writes: list[str] = []
    real_open = builtins.open
    real_os_open = os.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            writes.append(str(file))
            raise AssertionError(f"the server tried to write {file}")
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            writes.append(str(path))
            raise AssertionError(f"the server tried to create {path}")
        return real_os_open(path, flags, *args, **kwargs)

    def no_temp(*args, **kwargs):
        writes.append("tempfile")
        raise AssertionError("the server tried to spool to a temporary file")

    requests = [
        {"files": {"file": ("a.png", encode(rgb, "PNG"))}},
        {"files": {"file": ("a.png", encode(rgb, "PNG"))}, "params": {"explain": "true"}},
        {"files": {"file": ("t.png", encode(rgb, "PNG")[:300])}},
        {"files": {"file": ("x.ico", encode(rgb, "ICO"))}},
        {"files": {"file": ("b.png", png_claiming(100_000, 100_000))}},
        {"files": {"file": ("big.bin", b"\0" * 40_000)}},
        {
            "content": multipart("file", "big.png", b"\0" * 200_000),
            "headers": {"Content-Type": MULTIPART},
        },
        {"files": {"wrong": ("a.png", encode(rgb, "PNG"))}},
    ]
    expected = [200, 200, 400, 415, 413, 400, 413, 400]
    temp_dir = Path(tempfile.gettempdir())
    before = set(temp_dir.iterdir())
    with TestClient(app) as client:  # client set up before the guards go on
        monkeypatch.setattr(builtins, "open", guarded_open)
        monkeypatch.setattr(os, "open", guarded_os_open)
        for name in ("SpooledTemporaryFile", "NamedTemporaryFile", "TemporaryFile", "mkstemp"):
            monkeypatch.setattr(tempfile, name, no_temp)
        statuses = [client.post("/predict", **kw).status_code for kw in requests]
        monkeypatch.undo()
    assert statuses == expected
    assert writes == []
    assert set(temp_dir.iterdir()) == before
