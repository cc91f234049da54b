"""int8 quantization and graph optimisation: the new bundles serve like any other."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from idcscan.data.synthetic import render_patient
from idcscan.errors import IdcscanError
from idcscan.runtime.bundle import load_bundle, sha256_file
from idcscan.runtime.predictor import Predictor
from idcscan.runtime.quantize import (
    QuantizeConfig,
    load_calibration,
    optimize_bundle,
    quantize_bundle,
)
from idcscan.preprocessing import pad_to_patch


@pytest.fixture(scope="module")
def int8_bundle(tiny_bundle: Path, prepared_data: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "bundle-int8"
    config = QuantizeConfig(calibration_size=48, check_size=32, seed=1)
    quantize_bundle(tiny_bundle, out, prepared_data, config)
    return out


@pytest.fixture(scope="module")
def patches() -> np.ndarray:
    """H&E-like patches the calibration never saw (another synthetic seed)."""
    patient = render_patient(seed=7, index=0, n_patches=40)
    return np.stack([pad_to_patch(np.asarray(p)) for p in patient.patches()])


def test_int8_bundle_has_int8_weights_and_an_updated_card(int8_bundle: Path, tiny_bundle: Path):
    bundle = load_bundle(int8_bundle)  # verifies the sha256 written into the new card
    fp32 = load_bundle(tiny_bundle)
    card = json.loads((int8_bundle / "model.json").read_text())

    assert card["onnx_sha256"] == sha256_file(int8_bundle / "model.onnx") != fp32.card.onnx_sha256
    assert card["name"] == fp32.card.name + "-int8"
    for kept in ("backbone", "input_size", "patch_size", "threshold", "preprocessing", "metrics"):
        assert card[kept] == json.loads((tiny_bundle / "model.json").read_text())[kept]

    q = card["quantization"]
    assert q["calibration"]["kind"] == "packed"
    assert q["calibration"]["split"] == "val"
    assert q["calibration"]["patches"] == 48
    assert q["source_model"]["onnx_sha256"] == fp32.card.onnx_sha256
    assert q["check"]["patches"] == 32 and q["check"]["held_out"] is True
    assert 0.0 <= q["check"]["max_abs_prob_diff"] < 0.1

    model = onnx.load(str(bundle.onnx_path))
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    ops = {n.op_type for n in model.graph.node}
    assert len(int8_weights) >= 40, "every Conv should carry int8 weights"
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_int8_probabilities_and_cam_track_fp32(int8_bundle: Path, tiny_bundle: Path, patches):
    fp32, int8 = Predictor(tiny_bundle, runtime="onnxruntime"), Predictor(int8_bundle)
    p32, cam32 = fp32.predict_with_cam(patches)
    p8, cam8 = int8.predict_with_cam(patches)

    assert int8.threshold == fp32.threshold
    assert np.all((p8 >= 0) & (p8 <= 1))
    assert np.abs(p8 - p32).max() < 0.1
    assert np.allclose(int8.predict_proba(patches), p8)
    assert cam8.shape == cam32.shape
    assert np.isfinite(cam8).all() and (cam8 >= 0).all()


def test_quantize_refuses_to_clobber_or_requantize(int8_bundle: Path, tiny_bundle: Path, tmp_path):
    with pytest.raises(IdcscanError, match="already exists"):
        quantize_bundle(tiny_bundle, int8_bundle, None, QuantizeConfig(calibration_size=4))
    with pytest.raises(IdcscanError, match="already quantized"):
        quantize_bundle(int8_bundle, tmp_path / "again", None, QuantizeConfig(calibration_size=4))
    assert not (tmp_path / "again").exists()


def test_calibration_sources(synthetic_kaggle: Path, prepared_data: Path, tmp_path):
    folder = load_calibration(synthetic_kaggle, n=20, seed=0)
    assert folder.kind == "images" and folder.patches.shape == (20, 50, 50, 3)
    assert folder.patches.dtype == np.uint8

    packed = load_calibration(prepared_data, n=10_000, seed=0)
    assert packed.kind == "packed" and packed.details["split"] == "val"
    index = (prepared_data / "index.csv").read_text().splitlines()[1:]
    assert len(packed.patches) == sum(line.endswith(",val") for line in index)

    synthetic = load_calibration(None, n=30, seed=0)
    assert synthetic.kind == "synthetic" and synthetic.patches.shape == (30, 50, 50, 3)

    (tmp_path / "empty").mkdir()
    with pytest.raises(IdcscanError, match="no images"):
        load_calibration(tmp_path / "empty", n=5)
    with pytest.raises(IdcscanError, match="not a directory"):
        load_calibration(tmp_path / "missing", n=5)


def test_optimized_bundle_gives_the_same_numbers(tiny_bundle: Path, patches, tmp_path):
    optimised = optimize_bundle(tiny_bundle, tmp_path / "opt", level="extended")
    card = json.loads((optimised.path / "model.json").read_text())
    assert card["optimization"]["portable"] is True
    assert card["name"].endswith("-opt")
    # the fused graph stays on ONNX Runtime (engine.open_engine); its source, compared there
    assert Predictor(optimised).engine.info.engine == "onnxruntime"
    np.testing.assert_allclose(
        Predictor(optimised).predict_proba(patches),
        Predictor(tiny_bundle, runtime="onnxruntime").predict_proba(patches),
        atol=1e-5,
    )
