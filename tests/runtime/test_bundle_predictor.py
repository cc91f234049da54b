"""Bundle integrity and the predictor's numbers (the path every consumer shares)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from idcscan.errors import IdcscanError
from idcscan.runtime.bundle import load_bundle
from idcscan.runtime.predictor import Predictor, dihedral_views


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


@pytest.mark.parametrize(
    "edit",
    [
        lambda card: card.update(threshold=0.01),  # every patch would become IDC Positive
        lambda card: card["calibration"].update(temperature=9.0),
        lambda card: card["preprocessing"].update(mean=[0.0, 0.0, 0.0]),
        lambda card: card.update(onnx_sha256="0" * 64),  # pointed at another model.onnx
    ],
    ids=["threshold", "temperature", "preprocessing", "onnx_sha256"],
)
def test_an_edited_model_card_is_refused_with_the_reason(tiny_bundle, tmp_path, edit) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    card = json.loads((copy / "model.json").read_text())
    edit(card)
    (copy / "model.json").write_text(json.dumps(card, indent=2))
    with pytest.raises(IdcscanError, match="model.json was changed after export"):
        load_bundle(copy)
    with pytest.raises(IdcscanError, match="was changed after export"):
        Predictor(copy)


def test_reformatting_the_card_is_not_an_alteration(tiny_bundle, tmp_path) -> None:
    """The seal covers the content, not the layout: key order and indentation are free."""
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    card = json.loads((copy / "model.json").read_text())
    (copy / "model.json").write_text(json.dumps(dict(reversed(list(card.items())))))
    assert load_bundle(copy).card.threshold == card["threshold"]


def test_altered_bundles_are_refused_by_the_cli_in_one_line(tiny_bundle, tmp_path) -> None:
    from typer.testing import CliRunner

    from idcscan.cli import app

    patch = tmp_path / "p.png"
    from PIL import Image

    Image.fromarray(np.zeros((50, 50, 3), dtype=np.uint8)).save(patch)
    for part in ("model.json", "model.onnx"):
        copy = tmp_path / part
        shutil.copytree(tiny_bundle, copy)
        if part == "model.json":
            card = json.loads((copy / part).read_text())
            card["threshold"] = 0.2
            (copy / part).write_text(json.dumps(card))
        else:
            data = bytearray((copy / part).read_bytes())
            data[len(data) // 2] ^= 0xFF  # one flipped byte deep inside the weights
            (copy / part).write_bytes(bytes(data))
        for command in (["predict", str(copy), str(patch)], ["serve", str(copy)]):
            result = CliRunner().invoke(app, command)
            assert result.exit_code == 2, result.output
            message = " ".join(result.stderr.split())
            assert message.startswith("error: ") and "Traceback" not in message
            assert ("changed after export" if part == "model.json" else "does not match") in message


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
