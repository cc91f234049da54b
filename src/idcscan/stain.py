"""Reinhard stain normalisation in lαβ space: the numpy definition (torch-free).

Patients differ in stain colour and intensity (lab, batch, scanner). Reinhard et al. (2001)
map an image's colour statistics onto a target's: convert RGB to the decorrelated lαβ space
(RGB -> LMS cone space, log10, a fixed rotation), shift and scale each channel so its mean and
standard deviation match the target's, and convert back. Here the statistics are taken per
patch (all its pixels), and the target is fitted on the training patches.

The same arithmetic runs inside the exported ONNX graph (``idcscan.model.network``), so train,
evaluate, predict, serve and slide mode all normalise identically; this module is the
reference the graph is tested against, and what writes/reads the target in model.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from idcscan.errors import IdcscanError

#: RGB -> LMS (Reinhard et al. 2001, eq. 4).
RGB_TO_LMS = np.array([[0.3811, 0.5783, 0.0402],
                       [0.1967, 0.7244, 0.0782],
                       [0.0241, 0.1288, 0.8444]], dtype=np.float64)
#: log LMS -> lαβ (eq. 6).
LOGLMS_TO_LAB = np.diag([1 / np.sqrt(3), 1 / np.sqrt(6), 1 / np.sqrt(2)]) @ np.array(
    [[1.0, 1.0, 1.0], [1.0, 1.0, -2.0], [1.0, -1.0, 0.0]])
LMS_TO_RGB = np.linalg.inv(RGB_TO_LMS)
LAB_TO_LOGLMS = np.linalg.inv(LOGLMS_TO_LAB)
#: Pixels are mapped to (v + 1) / 256 so the logarithm never sees zero.
OFFSET, SCALE = 1.0, 256.0
#: Floor on a patch's per-channel standard deviation (flat patches are left alone).
MIN_STD = 1e-3


@dataclass(frozen=True)
class StainTarget:
    """The lαβ mean and standard deviation every patch is mapped to (in model.json)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    method: str = "reinhard"

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "space": "lab (Reinhard lαβ)", "statistics": "per patch",
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StainTarget":
        if d.get("method", "reinhard") != "reinhard":
            raise IdcscanError(f"Unknown stain normalisation {d.get('method')!r}; this "
                               "idcscan knows 'reinhard'.")
        return cls(mean=tuple(float(v) for v in d["mean"]),
                   std=tuple(float(v) for v in d["std"]))


def rgb_to_lab(images: np.ndarray) -> np.ndarray:
    """uint8/float NHWC RGB [0, 255] -> float64 lαβ, same shape."""
    x = (np.asarray(images, dtype=np.float64) + OFFSET) / SCALE
    return np.log10(x @ RGB_TO_LMS.T) @ LOGLMS_TO_LAB.T


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """lαβ -> float RGB in [0, 255] (clipped)."""
    rgb = (10.0 ** (lab @ LAB_TO_LOGLMS.T)) @ LMS_TO_RGB.T
    return np.clip(rgb * SCALE - OFFSET, 0.0, 255.0)


def lab_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch lαβ mean and standard deviation, each (N, 3)."""
    lab = rgb_to_lab(images)
    return lab.mean(axis=(1, 2)), lab.std(axis=(1, 2))


def fit_target(images: np.ndarray) -> StainTarget:
    """The target: the average per-patch lαβ mean and standard deviation of ``images``."""
    if len(images) == 0:
        raise IdcscanError("Cannot fit a stain target on no patches.")
    mean, std = lab_stats(images)
    return StainTarget(tuple(float(v) for v in mean.mean(0)),
                       tuple(float(v) for v in std.mean(0)))


def reinhard(images: np.ndarray, target: StainTarget) -> np.ndarray:
    """Map every patch's lαβ statistics to ``target``; float64 NHWC RGB in [0, 255]."""
    lab = rgb_to_lab(images)
    mean = lab.mean(axis=(1, 2), keepdims=True)
    std = np.maximum(lab.std(axis=(1, 2), keepdims=True), MIN_STD)
    out = (lab - mean) / std * np.asarray(target.std) + np.asarray(target.mean)
    return lab_to_rgb(out)
