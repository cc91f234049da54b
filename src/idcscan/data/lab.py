"""Reinhard's lαβ colour space in torch, batch-wise: the twin of ``idcscan.stain`` (numpy).

Used inside the network (stain normalisation in the ONNX graph) and by RandStainNA-style
augmentation; both must convert exactly as the numpy reference does.
"""

from __future__ import annotations

import torch

from idcscan import stain


def _const(a, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float32, device=like.device)


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """float NHWC RGB [0, 255] -> lαβ."""
    lms = ((x + stain.OFFSET) / stain.SCALE) @ _const(stain.RGB_TO_LMS.T, x)
    return torch.log10(lms) @ _const(stain.LOGLMS_TO_LAB.T, x)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """lαβ -> float NHWC RGB clipped to [0, 255]."""
    lms = torch.pow(10.0, lab @ _const(stain.LAB_TO_LOGLMS.T, lab))
    return (lms @ _const(stain.LMS_TO_RGB.T, lab) * stain.SCALE - stain.OFFSET).clamp(0, 255)


def lab_moments(lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch mean and (population) standard deviation, each (N, 1, 1, 3)."""
    mean = lab.mean(dim=(1, 2), keepdim=True)
    std = (lab - mean).square().mean(dim=(1, 2), keepdim=True).sqrt().clamp_min(stain.MIN_STD)
    return mean, std


def restain(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Reinhard transfer: each patch's lαβ moments become ``mean`` / ``std`` (broadcast)."""
    lab = rgb_to_lab(x)
    m, s = lab_moments(lab)
    return lab_to_rgb((lab - m) / s * std + mean)
