"""What runs a bundle's ONNX graph: ONNX Runtime in fp32 (the reference), or OpenVINO in
bfloat16 on CPUs that compute bf16 natively.

Why two: on a CPU with AVX-512 BF16 or AMX, OpenVINO's bf16 kernels run the default bundle
1.3-1.6 times faster than ONNX Runtime's fp32 ones (batch 64, measured on an AMD EPYC), and
under 5-fold CV they scored the same patients within the allowance set before measuring
(docs/RESULTS.md, "Which engine runs the graph?"); one patch's P(IDC) can still move by up to
0.10, so every result names its engine. Without native bf16, OpenVINO's fp32 is no faster
than ONNX Runtime, so ``auto`` keeps the reference there. Both read the same model.onnx;
nothing is converted or cached on disk. A patch scored alone or in a batch gets the same
answer (tested on both engines; on the default bundle OpenVINO bf16 gave bit-identical
logits), so the server's micro-batching does not change an answer.

``IDCSCAN_RUNTIME`` (``auto``, ``onnxruntime``, ``openvino``) sets the default for every
command and server process; ``--runtime`` on the commands sets it for one run.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from idcscan.errors import IdcscanError

RUNTIMES = ("auto", "onnxruntime", "openvino")
ENV_RUNTIME = "IDCSCAN_RUNTIME"
#: The engine that checks a graph file against its source (export, ensemble, quantization):
#: fp32, so a check measures the file and not bf16 rounding.
REFERENCE_RUNTIME = "onnxruntime"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineInfo:
    """Which engine scored, in what precision, where: recorded with every result (``/predict``,
    ``/health``, predict's JSON, summary.json, metrics.json, cv.json). bf16 and fp32 agree on
    AUC to about 0.001, but one patch's P(IDC) can differ by up to 0.10 between them."""

    engine: str
    precision: str
    threads: int
    device: str = "cpu"

    def as_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "precision": self.precision, "device": self.device,
                "threads": self.threads}

    @property
    def label(self) -> str:
        """e.g. "openvino bf16", "onnxruntime fp32 (cuda)"."""
        where = "" if self.device == "cpu" else f" ({self.device})"
        return f"{self.engine} {self.precision}{where}"

    def __str__(self) -> str:
        return f"{self.label}, {self.threads} thread{'s' * (self.threads > 1)}"


class Engine(Protocol):
    info: EngineInfo
    input_name: str
    output_names: list[str]

    def run(self, outputs: Sequence[str], batch: np.ndarray) -> list[np.ndarray]: ...


def default_providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OnnxRuntimeEngine:
    """ONNX Runtime, fp32 on CPU (or CUDA where present): the numbers the docs report."""

    def __init__(self, model: Path, threads: int, providers: list[str] | None = None) -> None:
        import onnxruntime as ort  # here, so the CLI starts without it

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = providers or default_providers()
        try:
            self.session = ort.InferenceSession(
                str(model), sess_options=options, providers=providers
            )
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise IdcscanError(f"ONNX Runtime could not load {model}: {exc}") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        on_gpu = self.session.get_providers()[0] != "CPUExecutionProvider"
        self.info = EngineInfo("onnxruntime", "fp32", threads, "cuda" if on_gpu else "cpu")

    def run(self, outputs: Sequence[str], batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(list(outputs), {self.input_name: batch})


@cache
def _openvino_core() -> Any:
    if "openvino" not in sys.modules:
        _import_openvino_quietly()
    import openvino

    return openvino.Core()


def _import_openvino_quietly() -> None:
    """``import openvino`` sends a usage event (openvino-telemetry, opt-out, to Google
    Analytics) and writes a client id under ~/intel. With the telemetry package hidden while
    it loads, OpenVINO takes the no-op stub it ships for installs without that package."""
    hide = "openvino_telemetry" not in sys.modules
    if hide:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
    try:
        import openvino  # noqa: F401
    finally:
        if hide and sys.modules.get("openvino_telemetry", False) is None:
            del sys.modules["openvino_telemetry"]


def native_bf16() -> bool:
    """Whether OpenVINO would run bf16 on this CPU's own instructions (AVX-512 BF16, AMX)."""
    try:
        return "BF16" in _openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # openvino missing or unable to query the CPU: no bf16 here
        return False


class OpenVinoEngine:
    """OpenVINO on the CPU: bf16 where the CPU has it natively, else fp32."""

    def __init__(self, model: Path, threads: int) -> None:
        try:
            core = _openvino_core()
        except ImportError as exc:
            raise IdcscanError(
                "--runtime openvino needs the openvino package: pip install openvino"
            ) from exc
        precision = "bf16" if native_bf16() else "f32"
        config = {
            "INFERENCE_PRECISION_HINT": precision,
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            # Several server processes share the cores; pinned threads would pile onto one.
            "ENABLE_CPU_PINNING": False,
        }
        try:
            self._compiled = core.compile_model(core.read_model(str(model)), "CPU", config)
        except Exception as exc:  # openvino raises RuntimeError subclasses of its own
            raise IdcscanError(f"OpenVINO could not load {model}: {exc}") from exc
        self.input_name = self._compiled.inputs[0].any_name
        self.output_names = [o.any_name for o in self._compiled.outputs]
        self._outputs = {o.any_name: o for o in self._compiled.outputs}
        # An infer request holds its buffers and is not thread-safe: one per calling thread.
        self._local = threading.local()
        self.info = EngineInfo("openvino", "bf16" if precision == "bf16" else "fp32", threads)

    def run(self, outputs: Sequence[str], batch: np.ndarray) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        result = request.infer({0: batch})
        return [np.array(result[self._outputs[name]]) for name in outputs]


def auto_runtime(model: Path, made_for_onnxruntime: bool = False) -> str:
    """What ``auto`` settles on for ``model`` on this machine ("openvino" or "onnxruntime"),
    by compiling it once: processes that must agree (server workers) are handed this."""
    engine = open_engine(model, "auto", threads=1, made_for_onnxruntime=made_for_onnxruntime)
    return engine.info.engine


def resolve_runtime(runtime: str | None) -> str:
    """The runtime asked for: the argument, else ``IDCSCAN_RUNTIME``, else ``auto``."""
    chosen = (runtime or os.environ.get(ENV_RUNTIME) or "auto").strip().lower()
    if chosen not in RUNTIMES:
        source = "--runtime" if runtime else ENV_RUNTIME
        raise IdcscanError(f"{source} must be one of {', '.join(RUNTIMES)}; got {chosen!r}.")
    return chosen


def open_engine(
    model: Path,
    runtime: str | None = None,
    threads: int | None = None,
    providers: list[str] | None = None,
    made_for_onnxruntime: bool = False,
) -> Engine:
    """The engine for ``model``. ``auto`` picks OpenVINO bf16 only on a CPU-only run, for an
    fp32 graph, on a CPU with native bf16, and falls back to ONNX Runtime if OpenVINO is
    missing or cannot compile the graph. A graph ``idcscan quantize`` made for ONNX Runtime
    (int8, or its fused fp32 graph) stays there: that is the engine it was made and checked
    with."""
    chosen = resolve_runtime(runtime)
    threads = threads or os.cpu_count() or 1
    if chosen == "openvino":
        return OpenVinoEngine(model, threads)
    cpu_only = (providers or default_providers())[0] == "CPUExecutionProvider"
    if chosen == "auto" and cpu_only and not made_for_onnxruntime and native_bf16():
        try:
            return OpenVinoEngine(model, threads)
        except IdcscanError as exc:
            log.warning("%s; scoring with ONNX Runtime instead", exc)
    return OnnxRuntimeEngine(model, threads, providers)
