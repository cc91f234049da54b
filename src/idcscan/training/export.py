"""Export a trained network as a bundle: model.onnx + model.json (the model card)."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import warnings
from pathlib import Path
from typing import Any

import torch

from idcscan import DISCLAIMER, __version__
from idcscan.runtime.bundle import (
    FORMAT_VERSION,
    ONNX_NAME,
    Bundle,
    ModelCard,
    load_bundle,
    sha256_file,
    write_card,
)
from idcscan.training.network import DihedralTTA, ExportModel, IDCNet
from idcscan.preprocessing import TRAINING_MPP
from idcscan.tta import tta_card

OPSET = 18


def package_versions() -> dict[str, str]:
    names = ["idcscan", "torch", "timm", "lightning", "onnx", "onnxruntime", "numpy"]
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def export_onnx(net: IDCNet, path: Path, tta: bool = False, tta_views: int = 8) -> Path:
    """Write ``net`` (with in-graph preprocessing and Grad-CAM output) to ONNX, batch dynamic;
    with ``tta`` the graph returns the mean logit over ``tta_views`` dihedral views."""
    net = net.eval().float().cpu()
    model = ExportModel(DihedralTTA(net, tta_views) if tta else net).eval()
    p = net.pre.patch_size
    example = torch.randint(0, 256, (2, p, p, 3), dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            input_names=["image"],
            output_names=["logit", "cam"],
            dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}},
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    tmp.replace(path)
    return path


def export_bundle(net: IDCNet, out_dir: str | Path, tta: bool = False, tta_views: int = 8,
                  **card_fields: Any) -> Bundle:
    """Export ONNX and write the model card; ``card_fields`` fills threshold, metrics, data...."""
    out_dir = Path(out_dir)
    onnx_path = export_onnx(net, out_dir / ONNX_NAME, tta=tta, tta_views=tta_views)
    pre = net.pre
    fields: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": f"idcscan-{net.backbone_name}",
        "version": __version__,
        "backbone": net.backbone_name,
        "input_size": pre.input_size,
        "patch_size": pre.patch_size,
        "mpp": TRAINING_MPP,
        "preprocessing": pre.to_dict(),
        "onnx_file": ONNX_NAME,
        "onnx_sha256": sha256_file(onnx_path),
        "versions": package_versions(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "disclaimer": DISCLAIMER,
        "tta": tta_card(tta_views) if tta else None,
    }
    fields.update(card_fields)
    write_card(ModelCard.model_validate(fields), out_dir)
    return load_bundle(out_dir)
