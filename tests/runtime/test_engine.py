"""Which engine runs the graph, and what a user may rely on whichever it is."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from idcscan.errors import IdcscanError
from idcscan.runtime import engine
from idcscan.runtime.bundle import load_bundle
from idcscan.runtime.engine import ENV_RUNTIME, open_engine
from idcscan.runtime.predictor import Predictor

ENGINES = ("onnxruntime", "openvino")


def _patches(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 50, 50, 3), dtype=np.uint8)


@pytest.fixture
def model(tiny_bundle: Path) -> Path:
    return load_bundle(tiny_bundle).onnx_path


@pytest.mark.parametrize("runtime", ENGINES)
def test_a_patch_scores_the_same_alone_or_in_any_batch(tiny_bundle, runtime) -> None:
    """The server batches whatever requests arrive together: that must not change an answer."""
    predictor = Predictor(tiny_bundle, runtime=runtime)
    patches = _patches(13)
    together = predictor.logits(patches)
    alone = np.concatenate([predictor.logits(patches[i : i + 1]) for i in range(13)])
    in_fives = np.concatenate([predictor.logits(patches[i : i + 5]) for i in range(0, 13, 5)])
    np.testing.assert_allclose(alone, together, atol=1e-6, rtol=0)
    np.testing.assert_allclose(in_fives, together, atol=1e-6, rtol=0)


def test_openvino_scores_like_the_reference_within_its_precision(tiny_bundle) -> None:
    reference = Predictor(tiny_bundle, runtime="onnxruntime")
    fast = Predictor(tiny_bundle, runtime="openvino")
    patches = _patches(32, seed=1)
    diff = np.abs(fast.predict_proba(patches) - reference.predict_proba(patches))
    # bf16 keeps 8 bits of mantissa; fp32 is the same arithmetic in another order
    bf16 = fast.engine.info.precision == "bf16"
    assert diff.max() <= (0.02 if bf16 else 1e-5)
    _, cam = fast.predict_with_cam(patches[:4])
    _, reference_cam = reference.predict_with_cam(patches[:4])
    assert cam.shape == reference_cam.shape
    scale = float(np.abs(reference_cam).max())
    np.testing.assert_allclose(cam, reference_cam, atol=(0.05 if bf16 else 1e-4) * scale, rtol=0)


def test_openvino_serves_several_threads_at_once(tiny_bundle) -> None:
    predictor = Predictor(tiny_bundle, runtime="openvino", threads=1)
    batches = [_patches(7, seed=s) for s in range(6)]
    expected = [predictor.logits(b) for b in batches]
    got: dict[int, np.ndarray] = {}

    def score(i: int) -> None:
        for _ in range(5):
            got[i] = predictor.logits(batches[i])

    threads = [threading.Thread(target=score, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, want in enumerate(expected):
        np.testing.assert_array_equal(got[i], want)


def test_auto_takes_openvino_bf16_only_on_a_cpu_with_native_bf16(model, monkeypatch) -> None:
    monkeypatch.delenv(ENV_RUNTIME, raising=False)
    chosen = open_engine(model, threads=1).info
    if engine.native_bf16():
        assert (chosen.engine, chosen.precision) == ("openvino", "bf16")
    else:
        assert (chosen.engine, chosen.precision) == ("onnxruntime", "fp32")
    monkeypatch.setattr(engine, "native_bf16", lambda: False)
    assert open_engine(model, threads=1).info.engine == "onnxruntime"


class _Core:
    def __init__(self, capabilities: list[str]) -> None:
        self.capabilities = capabilities

    def get_property(self, device: str, name: str) -> list[str]:
        assert (device, name) == ("CPU", "OPTIMIZATION_CAPABILITIES")
        return self.capabilities


@pytest.mark.parametrize(("capabilities", "native"), [
    (["FP32", "INT8", "BIN", "EXPORT_IMPORT"], False),  # e.g. an AVX2 or AVX-512 CPU without bf16
    (["BF16", "WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT"], True),  # AVX-512 BF16 (EPYC)
])
def test_native_bf16_is_read_from_openvinos_cpu_capabilities(monkeypatch, capabilities,
                                                              native) -> None:
    monkeypatch.setattr(engine, "_openvino_core", lambda: _Core(capabilities))
    assert engine.native_bf16() is native


def test_auto_leaves_a_gpu_run_to_onnxruntime(model, monkeypatch) -> None:
    monkeypatch.delenv(ENV_RUNTIME, raising=False)
    monkeypatch.setattr(engine, "native_bf16", lambda: True)
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]  # CPU-only ORT falls back
    assert open_engine(model, threads=1, providers=providers).info.engine == "onnxruntime"


def test_auto_keeps_a_graph_made_for_onnxruntime_there(tiny_bundle, tmp_path,
                                                       monkeypatch) -> None:
    """int8 and fused graphs from `idcscan quantize` were made and checked on ONNX Runtime."""
    from idcscan.runtime.quantize import optimize_bundle

    monkeypatch.delenv(ENV_RUNTIME, raising=False)
    monkeypatch.setattr(engine, "native_bf16", lambda: True)
    model = load_bundle(tiny_bundle).onnx_path
    assert open_engine(model, threads=1, made_for_onnxruntime=True).info.engine == "onnxruntime"
    fused = optimize_bundle(tiny_bundle, tmp_path / "opt", level="extended")
    assert Predictor(fused).engine.info.engine == "onnxruntime"


def test_the_environment_sets_the_default_and_a_bad_value_is_named(model, monkeypatch) -> None:
    monkeypatch.setenv(ENV_RUNTIME, "onnxruntime")
    assert open_engine(model, threads=1).info.engine == "onnxruntime"
    monkeypatch.setenv(ENV_RUNTIME, "OpenVINO")
    assert open_engine(model, threads=1).info.engine == "openvino"
    monkeypatch.setenv(ENV_RUNTIME, "tensorrt")
    with pytest.raises(IdcscanError, match="IDCSCAN_RUNTIME must be one of auto, onnxruntime"):
        open_engine(model, threads=1)
    with pytest.raises(IdcscanError, match="--runtime must be one of"):
        open_engine(model, runtime="fast", threads=1)


def test_without_openvino_auto_falls_back_and_asking_for_it_says_how(model, monkeypatch) -> None:
    def missing() -> None:
        raise ImportError("No module named 'openvino'")

    monkeypatch.delenv(ENV_RUNTIME, raising=False)
    monkeypatch.setattr(engine, "_openvino_core", missing)
    assert engine.native_bf16() is False
    assert open_engine(model, threads=1).info.engine == "onnxruntime"
    with pytest.raises(IdcscanError, match="pip install openvino"):
        open_engine(model, runtime="openvino", threads=1)


def test_a_graph_openvino_cannot_compile_falls_back_under_auto(tmp_path, monkeypatch,
                                                               caplog) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an onnx graph")
    monkeypatch.delenv(ENV_RUNTIME, raising=False)
    monkeypatch.setattr(engine, "native_bf16", lambda: True)
    with pytest.raises(IdcscanError, match="OpenVINO could not load"):
        open_engine(broken, runtime="openvino", threads=1)
    # auto tries OpenVINO, says so, then ONNX Runtime, whose refusal the user sees
    with caplog.at_level("WARNING", logger="idcscan.runtime.engine"):
        with pytest.raises(IdcscanError, match="ONNX Runtime could not load"):
            open_engine(broken, threads=1)
    assert "OpenVINO could not load" in caplog.text and "ONNX Runtime instead" in caplog.text
