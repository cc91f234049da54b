"""/predict is for patches: size warnings, the large-image refusal, the bounded preview, the
one decision convention (call at 50%, review flag at the bundle threshold), the seed fields,
absolute-scale explanations, and offline /docs and /redoc."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from idcscan.runtime.bundle import load_bundle, write_card
from idcscan.runtime.predictor import Predictor
from idcscan.runtime.patch_size import MAX_PATCH_SIDE, PREVIEW_SIDE
from idcscan.preprocessing import to_patch
from idcscan.server.app import create_app

SEED_KEYS = {
    "predicted_class", "class_name", "confidence", "probability_positive",
    "probability_negative", "image",
}


def png(arr: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url_image(url: str) -> Image.Image:
    header, payload = url.split(",", 1)
    assert header == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(payload)))


@pytest.fixture(scope="module")
def low_threshold_bundle(tiny_bundle: Path, tmp_path_factory) -> Path:
    """The tiny bundle with a review threshold far below 50%, like a real Youden threshold,
    so the patches between it and 50% are flagged but called IDC Negative."""
    out = tmp_path_factory.mktemp("low-threshold")
    shutil.copytree(tiny_bundle, out, dirs_exist_ok=True)
    # re-sealed through write_card: a hand-edited model.json is refused at load
    write_card(load_bundle(out).card.model_copy(update={"threshold": 0.05}), out)
    return out


@pytest.fixture(scope="module")
def client(low_threshold_bundle: Path):
    with TestClient(create_app(low_threshold_bundle)) as c:
        yield c


def test_a_patch_answers_the_seed_fields_with_no_warnings(client, low_threshold_bundle) -> None:
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)
    body = client.post("/predict", files={"file": ("p.png", png(arr))}).json()
    assert SEED_KEYS <= set(body)
    assert body["warnings"] == []
    patch = to_patch(Image.fromarray(arr))[None]
    p = float(Predictor(low_threshold_bundle).predict_proba(patch)[0])
    assert abs(body["probability_positive"] - 100 * p) <= 0.005 + 1e-9
    assert body["probability_positive"] + body["probability_negative"] == pytest.approx(100.0)
    # The call is at 50%, the confidence is the probability of the class called.
    assert body["predicted_class"] == int(p >= 0.5)
    assert body["class_name"] == ("IDC Positive" if p >= 0.5 else "IDC Negative")
    assert body["confidence"] >= 50.0
    assert body["threshold"] == 50.0
    assert body["review_threshold"] == 5.0 and body["flagged"] is (p >= 0.05)
    assert data_url_image(body["image"]).size == (50, 50)


def test_confidence_is_never_below_50_percent(client) -> None:
    rng = np.random.default_rng(4)
    files = [("files", (f"{i}.png", png(rng.integers(0, 256, (50, 50, 3), dtype=np.uint8))))
             for i in range(12)]
    for r in client.post("/predict/batch", files=files).json()["results"]:
        assert r["confidence"] >= 50.0
        expected = r["probability_positive"] if r["predicted_class"] else r["probability_negative"]
        assert r["confidence"] == expected
        assert (r["class_name"] == "IDC Positive") == (r["probability_positive"] >= 50.0)


def test_a_larger_image_is_scored_as_one_patch_with_a_warning(client) -> None:
    rng = np.random.default_rng(5)
    arr = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    body = client.post("/predict", files={"file": ("big.png", png(arr))}).json()
    assert SEED_KEYS <= set(body)
    assert len(body["warnings"]) == 1
    warning = body["warnings"][0]
    assert "400 x 300 px" in warning and "resized" in warning and "/slide" in warning
    # The preview is bounded, aspect kept; never the full upload.
    assert data_url_image(body["image"]).size == (PREVIEW_SIDE, PREVIEW_SIDE * 300 // 400)


def test_a_small_crop_is_padded_with_a_warning(client) -> None:
    arr = np.full((30, 40, 3), 200, dtype=np.uint8)
    body = client.post("/predict", files={"file": ("crop.png", png(arr))}).json()
    assert body["warnings"] and "padded" in body["warnings"][0]
    assert data_url_image(body["image"]).size == (40, 30)


def test_a_whole_tissue_image_is_refused_and_sent_to_slide(client) -> None:
    arr = np.full((600, MAX_PATCH_SIDE + 88, 3), 220, dtype=np.uint8)
    response = client.post("/predict", files={"file": ("section.png", png(arr))})
    assert response.status_code == 422
    body = response.json()
    assert body["use"] == "/slide"
    assert "600 x" in body["error"] or f"{MAX_PATCH_SIDE + 88} x 600 px" in body["error"]
    assert "/slide" in body["error"]
    # In a batch the same file gets its error entry and the others are still scored.
    ok = png(np.full((50, 50, 3), 200, dtype=np.uint8))
    results = client.post(
        "/predict/batch", files=[("files", ("a.png", ok)), ("files", ("s.png", png(arr)))]
    ).json()["results"]
    assert "class_name" in results[0] and "/slide" in results[1]["error"]


def test_the_openapi_document_defines_the_convention(client) -> None:
    schema = client.get("/openapi.json").json()
    description = schema["info"]["description"]
    assert "at least 50%" in description and "review threshold" in description
    fields = schema["components"]["schemas"]["PredictResponse"]["properties"]
    assert "at least 50%" in fields["confidence"]["description"]
    assert "warnings" in fields and "flagged" in fields
    assert "422" in schema["paths"]["/predict"]["post"]["responses"]


def test_explanations_use_one_absolute_scale() -> None:
    from idcscan.runtime.explain import EMPTY_NOTE, cam_for_image, cam_scale, explain

    image = Image.new("RGB", (50, 50), (230, 200, 220))
    scale = cam_scale(1.0)
    alone = np.zeros((4, 4), np.float32)
    alone[0, 0] = 0.5 * scale
    beside_a_hotter_one = alone.copy()
    beside_a_hotter_one[3, 3] = 1.0 * scale
    # Half of full colour stays half, whatever else is on the patch (no per-patch rescaling).
    assert cam_for_image(alone, (50, 50), 50, scale=scale).max() == pytest.approx(0.5, abs=1e-3)
    a = np.asarray(data_url_image(explain(image, alone).overlay).convert("RGB")).astype(int)
    b = np.asarray(data_url_image(explain(image, beside_a_hotter_one).overlay).convert("RGB"))
    assert np.abs(a[:40, :40] - b.astype(int)[:40, :40]).max() <= 1
    # The temperature converts the map into calibrated log-odds: T = 2 halves the colour.
    assert cam_scale(2.0) == 2 * scale
    empty = explain(image, np.full((2, 2), 0.01 * scale, np.float32))
    assert empty.overlay is None and empty.note == EMPTY_NOTE


def test_docs_and_redoc_are_served_from_the_package(client) -> None:
    for route in ("/docs", "/redoc"):
        page = client.get(route)
        assert page.status_code == 200
        assert "cdn" not in page.text.lower() and "https://" not in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert client.get(f"/static/vendor/swagger-ui/{asset}").status_code == 200
    assert client.get("/static/vendor/redoc/redoc.standalone.js").status_code == 200


def test_a_12000_px_image_is_413_pointing_to_slide(client) -> None:
    """Too many pixels for /predict is still 413, but names the large-image view that takes
    it; over /slide's limit as well, it names the command line instead."""
    from idcscan.server.state import ServerSettings

    from test_api_inputs import png_claiming

    response = client.post("/predict", files={"file": ("section.png",
                                                        png_claiming(12_000, 12_000))})
    assert response.status_code == 413
    body = response.json()
    assert body["use"] == "/slide" and "POST /slide" in body["error"]
    assert "12000 x 12000" in body["error"]
    assert f"{ServerSettings().max_slide_pixels:,} pixels" in body["error"]
    huge = client.post("/predict", files={"file": ("scan.png", png_claiming(30_000, 30_000))})
    assert huge.status_code == 413 and "use" not in huge.json()
    assert "idcscan slide" in huge.json()["error"]
    batch = client.post("/predict/batch", files=[("files", ("s.png",
                                                           png_claiming(12_000, 12_000)))])
    assert "POST /slide" in batch.json()["results"][0]["error"]
