"""Explanations: the heat map comes out of the ONNX graph and points at the tumour-like part.

A random network's map means nothing, so the localisation test trains a tiny network for a few
seconds on synthetic patches where IDC-like nuclei (dense, large, dark-purple blobs) fill one
random quadrant of pink stroma, exports it with the project's exporter, and checks that the
map's peak lies in the quadrant that holds the nuclei.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from idcscan.runtime.explain import cam_for_image, colormap_lut, overlay, overlay_data_url
from idcscan.runtime.explain import peak_position
from idcscan.runtime.predictor import Predictor

PATCH = 50
QUADRANTS = ((0, 0), (25, 0), (0, 25), (25, 25))  # (x0, y0) of each 25 x 25 quadrant


def stroma(rng: np.random.Generator) -> np.ndarray:
    """Pale pink, slightly textured background (eosin-stained stroma)."""
    base = np.array([236, 190, 214], dtype=np.float32)
    noise = rng.normal(0, 6, (PATCH, PATCH, 1)).astype(np.float32)
    return np.clip(base + noise, 0, 255)


def add_nuclei(img: np.ndarray, rng: np.random.Generator, quadrant: int, count: int = 9) -> None:
    """Dense, large, dark-purple blobs (haematoxylin-stained tumour nuclei) in one quadrant."""
    x0, y0 = QUADRANTS[quadrant]
    yy, xx = np.mgrid[0:PATCH, 0:PATCH]
    purple = np.array([72, 40, 120], dtype=np.float32)
    for _ in range(count):
        cx, cy = x0 + rng.uniform(4, 21), y0 + rng.uniform(4, 21)
        r = rng.uniform(2.5, 4.0)
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        img[mask] = purple + rng.normal(0, 8, 3)


def synthetic_batch(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = np.empty((n, PATCH, PATCH, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, n)
    quadrants = rng.integers(0, 4, n)
    for i in range(n):
        img = stroma(rng)
        if labels[i]:
            add_nuclei(img, rng, int(quadrants[i]))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels, quadrants


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny network trained for a few dozen steps (plain torch), exported as a bundle."""
    import torch

    from idcscan.training.export import export_bundle
    from idcscan.training.network import IDCNet
    from idcscan.preprocessing import Preprocessing

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    # 64 px input -> a 2 x 2 feature grid: one CAM cell per quadrant.
    net = IDCNet("test_efficientnet", Preprocessing(input_size=64))
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    net.train()
    for _ in range(30):
        images, labels, _ = synthetic_batch(rng, 32)
        logits = net(torch.from_numpy(images))
        loss = loss_fn(logits, torch.from_numpy(labels).float())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    out = tmp_path_factory.mktemp("explain-bundle")
    export_bundle(net.eval(), out, threshold=0.5, data={"source": "synthetic quadrant nuclei"})
    return out


def test_cam_output_comes_from_the_onnx_graph(tiny_bundle: Path) -> None:
    predictor = Predictor(tiny_bundle)
    assert predictor.output_names == ["logit", "cam"]
    patches = np.random.default_rng(3).integers(0, 256, (3, 50, 50, 3), dtype=np.uint8)
    probs, cams = predictor.predict_with_cam(patches)
    np.testing.assert_allclose(probs, predictor.predict_proba(patches), rtol=1e-6)
    assert cams.ndim == 3 and len(cams) == 3 and (cams >= 0).all()


def test_heat_map_peaks_in_the_quadrant_with_nuclei(trained_bundle: Path) -> None:
    predictor = Predictor(trained_bundle)
    rng = np.random.default_rng(123)
    negatives = np.stack([np.clip(stroma(rng), 0, 255).astype(np.uint8) for _ in range(8)])
    positives, quadrants = [], []
    for q in range(4):
        for _ in range(3):
            img = stroma(rng)
            add_nuclei(img, rng, q)
            positives.append(np.clip(img, 0, 255).astype(np.uint8))
            quadrants.append(q)
    probs, cams = predictor.predict_with_cam(np.stack(positives))
    # The network did learn the task (else the maps would be noise).
    assert probs.min() > predictor.predict_proba(negatives).max()
    for cam, q in zip(cams, quadrants):
        x, y = peak_position(cam, (PATCH, PATCH), patch_size=PATCH)
        x0, y0 = QUADRANTS[q]
        assert x0 <= x < x0 + 25 and y0 <= y < y0 + 25, (q, (x, y), cam)
        # The overlay is hottest (most tinted) there too.
        heat = cam_for_image(cam, (PATCH, PATCH), PATCH)
        assert heat[y0 : y0 + 25, x0 : x0 + 25].mean() > heat.mean()


def test_map_over_a_padded_small_crop_keeps_its_top_left_part() -> None:
    cam = np.array([[1.0, 0.0], [0.0, 0.0]], dtype=np.float32)  # hot top-left cell
    heat = cam_for_image(cam, (20, 10), patch_size=50)  # a 20 x 10 crop was padded to 50 x 50
    assert heat.shape == (10, 20)
    assert heat.max() == pytest.approx(1.0) and heat[0, 0] == pytest.approx(1.0)
    # A large image was resized to the patch: the map is stretched over all of it.
    big = cam_for_image(cam[::-1, ::-1].copy(), (400, 200), patch_size=50)
    assert big.shape == (200, 400)
    assert np.unravel_index(big.argmax(), big.shape)[0] >= 100


def test_overlay_tints_only_where_the_map_is_hot() -> None:
    image = Image.new("RGB", (60, 60), (230, 200, 220))
    cam = np.array([[0.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    out = overlay(image, cam, patch_size=50, min_side=0)
    arr = np.asarray(out).astype(int)
    assert out.size == image.size
    grey = 0.55 * np.asarray(image.convert("L"), dtype=float)[0, 0] + 0.45 * 255
    assert np.abs(arr[0, 0] - grey).max() <= 1  # cold corner: grey tissue, untinted
    hot = colormap_lut()[-1].astype(int)
    assert np.abs(arr[-1, -1] - hot).sum() < np.abs(np.array([230, 200, 220]) - hot).sum()


def test_overlay_data_url_is_a_png_enlarged_for_small_patches() -> None:
    url = overlay_data_url(Image.new("RGB", (50, 50), "white"), np.ones((2, 2), np.float32))
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.format == "PNG" and decoded.size == (250, 250)


def test_flat_or_broken_maps_do_not_crash() -> None:
    for cam in (np.zeros((2, 2)), np.full((3, 3), np.nan), np.full((1, 1), np.inf)):
        heat = cam_for_image(cam, (50, 50))
        assert np.isfinite(heat).all() and heat.max() <= 1.0
