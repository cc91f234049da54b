"""Bundle integrity and the predictor's numbers (the path every consumer shares)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from idcscan.errors import IdcscanError
from idcscan.inference.bundle import load_bundle
from idcscan.inference.predictor import Predictor, dihedral_views


def test_bundle_card_describes_model(tiny_bundle: Path) -> None:
    card = load_bundle(tiny_bundle).card
    assert card.backbone == "tf_efficientnet_lite0"
    assert card.patch_size == 50 and card.input_size == 32
    assert card.preprocessing["input_size"] == 32
    assert card.mpp == pytest.approx(4.0)
    assert "Research use only" in card.disclaimer


def test_tampered_onnx_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    with open(copy / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(IdcscanError, match="does not match its model card"):
        load_bundle(copy)


def test_missing_or_broken_card_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IdcscanError, match="No model bundle"):
        load_bundle(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(IdcscanError, match="not a valid idcscan model card"):
        load_bundle(tmp_path)


def test_probabilities_are_calibrated_sigmoid_of_logits(tiny_bundle: Path) -> None:
    predictor = Predictor(tiny_bundle)
    patches = np.random.default_rng(1).integers(0, 256, (7, 50, 50, 3), dtype=np.uint8)
    logits = predictor.logits(patches)
    probs = predictor.predict_proba(patches)
    expected = 1 / (1 + np.exp(-logits / predictor.temperature))
    np.testing.assert_allclose(probs, expected, rtol=1e-6)
    assert ((probs > 0) & (probs < 1)).all()


def test_batching_does_not_change_results(tiny_bundle: Path) -> None:
    patches = np.random.default_rng(2).integers(0, 256, (9, 50, 50, 3), dtype=np.uint8)
    one = Predictor(tiny_bundle, batch_size=1).logits(patches)
    many = Predictor(tiny_bundle, batch_size=64).logits(patches)
    np.testing.assert_allclose(one, many, atol=1e-5)


def test_tta_uses_eight_distinct_views(tiny_bundle: Path) -> None:
    patch = np.random.default_rng(3).integers(0, 256, (1, 50, 50, 3), dtype=np.uint8)
    views = dihedral_views(patch)
    assert len({v.tobytes() for v in views}) == 8
    predictor = Predictor(tiny_bundle)
    expected = np.mean([predictor.logits(v)[0] for v in views])
    assert predictor.logits(patch, tta=True)[0] == pytest.approx(expected, abs=1e-5)


def test_cam_has_one_map_per_patch_and_is_non_negative(tiny_bundle: Path) -> None:
    patches = np.random.default_rng(4).integers(0, 256, (3, 50, 50, 3), dtype=np.uint8)
    probs, cams = Predictor(tiny_bundle).predict_with_cam(patches)
    assert probs.shape == (3,) and cams.shape[0] == 3 and cams.ndim == 3
    assert (cams >= 0).all()


def test_wrong_patch_shape_is_refused(tiny_bundle: Path) -> None:
    with pytest.raises(IdcscanError, match="Expected patches"):
        Predictor(tiny_bundle).logits(np.zeros((1, 32, 32, 3), dtype=np.uint8))
