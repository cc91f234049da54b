"""Property-based fuzz of the upload and image-decoding path (Hypothesis).

Whatever bytes arrive, in whatever multipart envelope, ``/predict`` answers either a valid
prediction or a 4xx JSON error that says what is wrong: never a 5xx, never a crash. Examples
are bounded (``max_examples``) and there is no per-example deadline, so a busy machine slows
the test down without failing it.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from idcscan.server.app import create_app
from idcscan.server.state import ServerSettings

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FORMATS = ["PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP", "PPM"]
MODES = ["RGB", "L", "RGBA", "P", "1", "I;16", "CMYK", "LA"]


@pytest.fixture(scope="module")
def client(tiny_bundle):
    limits = ServerSettings(max_upload_mb=1.0, max_pixels=1_000_000)
    with TestClient(create_app(tiny_bundle, settings=limits), raise_server_exceptions=False) as c:
        yield c


def _check(response) -> None:
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code == 200:
        assert body["class_name"] in ("IDC Positive", "IDC Negative")
        assert body["predicted_class"] in (0, 1)
        assert round(body["probability_positive"] + body["probability_negative"], 2) == 100.0
        assert body["image"].startswith("data:image/png;base64,")
    else:
        assert response.status_code in (400, 408, 413, 415), response.status_code
        assert set(body) == {"error"} and body["error"].strip()


@st.composite
def images(draw) -> bytes:
    """A real image of random size, mode and format (those the format can store)."""
    width = draw(st.integers(1, 120))
    height = draw(st.integers(1, 120))
    mode = draw(st.sampled_from(MODES))
    fmt = draw(st.sampled_from(FORMATS))
    seed = draw(st.integers(0, 2**32 - 1))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    base = Image.fromarray(pixels)
    try:
        image = base.convert(mode)
    except ValueError:
        image = base
    buf = io.BytesIO()
    try:
        image.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):  # this format cannot store this mode
        buf = io.BytesIO()
        base.save(buf, format=fmt)
    return buf.getvalue()


@st.composite
def damaged(draw, source=images()) -> bytes:
    """A real image, then cut short, overwritten in places, or given a foreign prefix."""
    data = bytearray(draw(source))
    how = draw(st.sampled_from(["truncate", "flip", "prefix", "splice"]))
    if how == "truncate":
        return bytes(data[: draw(st.integers(0, len(data)))])
    if how == "flip":
        for _ in range(draw(st.integers(1, 16))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        return bytes(data)
    if how == "prefix":
        return draw(st.binary(max_size=16)) + bytes(data)
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=64)) + bytes(data[cut:])


@FUZZ
@given(data=st.one_of(images(), damaged(), st.binary(max_size=2048)))
def test_any_file_gets_a_prediction_or_a_4xx_json(client, data: bytes) -> None:
    _check(client.post("/predict", files={"file": ("upload.bin", data, "image/png")}))


@FUZZ
@given(
    data=images(),
    field=st.sampled_from(["file", "files", "image", "", "fi\u00e9le"]),
    filename=st.one_of(st.none(), st.text(max_size=40)),
    content_type=st.one_of(st.none(), st.text(max_size=40)),
    extra=st.lists(st.tuples(st.sampled_from(["file", "note", "x"]), st.binary(max_size=64)),
                   max_size=3),
)
def test_odd_multipart_envelopes_never_reach_a_5xx(
    client, data, field, filename, content_type, extra
) -> None:
    boundary = "fuzzboundary"
    parts = [(field, filename, content_type, data)] + [(n, None, None, v) for n, v in extra]
    body = bytearray()
    for name, fname, ctype, value in parts:
        disposition = f'form-data; name="{name}"'
        if fname is not None:
            disposition += f'; filename="{fname}"'
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if ctype is not None:
            body += f"Content-Type: {ctype}\r\n".encode()
        body += b"\r\n" + value + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    _check(client.post("/predict", content=bytes(body), headers=headers))


@FUZZ
@given(
    raw=st.binary(max_size=4096),
    content_type=st.sampled_from([
        "multipart/form-data; boundary=b", "multipart/form-data", "image/png",
        "application/octet-stream", "multipart/form-data; boundary=",
        'multipart/form-data; boundary="quoted"', "text/plain",
    ]),
)
def test_raw_bodies_and_content_types_get_4xx_json(client, raw, content_type) -> None:
    _check(client.post("/predict", content=raw, headers={"Content-Type": content_type}))
