"""The classifier: in-graph preprocessing, a timm backbone, and the seed's head.

The network takes raw ``uint8`` NHWC patches, so the exported ONNX graph carries the whole
preprocessing (see ``idcscan.preprocessing``). ``forward_with_cam`` also returns a Grad-CAM map
computed in closed form from the head's weights, so the ONNX graph can serve explanations
without torch or autograd at inference time.
"""

from __future__ import annotations

import timm
import torch
from torch import nn
from torch.nn import functional as F

from idcscan.preprocessing import Preprocessing


class PreprocessLayer(nn.Module):
    """uint8 NHWC patch -> normalised float NCHW at the network's input size."""

    def __init__(self, pre: Preprocessing) -> None:
        super().__init__()
        self.pre = pre
        mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1) * pre.pixel_scale
        std = torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1) * pre.pixel_scale
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).to(torch.float32)
        if self.pre.input_size != self.pre.patch_size:
            x = F.interpolate(
                x,
                size=(self.pre.input_size, self.pre.input_size),
                mode=self.pre.interpolation,
                align_corners=False,
            )
        return (x - self.mean) / self.std


class Head(nn.Module):
    """The seed's head: GAP -> BN -> Dropout 0.5 -> Dense 256 ReLU -> Dropout 0.3 -> 1 logit."""

    def __init__(self, in_features: int, hidden: int = 256) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_features)
        self.drop1 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(in_features, hidden)
        self.drop2 = nn.Dropout(0.3)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(self.drop1(self.bn(pooled))))
        return self.fc2(self.drop2(h)).squeeze(1)

    def logit_gradient(self, pooled: torch.Tensor) -> torch.Tensor:
        """d logit / d pooled feature, per sample, in eval mode (closed form, no autograd)."""
        scale = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        h = self.fc1(self.bn(pooled))
        gate = (h > 0).to(pooled.dtype) * self.fc2.weight  # (N, hidden)
        return (gate @ self.fc1.weight) * scale  # (N, C)


class IDCNet(nn.Module):
    """Binary IDC classifier: one logit per patch, sigmoid(logit / T) = P(IDC)."""

    def __init__(self, backbone: str, pre: Preprocessing, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.pre = pre
        self.preprocess = PreprocessLayer(pre)
        kwargs = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
        self.backbone = timm.create_model(
            backbone, pretrained=False, num_classes=0, global_pool="", **kwargs
        )
        self.head = Head(self.backbone.num_features)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(self.preprocess(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))

    def forward_with_cam(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and Grad-CAM maps (N, h, w) for the IDC logit; eval mode only."""
        fmap = self.features(x)
        pooled = fmap.mean(dim=(2, 3))
        logit = self.head(pooled)
        weights = self.head.logit_gradient(pooled)
        cam = F.relu(torch.einsum("nc,nchw->nhw", weights, fmap))
        return logit, cam


class ExportModel(nn.Module):
    """What goes into model.onnx: input ``image`` -> outputs ``logit`` and ``cam``."""

    def __init__(self, net: IDCNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.forward_with_cam(image)
