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

from idcscan import stain
from idcscan.data import lab
from idcscan.preprocessing import Preprocessing
from idcscan.tta import view_indices


class ReinhardLayer(nn.Module):
    """Per-patch Reinhard stain normalisation in lαβ (the graph twin of ``idcscan.stain``):
    float NHWC RGB [0, 255] -> float NHWC RGB [0, 255]."""

    def __init__(self, target: stain.StainTarget) -> None:
        super().__init__()
        self.target = target
        self.register_buffer("t_mean", torch.tensor(target.mean, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("t_std", torch.tensor(target.std, dtype=torch.float32),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lab.restain(x, self.t_mean, self.t_std)


class PreprocessLayer(nn.Module):
    """uint8 NHWC patch -> (stain-normalised) normalised float NCHW at the input size."""

    def __init__(self, pre: Preprocessing) -> None:
        super().__init__()
        self.pre = pre
        mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1) * pre.pixel_scale
        std = torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1) * pre.pixel_scale
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        # per-group Macenko is applied before the graph (it needs the group's pixels)
        norm = stain.stain_norm_from_dict(pre.stain_norm)
        self.stain = ReinhardLayer(norm) if isinstance(norm, stain.StainTarget) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        if self.stain is not None:
            x = self.stain(x)
        x = x.permute(0, 3, 1, 2)
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


class LinearHead(nn.Module):
    """GAP -> Dropout 0.2 -> 1 logit: the plain fine-tuning head (as timm's classifiers).

    The output layer is called ``fc2`` in both heads, so the prior correction and the card's
    readers find the last bias in the same place."""

    def __init__(self, in_features: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(in_features, 1)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(pooled)).squeeze(1)

    def logit_gradient(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc2.weight.expand(pooled.shape[0], -1)


HEADS = {"mlp": Head, "linear": LinearHead}


class IDCNet(nn.Module):
    """Binary IDC classifier: one logit per patch, sigmoid(logit / T) = P(IDC)."""

    def __init__(self, backbone: str, pre: Preprocessing, drop_path_rate: float = 0.0,
                 head: str = "mlp") -> None:
        super().__init__()
        self.backbone_name = backbone
        self.head_name = head
        self.pre = pre
        self.preprocess = PreprocessLayer(pre)
        kwargs = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
        self.backbone = timm.create_model(
            backbone, pretrained=False, num_classes=0, global_pool="", **kwargs
        )
        self.head = HEADS[head](self.backbone.num_features)

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


def dihedral_stack(x: torch.Tensor, views: int = 8) -> torch.Tensor:
    """The symmetries of the square of an NHWC batch in ``idcscan.tta``'s set, stacked
    view-major (views*N, H, W, C); the same views, in the same order, as
    ``idcscan.runtime.predictor.dihedral_views``."""
    out = []
    for index in view_indices(views):
        flip, k = divmod(index, 4)
        base = torch.flip(x, dims=(2,)) if flip else x
        out.append(torch.rot90(base, k, dims=(1, 2)) if k else base)
    return torch.cat(out)


class DihedralTTA(nn.Module):
    """Test-time augmentation inside the graph: the mean logit over 2, 4 or 8 dihedral views.

    Grad-CAM comes from the identity view, so explanations still line up with the input."""

    def __init__(self, net: IDCNet, views: int = 8) -> None:
        super().__init__()
        view_indices(views)
        self.net = net
        self.views = views

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(dihedral_stack(x, self.views)).view(self.views, -1).mean(0)

    def forward_with_cam(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logit, cam = self.net.forward_with_cam(dihedral_stack(x, self.views))
        return logit.view(self.views, -1).mean(0), cam[: x.shape[0]]


class ExportModel(nn.Module):
    """What goes into model.onnx: input ``image`` -> outputs ``logit`` and ``cam``."""

    def __init__(self, net: IDCNet | DihedralTTA) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.forward_with_cam(image)
