"""Make a faster CPU bundle from an exported one: static int8 quantization or a pre-optimised graph.

Static quantization needs activation ranges, so it runs the fp32 model on *calibration* patches
first. They should look like what the model will see: a prepared dataset's validation split
(never the test split, which must stay untouched for evaluation) or a folder of patches. When
neither is given, procedurally rendered H&E-like patches stand in; that is good enough for a
demo model but the card says so, and a real model should be calibrated on real tissue.

Only the backbone is quantized: its ``Conv`` nodes (nearly all the compute) together with their
ReLU6 (``Clip``) and residual ``Add`` nodes, so activations stay int8 from one layer to the next
instead of bouncing through float between every conv (Conv alone measured ~1.25x faster than
fp32, Conv+Clip+Add ~1.5-1.75x, and closer to fp32). The in-graph preprocessing, the head (BN,
two small dense layers) and the Grad-CAM path stay float, so the decision layer and the ``cam``
output keep full precision and explanations work unchanged on the int8 bundle. (Quantizing the
head's Gemm per-channel also trips an ONNX Runtime bias-scale bug.)

The result is a normal bundle: ``model.onnx`` + ``model.json`` copied from the source card with
the new sha256, a ``-int8`` name suffix and a ``quantization`` section saying how it was made and
how far its probabilities moved from fp32 on held-out calibration patches. The validation
metrics in the card are the fp32 model's; re-run ``idcscan evaluate`` on the new bundle.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
from PIL import Image, UnidentifiedImageError

from idcscan.errors import IdcscanError
from idcscan.runtime.bundle import (
    ONNX_NAME,
    Bundle,
    ModelCard,
    load_bundle,
    sha256_file,
    write_card,
)
from idcscan.runtime.engine import REFERENCE_RUNTIME
from idcscan.runtime.predictor import Predictor
from idcscan.preprocessing import pad_to_patch, to_patch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
CALIBRATION_SPLIT = "val"

Format = Literal["qdq", "qoperator"]
Method = Literal["minmax", "entropy", "percentile"]


@dataclass(frozen=True)
class QuantizeConfig:
    """How to quantize; the defaults are the documented recipe."""

    format: Format = "qdq"
    per_channel: bool = True
    calibration_size: int = 512
    #: Extra patches (never used for calibration) on which int8 is compared with fp32.
    check_size: int = 256
    method: Method = "minmax"
    op_types: tuple[str, ...] = ("Conv", "Clip", "Add")
    batch_size: int = 32
    seed: int = 0


@dataclass(frozen=True)
class CalibrationSet:
    """Patches to calibrate on, and a description of where they came from for the card."""

    patches: np.ndarray  # uint8 (N, P, P, 3)
    kind: str  # "packed", "images" or "synthetic"
    source: str
    details: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------- calibration data


def _sample(n_available: int, n: int, seed: int) -> np.ndarray:
    """Sorted random positions (sorted so memory-mapped reads stay sequential)."""
    rng = np.random.default_rng(seed)
    take = min(n, n_available)
    return np.sort(rng.choice(n_available, size=take, replace=False))


def _from_packed(root: Path, n: int, seed: int, patch_size: int) -> CalibrationSet:
    from idcscan.data.packed import load_packed

    data = load_packed(root)
    split = CALIBRATION_SPLIT if (data.split == CALIBRATION_SPLIT).any() else None
    if split is None:
        raise IdcscanError(
            f"{root} has no {CALIBRATION_SPLIT!r} split to calibrate on. Calibrate on validation "
            "patches (never the test split): re-run `idcscan prepare`, or pass a folder of patches."
        )
    val = data.subset(split)
    positions = _sample(len(val), n, seed)
    patches = val.images(positions)
    if patches.shape[1:] != (patch_size, patch_size, 3):
        raise IdcscanError(
            f"{root} holds {patches.shape[1]}x{patches.shape[2]} patches; this model reads "
            f"{patch_size}x{patch_size}."
        )
    labels = val.label[positions]
    return CalibrationSet(
        patches=np.ascontiguousarray(patches),
        kind="packed",
        source=str(root.resolve()),
        details={
            "split": split,
            "patients": int(len(np.unique(val.patient[positions]))),
            "positives": int(labels.sum()),
        },
    )


def _from_images(root: Path, n: int, seed: int, patch_size: int) -> CalibrationSet:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise IdcscanError(
            f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}) and is not a prepared "
            "dataset; pass a folder of H&E patches or a `idcscan prepare` output."
        )
    patches, skipped = [], 0
    for pos in _sample(len(files), n, seed):
        try:
            with Image.open(files[pos]) as image:
                patches.append(to_patch(image, patch_size))
        except (OSError, UnidentifiedImageError, ValueError):
            skipped += 1
    if not patches:
        raise IdcscanError(f"None of the sampled images under {root} could be read.")
    return CalibrationSet(
        patches=np.stack(patches),
        kind="images",
        source=str(root.resolve()),
        details={"files_found": len(files), "unreadable_skipped": skipped},
    )


def _synthetic(n: int, seed: int, patch_size: int) -> CalibrationSet:
    from idcscan.data.synthetic import render_patient

    patches: list[np.ndarray] = []
    per_patient = 100
    index = 0
    while len(patches) < n:
        patient = render_patient(seed, index, per_patient)
        patches.extend(pad_to_patch(np.asarray(p), patch_size) for p in patient.patches())
        index += 1
    return CalibrationSet(
        patches=np.stack(patches[:n]),
        kind="synthetic",
        source="idcscan.data.synthetic (procedural H&E-like patches)",
        details={"patients": index, "seed": seed},
    )


def load_calibration(
    source: str | Path | None, n: int, seed: int = 0, patch_size: int = 50
) -> CalibrationSet:
    """Up to ``n`` calibration patches: a prepared dataset, an image folder or synthetic."""
    if n < 1:
        raise IdcscanError("The calibration set needs at least one patch.")
    if source is None:
        return _synthetic(n, seed, patch_size)
    root = Path(source)
    if not root.is_dir():
        raise IdcscanError(
            f"Calibration data {root} is not a directory: pass a prepared dataset "
            "(`idcscan prepare` output) or a folder of patch images."
        )
    if (root / "patches.npy").is_file():
        return _from_packed(root, n, seed, patch_size)
    return _from_images(root, n, seed, patch_size)


class _Reader:
    """onnxruntime CalibrationDataReader over uint8 patches, in fixed-size batches."""

    def __init__(self, patches: np.ndarray, input_name: str, batch_size: int) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            {input_name: patches[i : i + batch_size]} for i in range(0, len(patches), batch_size)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


# ------------------------------------------------------------------------- output bundle


def _prepare_out(out_dir: Path, overwrite: bool) -> Path:
    """A fresh staging dir beside ``out_dir``; the finished bundle is renamed into place."""
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise IdcscanError(
            f"{out_dir} already exists and is not empty; choose another --out or pass --force."
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))


def _publish(staging: Path, out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.replace(out_dir)


def _derived_card(
    source: Bundle, onnx_path: Path, suffix: str, section: str, info: dict
) -> ModelCard:
    fields = source.card.model_dump(mode="json")
    fields.update(
        name=source.card.name if source.card.name.endswith(suffix) else source.card.name + suffix,
        onnx_file=ONNX_NAME,
        onnx_sha256=sha256_file(onnx_path),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    fields["versions"] = {**source.card.versions, "onnxruntime": ort.__version__}
    fields[section] = info
    return ModelCard.model_validate(fields)


def compare(reference: Predictor, candidate: Predictor, patches: np.ndarray) -> dict[str, Any]:
    """How far the candidate's calibrated probabilities and decisions are from the reference's."""
    p_ref = reference.predict_proba(patches)
    p_new = candidate.predict_proba(patches)
    diff = np.abs(p_ref - p_new)
    thr = reference.threshold
    return {
        "patches": int(len(patches)),
        "max_abs_prob_diff": round(float(diff.max()), 6),
        "mean_abs_prob_diff": round(float(diff.mean()), 6),
        "decision_agreement": round(float(np.mean((p_ref >= thr) == (p_new >= thr))), 6),
    }


def quantize_bundle(
    bundle: Bundle | str | Path,
    out_dir: str | Path,
    calibration: CalibrationSet | str | Path | None = None,
    config: QuantizeConfig = QuantizeConfig(),
    overwrite: bool = False,
) -> Bundle:
    """Write an int8 copy of ``bundle`` to ``out_dir`` (static, per-channel weights)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    if "quantization" in (source.card.model_extra or {}):
        raise IdcscanError(f"{source.path} is already quantized; quantize the fp32 bundle instead.")
    out_dir = Path(out_dir)
    patch = source.card.patch_size
    if not isinstance(calibration, CalibrationSet):
        calibration = load_calibration(
            calibration, config.calibration_size + config.check_size, config.seed, patch
        )
    patches = calibration.patches
    n_cal = min(config.calibration_size, len(patches))
    cal, check = patches[:n_cal], patches[n_cal:]
    held_out = len(check) > 0
    if not held_out:
        check = cal

    staging = _prepare_out(out_dir, overwrite)
    try:
        with tempfile.TemporaryDirectory(prefix="idcscan-quant-") as work:
            pre = Path(work) / "pre.onnx"
            # Shape inference + basic fusion first: the quantizer needs shapes on every tensor.
            quant_pre_process(str(source.onnx_path), str(pre), skip_symbolic_shape=False)
            onnx_path = staging / ONNX_NAME
            quantize_static(
                str(pre),
                str(onnx_path),
                _Reader(cal, "image", config.batch_size),
                quant_format=QuantFormat.QDQ if config.format == "qdq" else QuantFormat.QOperator,
                op_types_to_quantize=list(config.op_types),
                per_channel=config.per_channel,
                # u8 activations x s8 weights is the fast VNNI/AVX2 path of ONNX Runtime on x86.
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method={
                    "minmax": CalibrationMethod.MinMax,
                    "entropy": CalibrationMethod.Entropy,
                    "percentile": CalibrationMethod.Percentile,
                }[config.method],
                calibration_providers=["CPUExecutionProvider"],
            )
        info: dict[str, Any] = {
            "method": f"onnxruntime static int8 ({config.format.upper()}, "
            f"{'per-channel' if config.per_channel else 'per-tensor'} s8 weights, u8 activations)",
            "op_types": list(config.op_types),
            "calibrate_method": config.method,
            "calibration": {
                "kind": calibration.kind,
                "source": calibration.source,
                "patches": int(n_cal),
                "seed": config.seed,
                **calibration.details,
            },
            "source_model": {"name": source.card.name, "onnx_sha256": source.card.onnx_sha256},
            "cam": "kept (head and Grad-CAM path left in float)",
            "metrics_note": "metrics are the fp32 model's; "
            "re-run `idcscan evaluate` on this bundle",
            "onnxruntime": ort.__version__,
        }
        card = _derived_card(source, onnx_path, "-int8", "quantization", info)
        write_card(card, staging)
        quantized = load_bundle(staging)
        # Both on the reference engine, where the int8 graph is also served (open_engine):
        # the check measures quantization alone, not bf16 on top of it.
        check_info = compare(Predictor(source, runtime=REFERENCE_RUNTIME),
                             Predictor(quantized, runtime=REFERENCE_RUNTIME), check)
        check_info["held_out"] = held_out
        info["check"] = check_info
        card = ModelCard.model_validate({**card.model_dump(mode="json"), "quantization": info})
        write_card(card, staging)
        _publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_bundle(out_dir)


def optimize_bundle(
    bundle: Bundle | str | Path,
    out_dir: str | Path,
    level: Literal["basic", "extended", "all"] = "extended",
    overwrite: bool = False,
) -> Bundle:
    """Save ONNX Runtime's fused graph as a new bundle (fp32; same numbers, faster start).

    ``extended`` fusions are portable; ``all`` adds layout changes (NCHWc) tied to the CPU type
    they were made on, so such a bundle should be made on the machine that serves it.
    """
    source = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    out_dir = Path(out_dir)
    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if level not in levels:
        raise IdcscanError(f"Unknown optimisation level {level!r}; choose basic, extended or all.")
    staging = _prepare_out(out_dir, overwrite)
    try:
        onnx_path = staging / ONNX_NAME
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[level]
        options.optimized_model_filepath = str(onnx_path)
        ort.InferenceSession(str(source.onnx_path), options, providers=["CPUExecutionProvider"])
        info = {
            "method": f"onnxruntime graph optimisation ({level}), fp32",
            "source_model": {"name": source.card.name, "onnx_sha256": source.card.onnx_sha256},
            "portable": level != "all",
            "onnxruntime": ort.__version__,
        }
        write_card(_derived_card(source, onnx_path, "-opt", "optimization", info), staging)
        _publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_bundle(out_dir)
