"""A bundle's ONNX graph as TorchScript whose softmax is idcscan's P(IDC).

Only a bundle's graph is guaranteed to exist: a fold ensemble has no single set of training
weights, and the dihedral TTA, the in-graph Reinhard stain normalisation and the resize to the
network's input size live in the graph. So the torch module is converted from the graph
itself (onnx2torch), not rebuilt from training code. onnx2torch's converters stop short of
the opset idcscan exports at, so the graph is first cut down to its ``logit`` output (the
Grad-CAM branch is of no use to WSInfer or QuPath), weights stored in float16 and cast at load
are folded into float32 weights, the graph is converted to opset 17 by ONNX's own version
converter, and Reshape's ``allowzero`` flag is cleared: for a tensor that has any elements a
valid reshape target contains no zero, so the flag changes nothing there.

``TwoClassLogits`` takes what WSInfer's transforms give (float NCHW in [0, 1] from ToTensor,
then the config's identity Normalize), turns it back into the uint8 NHWC patch the graph
reads (exactly: ToTensor divides uint8 by 255), and returns ``[0, logit / T]``: the softmax
of (0, z) is (1 - sigmoid(z), sigmoid(z)), i.e. (1 - P(IDC), P(IDC)) with the bundle's own
calibration, exactly as ``Predictor`` computes.

Every export is checked against ONNX Runtime on the same patches before it is written
(``compare_with_onnxruntime``), so a conversion that is not exact is refused, not shipped.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper, version_converter

from idcscan.errors import IdcscanError
from idcscan.runtime.bundle import Bundle
from idcscan.runtime.predictor import Predictor

#: the opset the graph is brought to before onnx2torch reads it
CONVERT_OPSET = 17
#: the largest |ΔP(IDC)| between the TorchScript module and ONNX Runtime an export may show
MAX_PROB_DIFF = 1e-4
#: batch sizes the check runs, none of them the traced one, so a batch size baked into the
#: trace would show
CHECK_BATCHES = (1, 5, 13)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def fold_initializer_casts(model: onnx.ModelProto) -> onnx.ModelProto:
    """Weights stored at a smaller precision and cast at load (the shipped model keeps them in
    float16) become plain initializers of the cast type: onnx2torch takes a Conv's or Gemm's
    weights only from initializers. Exact: the cast is what every engine computes at load."""
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    nodes, folded = [], []
    for node in graph.node:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.op_type == "Cast" and len(node.input) == 1 and node.input[0] in weights:
            array = numpy_helper.to_array(weights[node.input[0]])
            dtype = helper.tensor_dtype_to_np_dtype(to)
            folded.append(numpy_helper.from_array(array.astype(dtype), node.output[0]))
        else:
            nodes.append(node)
    if folded:
        used = {name for node in nodes for name in node.input}
        kept = [init for init in graph.initializer if init.name in used]
        del graph.node[:], graph.initializer[:]
        graph.node.extend(nodes)
        graph.initializer.extend(kept + folded)
    return model


def logit_graph(onnx_path: Path) -> onnx.ModelProto:
    """The bundle's graph, cut to ``image -> logit`` at an opset onnx2torch converts."""
    model = fold_initializer_casts(onnx.load(str(onnx_path)))
    names = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if "logit" not in outputs or len(names) != 1:
        raise IdcscanError(f"{onnx_path} is not an idcscan graph (one input, a 'logit' output).")
    model = onnx.utils.Extractor(model).extract_model(names, ["logit"])
    if _opset(model) > CONVERT_OPSET:
        try:
            model = version_converter.convert_version(model, CONVERT_OPSET)
        except Exception as exc:  # the converter raises bare RuntimeErrors and others
            raise IdcscanError(f"{onnx_path} could not be brought to ONNX opset "
                               f"{CONVERT_OPSET} for conversion to torch: {exc}") from exc
    for node in model.graph.node:
        if node.op_type == "Reshape":
            for attr in node.attribute:
                if attr.name == "allowzero":
                    attr.i = 0
    return model


def graph_module(model: onnx.ModelProto) -> torch.nn.Module:
    """onnx2torch's module for the graph: uint8 NHWC patches -> logit [N]."""
    from onnx2torch import convert

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return convert(model).eval()
    except (NotImplementedError, KeyError, ValueError) as exc:
        raise IdcscanError(
            f"This bundle's graph cannot be converted to torch ({exc}). Quantised (int8) and "
            "ONNX-Runtime-optimised bundles use operators onnx2torch does not know: export the "
            "fp32 bundle they were made from."
        ) from exc


class TwoClassLogits(torch.nn.Module):
    """WSInfer's input (float NCHW in [0, 1]) -> two logits whose softmax is (1 - P, P)."""

    def __init__(self, graph: torch.nn.Module, temperature: float, patch_size: int) -> None:
        super().__init__()
        self.graph = graph
        self.patch_size = int(patch_size)
        self.register_buffer("temperature", torch.tensor(float(temperature), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A no-op on a patch of the configured size; a patch of another size is brought to the
        # size the graph was exported for by area averaging, as idcscan's slide reader does.
        x = F.adaptive_avg_pool2d(x, (self.patch_size, self.patch_size))
        pixels = torch.round(x * 255.0).clamp(0.0, 255.0).to(torch.uint8)
        z = self.graph(pixels.permute(0, 2, 3, 1).contiguous()).reshape(-1) / self.temperature
        return torch.stack((torch.zeros_like(z), z), dim=1)


def to_torchscript(bundle: Bundle) -> torch.jit.ScriptModule:
    """The bundle as a traced TorchScript module (see the module docstring)."""
    card = bundle.card
    module = TwoClassLogits(graph_module(logit_graph(bundle.onnx_path)),
                            card.calibration.temperature, card.patch_size).eval()
    p = card.patch_size
    example = torch.randint(0, 256, (2, 3, p, p), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # onnx2torch's shape arithmetic warns while tracing
        return torch.jit.trace(module, example.float() / 255.0, check_trace=False)


def check_patches(patch_size: int, n: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 patches to check an export on: procedural H&E-like tissue, plus noise and glass."""
    from idcscan.data.synthetic import render_patient
    from idcscan.preprocessing import pad_to_patch

    rng = np.random.default_rng(seed)
    patches = [pad_to_patch(np.asarray(p), patch_size)
               for p in render_patient(seed, 0, max(1, n - 8)).patches()][: n - 8]
    patches += list(rng.integers(0, 256, (6, patch_size, patch_size, 3), dtype=np.uint8))
    patches += [np.full((patch_size, patch_size, 3), v, np.uint8) for v in (255, 0)]
    return np.stack(patches)


def torchscript_proba(module: torch.jit.ScriptModule, patches: np.ndarray,
                      batches: tuple[int, ...] = CHECK_BATCHES) -> np.ndarray:
    """P(IDC) the way WSInfer computes it: ToTensor (/255, NCHW), the module, softmax."""
    x = torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2).float() / 255.0
    out, start, k = [], 0, 0
    with torch.no_grad():
        while start < len(x):
            size = batches[k % len(batches)]
            out.append(torch.softmax(module(x[start : start + size]), dim=1)[:, 1])
            start, k = start + size, k + 1
    return torch.cat(out).double().numpy()


def compare_with_onnxruntime(module: torch.jit.ScriptModule, bundle: Bundle,
                             patches: np.ndarray) -> dict[str, Any]:
    """How far the module's P(IDC) is from ONNX Runtime's on the bundle itself."""
    reference = Predictor(bundle, runtime="onnxruntime").predict_proba(patches)
    diff = np.abs(torchscript_proba(module, patches) - reference)
    return {"patches": len(patches), "batch_sizes": list(CHECK_BATCHES),
            "reference": "ONNX Runtime on model.onnx (CPU, fp32)",
            "max_abs_prob_diff": float(diff.max())}
