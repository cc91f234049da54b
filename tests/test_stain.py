"""Reinhard stain normalisation: the numpy definition, its twin inside the ONNX graph, and its
target's round trip through model.json."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from idcscan.errors import IdcscanError
from idcscan.stain import (
    StainTarget,
    fit_target,
    lab_stats,
    lab_to_rgb,
    reinhard,
    rgb_to_lab,
)

TARGET = StainTarget(mean=(-1.1, 0.03, 0.01), std=(0.16, 0.025, 0.012))


@pytest.fixture(scope="module")
def patches() -> np.ndarray:
    """H&E-like colours (pink stroma, purple nuclei, a little white) with texture."""
    rng = np.random.default_rng(0)
    base = np.array([[230, 160, 200], [120, 60, 150], [245, 240, 245]], dtype=np.float64)
    pick = rng.choice(3, size=(6, 50, 50), p=[0.6, 0.3, 0.1])
    x = base[pick] + rng.normal(0, 12, (6, 50, 50, 3))
    return np.clip(x, 0, 255).astype(np.uint8)


def test_lab_round_trip(patches):
    np.testing.assert_allclose(lab_to_rgb(rgb_to_lab(patches)), patches, atol=1e-6)


def test_each_patch_gets_the_target_statistics(patches):
    mean, std = lab_stats(reinhard(patches, TARGET))
    np.testing.assert_allclose(mean, np.tile(TARGET.mean, (6, 1)), atol=2e-3)
    np.testing.assert_allclose(std, np.tile(TARGET.std, (6, 1)), rtol=0.03)


def test_a_restained_patch_normalises_to_the_original(patches):
    """A stain change that shifts and scales lαβ (a darker, bluer lab) is undone exactly."""
    lab = rgb_to_lab(patches)
    restained = lab_to_rgb(lab * np.array([1.1, 1.2, 0.9]) + np.array([-0.05, -0.01, 0.004]))
    assert 0 < restained.min() and restained.max() < 255  # nothing clipped: exact inverse
    assert np.abs(restained - patches).mean() > 10  # visibly different input
    np.testing.assert_allclose(reinhard(restained, TARGET), reinhard(patches, TARGET), atol=0.02)


def _export(module: torch.nn.Module, path, example: torch.Tensor) -> ort.InferenceSession:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), input_names=["image"],
                          output_names=["out"], opset_version=18, dynamo=True,
                          dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}},
                          external_data=False, verbose=False)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_numpy_torch_and_onnx_graph_give_the_same_numbers(patches, tmp_path):
    from idcscan.training.network import ReinhardLayer

    class Wrap(torch.nn.Module):  # the graph takes uint8, as the bundle's does
        def __init__(self) -> None:
            super().__init__()
            self.layer = ReinhardLayer(TARGET)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.layer(image.to(torch.float32))

    expected = reinhard(patches, TARGET)
    with torch.no_grad():
        got_torch = Wrap()(torch.from_numpy(patches)).numpy()
    np.testing.assert_allclose(got_torch, expected, atol=0.05)
    session = _export(Wrap().eval(), tmp_path / "stain.onnx", torch.from_numpy(patches[:2]))
    got_onnx = session.run(None, {"image": patches})[0]
    np.testing.assert_allclose(got_onnx, expected, atol=0.05)


def test_target_round_trips_through_model_json_and_rebuilds_the_same_graph(patches, tmp_path):
    from dataclasses import replace

    from idcscan.runtime.bundle import load_bundle
    from idcscan.runtime.predictor import Predictor
    from idcscan.training.export import export_bundle
    from idcscan.training.network import IDCNet
    from idcscan.preprocessing import Preprocessing

    target = fit_target(patches)
    pre = replace(Preprocessing(input_size=32), stain_norm=target.to_dict())
    torch.manual_seed(0)
    net = IDCNet("test_efficientnet", pre).eval()
    export_bundle(net, tmp_path, threshold=0.5)
    card = json.loads((tmp_path / "model.json").read_text())
    assert card["preprocessing"]["stain_norm"]["method"] == "reinhard"
    back = StainTarget.from_dict(load_bundle(tmp_path).card.pre.stain_norm)
    assert back == target
    # The card alone rebuilds a network whose preprocessing is the exported graph's.
    rebuilt = IDCNet("test_efficientnet", load_bundle(tmp_path).card.pre).eval()
    rebuilt.load_state_dict(net.state_dict())
    with torch.no_grad():
        logits = rebuilt(torch.from_numpy(patches)).numpy()
    graph = Predictor(tmp_path, runtime="onnxruntime")  # the file in fp32 (bf16 would blur it)
    np.testing.assert_allclose(graph.logits(patches), logits, atol=1e-4)
    # And the normalisation really is in the graph: a restained patch scores (nearly) alike.
    lab = rgb_to_lab(patches)
    restained = np.round(lab_to_rgb(lab * 1.1 - 0.05)).astype(np.uint8)
    plain = IDCNet("test_efficientnet", Preprocessing(input_size=32)).eval()
    plain.load_state_dict(net.state_dict())
    with torch.no_grad():
        moved_plain = np.abs(plain(torch.from_numpy(restained)) - plain(torch.from_numpy(
            patches))).mean()
    moved_norm = np.abs(graph.logits(restained) - logits).mean()
    assert moved_norm < 0.2 * float(moved_plain)


def test_unknown_method_is_refused():
    with pytest.raises(IdcscanError, match="reinhard"):
        StainTarget.from_dict({"method": "macenko", "mean": [0, 0, 0], "std": [1, 1, 1]})
