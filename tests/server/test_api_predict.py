"""The HTTP contract: /predict (seed keys, percents), /predict/batch, /health, /, /docs."""

from __future__ import annotations

import base64
import io
import json
import shutil
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from idcscan import DISCLAIMER, __version__
from idcscan.cli import app as cli_app
from idcscan.runtime.bundle import load_bundle, write_card
from idcscan.runtime.predictor import Predictor
from idcscan.preprocessing import to_patch
from idcscan.server.app import create_app

SEED_KEYS = {
    "predicted_class",
    "class_name",
    "confidence",
    "probability_positive",
    "probability_negative",
    "image",
}
EXTRA_KEYS = {
    "threshold", "model", "disclaimer", "demo", "flagged", "review_threshold", "warnings",
}


def png(arr: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_data_url(url: str) -> Image.Image:
    header, payload = url.split(",", 1)
    assert header == "data:image/png;base64"
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    assert image.format == "PNG"
    return image


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(21)
    return [rng.integers(0, 256, (50, 50, 3), dtype=np.uint8) for _ in range(8)]


@pytest.fixture(scope="module")
def split_bundle(tiny_bundle: Path, images, tmp_path_factory) -> Path:
    """The tiny bundle with its review threshold moved to the median P(IDC) of the test
    images, so both flags occur (a random model puts every patch near one value)."""
    probs = Predictor(tiny_bundle).predict_proba(np.stack(images))
    out = tmp_path_factory.mktemp("split-bundle")
    shutil.copytree(tiny_bundle, out, dirs_exist_ok=True)
    card = load_bundle(out).card
    write_card(card.model_copy(update={"threshold": float(np.median(probs))}), out)
    return out


@pytest.fixture(scope="module")
def client(split_bundle: Path):
    with TestClient(create_app(split_bundle)) as c:
        yield c


@pytest.fixture(scope="module")
def predictor(split_bundle: Path) -> Predictor:
    return Predictor(split_bundle)


def check_percent_pair(pos: float, neg: float) -> None:
    for value in (pos, neg):
        assert isinstance(value, float) and 0.0 <= value <= 100.0
        assert Decimal(str(value)) == Decimal(str(value)).quantize(Decimal("0.01"))
    assert Decimal(str(pos)) + Decimal(str(neg)) == Decimal("100")


def test_predict_answers_the_seed_contract(client, predictor, images) -> None:
    flags = set()
    for arr in images:
        response = client.post("/predict", files={"file": ("patch.png", png(arr), "image/png")})
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == SEED_KEYS | EXTRA_KEYS
        assert isinstance(body["predicted_class"], int) and body["predicted_class"] in (0, 1)
        check_percent_pair(body["probability_positive"], body["probability_negative"])

        p = float(predictor.predict_proba(arr[None])[0])
        assert abs(body["probability_positive"] - p * 100) <= 0.005 + 1e-9
        expected_class = int(p >= 0.5)  # the call: P(IDC) >= 50%
        assert body["predicted_class"] == expected_class
        assert body["class_name"] == ("IDC Positive" if expected_class else "IDC Negative")
        # Confidence is the probability of the class called: never below 50%.
        called = "probability_positive" if expected_class else "probability_negative"
        assert body["confidence"] == body[called] and body["confidence"] >= 50.0
        assert body["threshold"] == 50.0
        # The review flag is at the bundle's threshold.
        assert body["flagged"] is (p >= predictor.threshold)
        assert body["review_threshold"] == round(predictor.threshold * 100, 2)
        assert body["warnings"] == []
        assert body["model"] == {
            "name": predictor.card.name,
            "version": predictor.card.version,
            "backbone": "tf_efficientnet_lite0",
            "engine": predictor.engine.info.label,  # bf16 and fp32 differ per patch
        }
        assert body["disclaimer"] == DISCLAIMER and body["demo"] is False
        np.testing.assert_array_equal(np.asarray(decode_data_url(body["image"])), arr)
        flags.add(body["flagged"])
    assert flags == {True, False}


def test_image_is_echoed_as_rgb_png_whatever_was_sent(client) -> None:
    gray = np.arange(30 * 70, dtype=np.uint8).reshape(30, 70)
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="JPEG", quality=100)
    body = client.post("/predict", files={"file": ("x.jpg", buffer.getvalue())}).json()
    echoed = decode_data_url(body["image"])
    assert echoed.mode == "RGB" and echoed.size == (70, 30)
    sent = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(echoed), sent)


def test_explain_adds_an_overlay(client, images) -> None:
    plain = client.post("/predict", files={"file": ("a.png", png(images[0]))}).json()
    response = client.post("/predict?explain=true", files={"file": ("a.png", png(images[0]))})
    assert response.status_code == 200
    body = response.json()
    # An overlay on the absolute scale, or the plain note when the map is empty: never both.
    from idcscan.runtime.explain import EMPTY_NOTE, cam_scale, is_empty

    predictor = Predictor(client.app.state.idcscan.predictor.bundle)
    _, cams = predictor.predict_with_cam(images[0][None])
    if is_empty(cams[0], cam_scale(predictor.temperature)):
        assert set(body) == SEED_KEYS | EXTRA_KEYS | {"explanation_note"}
        assert body["explanation_note"] == EMPTY_NOTE
    else:
        assert set(body) == SEED_KEYS | EXTRA_KEYS | {"explanation"}
        overlay = decode_data_url(body["explanation"])
        assert overlay.mode == "RGB" and overlay.width >= 50 and overlay.width == overlay.height
    # Asking for the map does not change the answer.
    assert {k: body[k] for k in plain} == plain


def test_batch_keeps_upload_order_and_reports_bad_files(client, predictor, images) -> None:
    files = [
        ("files", ("first.png", png(images[0]), "image/png")),
        ("files", ("broken.png", b"\x89PNG\r\n\x1a\nnot really", "image/png")),
        ("files", ("third.png", png(images[1]), "image/png")),
        ("files", ("empty.png", b"", "image/png")),
        ("files", ("notes.txt", png(images[2]), "text/plain")),
    ]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["filename"] for r in results] == [f[1][0] for f in files]
    assert set(results[1]) == {"filename", "error"} and "image" in results[1]["error"]
    assert set(results[3]) == {"filename", "error"} and "empty" in results[3]["error"]
    for index, arr in ((0, images[0]), (2, images[1]), (4, images[2])):
        single = client.post("/predict", files={"file": ("x.png", png(arr))}).json()
        assert results[index] == {**single, "filename": files[index][1][0]}
        p = float(predictor.predict_proba(arr[None])[0])
        assert abs(results[index]["probability_positive"] - p * 100) <= 0.005 + 1e-9


def test_batch_with_explain_gives_each_an_overlay(client, images) -> None:
    files = [("files", (f"{i}.png", png(a))) for i, a in enumerate(images[:3])]
    results = client.post("/predict/batch?explain=1", files=files).json()["results"]
    for r in results:  # each gets its overlay, or the note that its map is empty
        assert ("explanation" in r) != ("explanation_note" in r)
        if "explanation" in r:
            assert decode_data_url(r["explanation"]).mode == "RGB"


def test_health_describes_the_model(client, predictor) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["model_loaded"] is True
    card = body["model"]
    for key in ("name", "version", "backbone", "input_size", "patch_size", "threshold",
                "metrics", "data", "calibration", "demo", "preprocessing"):
        assert key in card
    assert card["backbone"] == "tf_efficientnet_lite0" and card["input_size"] == 32
    assert card["threshold"] == pytest.approx(predictor.threshold)
    assert card["data"]["source"].startswith("random weights")
    assert card["calibration"]["temperature"] > 0
    assert body["versions"]["idcscan"] == __version__
    assert {"onnxruntime", "python"} <= set(body["versions"])
    assert body["runtime"] == predictor.engine.info.as_dict()
    assert body["runtime"]["engine"] in ("onnxruntime", "openvino")
    assert body["runtime"]["precision"] in ("fp32", "bf16")
    assert body["runtime"]["device"] in ("cpu", "cuda")
    assert body["disclaimer"] == DISCLAIMER and body["demo"] is False
    assert body["limits"]["max_upload_mb"] == 20.0


def test_demo_flag_follows_the_card_unless_overridden(tiny_bundle: Path, tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    shutil.copytree(tiny_bundle, demo)
    write_card(load_bundle(demo).card.model_copy(update={"demo": True}), demo)
    with TestClient(create_app(demo)) as c:
        assert c.get("/health").json()["demo"] is True
        arr = np.zeros((50, 50, 3), dtype=np.uint8)
        assert c.post("/predict", files={"file": ("z.png", png(arr))}).json()["demo"] is True
        assert "synthetic" in c.get("/openapi.json").json()["info"]["description"]
    with TestClient(create_app(demo, demo=False)) as c:
        assert c.get("/health").json()["demo"] is False


def test_dashboard_static_and_docs_are_served(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Research use only" in page.text
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert "file" in body["multipart/form-data"]["schema"]["properties"]
    assert {"/predict", "/predict/batch", "/health"} <= set(schema["paths"])


def test_cli_api_and_predictor_agree_on_the_same_images(
    client, predictor, split_bundle: Path, images, tmp_path: Path
) -> None:
    """One image, one probability: `idcscan predict`, POST /predict and Predictor."""
    for i, arr in enumerate(images):
        Image.fromarray(arr).save(tmp_path / f"img{i}.png")
    out = tmp_path / "pred.json"
    args = ["predict", str(split_bundle), str(tmp_path), "-o", str(out)]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    rows = {Path(r["path"]).name: r for r in json.loads(out.read_text())["predictions"]}
    direct = predictor.predict_proba(np.stack([to_patch(Image.fromarray(a)) for a in images]))
    for i, arr in enumerate(images):
        row = rows[f"img{i}.png"]
        api = client.post("/predict", files={"file": (f"img{i}.png", png(arr))}).json()
        assert row["probability_positive"] == pytest.approx(float(direct[i]), abs=1e-6)
        assert abs(api["probability_positive"] - row["probability_positive"] * 100) <= 0.005 + 1e-9
        assert api["predicted_class"] == row["predicted_class"]
        assert api["class_name"] == row["class_name"]


def test_larger_images_are_scored_whole_and_previewed_small(client, predictor) -> None:
    rng = np.random.default_rng(9)
    wide = rng.integers(0, 256, (120, 500, 3), dtype=np.uint8)
    response = client.post("/predict?explain=true", files={"file": ("wide.png", png(wide))})
    assert response.status_code == 200, response.text
    body = response.json()
    assert decode_data_url(body["image"]).size == (256, 61)  # preview, aspect kept
    if "explanation" in body:
        assert decode_data_url(body["explanation"]).size == (256, 61)
    assert "500 x 120 px" in body["warnings"][0]
    p = float(predictor.predict_proba(to_patch(Image.fromarray(wide))[None])[0])
    assert abs(body["probability_positive"] - p * 100) <= 0.005 + 1e-9


def test_batch_file_count_is_limited(tiny_bundle: Path, images) -> None:
    from idcscan.server.state import ServerSettings

    with TestClient(create_app(tiny_bundle, settings=ServerSettings(max_batch_files=2))) as c:
        files = [("files", (f"{i}.png", png(a))) for i, a in enumerate(images[:3])]
        response = c.post("/predict/batch", files=files)
        assert response.status_code == 400 and "at most 2 files" in response.json()["error"]
        assert len(c.post("/predict/batch", files=files[:2]).json()["results"]) == 2


def test_health_names_data_and_runs_without_the_servers_paths(tiny_bundle: Path,
                                                              tmp_path: Path) -> None:
    """A card records where its data and run lay; /health, which anyone with access reads,
    gives only the last part (who trained it and how the disks are laid out stay home)."""
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    card = load_bundle(bundle).card
    data = {**(card.data or {}), "source": "/home/alice/private/kaggle", "path": "/srv/idc/data"}
    training = {**(card.training or {}), "config": {"out": "/home/alice/runs/r1", "seed": 0}}
    write_card(card.model_copy(update={"data": data, "training": training}), bundle)
    with TestClient(create_app(bundle)) as c:
        health = c.get("/health").json()
    assert health["model"]["data"]["source"] == "kaggle"
    assert health["model"]["data"]["path"] == "data"
    assert health["model"]["training"]["config"] == {"out": "r1", "seed": 0}
    assert "/home/alice" not in json.dumps(health) and "/srv/idc" not in json.dumps(health)
