"""The predictor: the single path by which every command and the server score patches.

``evaluate``, ``predict``, ``serve`` and ``slide`` all call this class, so on one machine the
same patch gets the same probability everywhere. Which engine runs the graph (ONNX Runtime
fp32, or OpenVINO bf16 where the CPU has it) is ``idcscan.runtime.engine``'s choice, and is
reported as ``Predictor.engine.info``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from idcscan.errors import IdcscanError
from idcscan.runtime.bundle import Bundle, load_bundle
from idcscan.runtime.engine import Engine, open_engine
from idcscan.runtime.model_card import tta_views
from idcscan.stain import MacenkoNorm, StainGroup, stain_norm_from_dict
from idcscan.tta import view_indices


def dihedral_views(patches: np.ndarray, views: int = 8) -> list[np.ndarray]:
    """Symmetries of the square of NHWC patches: all 8 (4 rotations x optional flip), or the
    flip subsets of 2 or 4 (``idcscan.tta``), in the order the in-graph TTA uses.

    Tissue has no preferred orientation, so averaging over them (TTA) is free accuracy.
    """
    out = []
    for index in view_indices(views):
        flip, k = divmod(index, 4)
        base = patches[:, :, ::-1] if flip else patches
        out.append(np.ascontiguousarray(np.rot90(base, k=k, axes=(1, 2))))
    return out


def made_for_onnxruntime(bundle: Bundle) -> bool:
    """A graph ``idcscan quantize`` made (int8, or ONNX Runtime's fused graph) and checked there."""
    return bool({"quantization", "optimization"} & set(bundle.card.model_extra or {}))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class Predictor:
    """Score uint8 RGB patches (N, patch, patch, 3) with a bundle's ONNX model."""

    def __init__(
        self,
        bundle: Bundle | str | Path,
        providers: list[str] | None = None,
        threads: int | None = None,
        batch_size: int = 64,
        onnx_file: str | Path | None = None,
        runtime: str | None = None,
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.card = self.bundle.card
        self.pre = self.card.pre
        self.batch_size = batch_size
        #: what runs the graph; ``runtime``: auto, onnxruntime or openvino (engine module)
        self.engine: Engine = open_engine(
            Path(onnx_file or self.bundle.onnx_path), runtime=runtime, threads=threads,
            providers=providers, made_for_onnxruntime=made_for_onnxruntime(self.bundle),
        )
        self.input_name = self.engine.input_name
        self.output_names = self.engine.output_names
        norm = stain_norm_from_dict(self.pre.stain_norm)
        #: per-group stain normalisation, applied here before the graph (None: none needed)
        self.group_norm: MacenkoNorm | None = norm if isinstance(norm, MacenkoNorm) else None

    def stain_group(self, patches: np.ndarray) -> StainGroup | None:
        """The stains of a group of patches (a slide, a patient, a folder), to pass as
        ``group`` when scoring that group; None when the bundle needs none."""
        if self.group_norm is None:
            return None
        return self.group_norm.group(self._check(patches))

    @property
    def tta_in_graph(self) -> bool:
        """The bundle's graph already averages the dihedral views (``idcscan train --tta``)."""
        tta = (self.card.model_extra or {}).get("tta")
        return isinstance(tta, dict) and bool(tta.get("in_graph"))

    def tta_views(self, requested: bool = False) -> int:
        """How many views each answer averages: the graph's own where it averages them (then
        ``requested`` changes nothing), else 8 at run time when asked, else 1."""
        return tta_views(self.card, requested)[0]

    @property
    def threshold(self) -> float:
        return float(self.card.threshold)

    @property
    def temperature(self) -> float:
        return float(self.card.calibration.temperature)

    def calibrate(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated P(IDC) from raw logits (temperature scaling fitted on validation)."""
        return sigmoid(np.asarray(logits, dtype=np.float64) / self.temperature)

    def _check(self, patches: np.ndarray) -> np.ndarray:
        p = self.pre.patch_size
        if patches.ndim != 4 or patches.shape[1:] != (p, p, 3):
            raise IdcscanError(f"Expected patches of shape (N, {p}, {p}, 3), got {patches.shape}.")
        return np.ascontiguousarray(patches, dtype=np.uint8)

    def _prepare(self, patches: np.ndarray, group: StainGroup | None) -> np.ndarray:
        """Checked patches, stain-normalised when the bundle asks for it: with ``group``'s
        stains, or each patch on its own when no group is given (a lone upload)."""
        patches = self._check(patches)
        if self.group_norm is None:
            return patches
        if group is not None:
            return group.apply(patches)
        return self.group_norm.normalise_each(patches)

    def _run(self, batch: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        return self.engine.run(outputs, batch)

    def logits(
        self, patches: np.ndarray, tta: bool = False, group: StainGroup | None = None
    ) -> np.ndarray:
        """Raw logits; with ``tta`` the mean logit over the 8 dihedral views (a bundle with TTA
        in its graph always gives that, so ``tta`` is not applied twice). ``group``: the
        patches' stains (``stain_group``) for a bundle that normalises per group."""
        patches = self._prepare(patches, group)
        tta = tta and not self.tta_in_graph
        out = np.empty(len(patches), dtype=np.float32)
        for start in range(0, len(patches), self.batch_size):
            batch = patches[start : start + self.batch_size]
            if tta:
                views = dihedral_views(batch)
                stacked = np.concatenate(views)
                logit = self._run(stacked, ["logit"])[0].reshape(len(views), len(batch))
                out[start : start + len(batch)] = logit.mean(axis=0)
            else:
                out[start : start + len(batch)] = self._run(batch, ["logit"])[0].reshape(-1)
        return out

    def predict_proba(
        self, patches: np.ndarray, tta: bool = False, group: StainGroup | None = None
    ) -> np.ndarray:
        """Calibrated P(IDC) per patch."""
        if len(patches) == 0:
            return np.empty(0, dtype=np.float64)
        return self.calibrate(self.logits(patches, tta=tta, group=group))

    def predict_with_cam(
        self, patches: np.ndarray, group: StainGroup | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated P(IDC) and the Grad-CAM maps (N, h, w) of the IDC logit."""
        patches = self._prepare(patches, group)
        probs, cams = [], []
        for start in range(0, len(patches), self.batch_size):
            logit, cam = self._run(patches[start : start + self.batch_size], ["logit", "cam"])
            probs.append(self.calibrate(logit.reshape(-1)))
            cams.append(cam)
        return np.concatenate(probs), np.concatenate(cams)

    def iter_proba(
        self, batches: Iterable[np.ndarray], tta: bool = False, group: StainGroup | None = None
    ) -> Iterator[np.ndarray]:
        """Stream probabilities for an iterable of patch batches (slides, folders)."""
        for batch in batches:
            yield self.predict_proba(batch, tta=tta, group=group)
