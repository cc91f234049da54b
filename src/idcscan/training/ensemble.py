"""Ensembles: one bundle whose ONNX graph averages its members' calibrated P(IDC) (the folds
of a cross-validation, or the shipped model's members), and weights stored at half size.

The fold bundles' graphs are merged as they are (names prefixed per fold, the ``image`` input
shared), each member's logit is calibrated with its own temperature, the probabilities are
averaged, and the mean goes back to a logit, so the result honours the bundle contract
(``logit``, ``cam``; P(IDC) = sigmoid(logit / T) with T = 1) and every consumer (evaluate,
predict, serve, slide) runs it like any other bundle. Built with the ``onnx`` helpers only:
no torch, no re-export, the members' exact arithmetic.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import compose, helper, numpy_helper

from idcscan import DISCLAIMER, __version__
from idcscan.errors import IdcscanError
from idcscan.runtime.bundle import (
    ONNX_NAME,
    Bundle,
    ModelCard,
    load_bundle,
    sha256_file,
    write_card,
)

#: Mean probabilities are clipped to [EPS, 1 - EPS] before going back to a logit.
EPS = 1e-7
#: Card fields every member must share for their graphs to be averaged.
_SAME = ("patch_size", "input_size", "mpp", "preprocessing")


def _input_contract(card: ModelCard, key: str) -> Any:
    """What the member expects as input; its own Reinhard target (fitted on its own training
    patients, applied inside its own graph) may differ between members. Per-group Macenko
    runs before the graph, so members must share it."""
    value = getattr(card, key)
    stain = value.get("stain_norm") if key == "preprocessing" else None
    if key == "preprocessing" and (not stain or stain.get("method", "reinhard") == "reinhard"):
        value = {k: v for k, v in value.items() if k != "stain_norm"}
    return value


def _check_members(bundles: Sequence[Bundle]) -> None:
    if len(bundles) < 2:
        raise IdcscanError("An ensemble needs at least two fold bundles.")
    first = bundles[0].card
    for b in bundles[1:]:
        for key in _SAME:
            if _input_contract(b.card, key) != _input_contract(first, key):
                raise IdcscanError(f"{b.path} differs from {bundles[0].path} in {key}; only "
                                   "bundles with the same input can be averaged.")


def merge_graphs(bundles: Sequence[Bundle]) -> onnx.ModelProto:
    """One model: every member graph on the shared input, then the probability average."""
    models = [onnx.load(str(b.onnx_path)) for b in bundles]
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    probs, cams = [], []
    for k, (model, bundle) in enumerate(zip(models, bundles)):
        prefix = f"fold{k}/"
        g = compose.add_prefix_graph(model.graph, prefix, rename_inputs=False)
        nodes.extend(g.node)
        inits.extend(g.initializer)
        temp = numpy_helper.from_array(
            np.array(bundle.card.calibration.temperature, dtype=np.float32), f"{prefix}T")
        inits.append(temp)
        nodes += [helper.make_node("Div", [f"{prefix}logit", temp.name], [f"{prefix}z"]),
                  helper.make_node("Sigmoid", [f"{prefix}z"], [f"{prefix}p"])]
        probs.append(f"{prefix}p")
        cams.append(f"{prefix}cam")
    consts = {"inv_k": 1.0 / len(bundles), "one": 1.0, "eps": EPS, "one_minus_eps": 1.0 - EPS}
    inits += [numpy_helper.from_array(np.array(v, dtype=np.float32), f"ens/{n}")
              for n, v in consts.items()]
    nodes += [
        helper.make_node("Sum", probs, ["ens/p_sum"]),
        helper.make_node("Mul", ["ens/p_sum", "ens/inv_k"], ["ens/p_mean"]),
        helper.make_node("Clip", ["ens/p_mean", "ens/eps", "ens/one_minus_eps"], ["ens/p"]),
        helper.make_node("Sub", ["ens/one", "ens/p"], ["ens/q"]),
        helper.make_node("Div", ["ens/p", "ens/q"], ["ens/odds"]),
        helper.make_node("Log", ["ens/odds"], ["logit"]),
        helper.make_node("Sum", cams, ["ens/cam_sum"]),
        helper.make_node("Mul", ["ens/cam_sum", "ens/inv_k"], ["cam"]),
    ]
    first = models[0].graph
    graph = helper.make_graph(nodes, "idcscan_fold_ensemble", list(first.input),
                              list(first.output),  # the members' own "logit" and "cam"
                              initializer=inits)
    merged = helper.make_model(graph, opset_imports=list(models[0].opset_import),
                               producer_name="idcscan", producer_version=__version__)
    merged.ir_version = models[0].ir_version
    onnx.checker.check_model(merged)
    return merged


def build_ensemble(member_dirs: Sequence[str | Path], out_dir: str | Path, threshold: float,
                   threshold_rule: str, metrics: dict[str, Any] | None = None,
                   extra: dict[str, Any] | None = None) -> Bundle:
    """Write ``out_dir`` (model.onnx + model.json) averaging the bundles in ``member_dirs``."""
    bundles = [load_bundle(d) for d in member_dirs]
    _check_members(bundles)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / ONNX_NAME
    tmp = onnx_path.with_suffix(".onnx.tmp")
    onnx.save(merge_graphs(bundles), str(tmp))
    tmp.replace(onnx_path)
    first = bundles[0].card
    calibration = {"method": "members' temperatures, then mean probability", "temperature": 1.0}
    training: dict[str, Any] = {"threshold_rule": threshold_rule,
                                "member_config": first.training.get("config")}
    if all(b.card.calibration.method == "none" for b in bundles):
        # Class-balanced members average to a class-balanced P(IDC): keep saying so, and keep
        # the class weighting the slide-area rule reads (runtime.labels.area_threshold).
        calibration = {"method": "none", "temperature": 1.0}
        weights = [b.card.training.get("pos_weight") for b in bundles]
        if all(isinstance(w, int | float) and w > 0 for w in weights):
            training["pos_weight"] = float(np.exp(np.mean(np.log(weights))))
            training["prior_correction"] = 0.0
    tta = [(b.card.model_extra or {}).get("tta") for b in bundles]
    stains = [b.card.preprocessing.get("stain_norm") for b in bundles]
    preprocessing = dict(first.preprocessing)
    if any(st != stains[0] for st in stains):
        preprocessing["stain_norm"] = {"per_member": True, "targets": stains}
    card = {
        "name": f"idcscan-{first.backbone}-ensemble{len(bundles)}",
        "version": __version__,
        "backbone": first.backbone,
        "input_size": first.input_size,
        "patch_size": first.patch_size,
        "mpp": first.mpp,
        "preprocessing": preprocessing,
        "calibration": calibration,
        "threshold": float(threshold),
        "onnx_file": ONNX_NAME,
        "onnx_sha256": sha256_file(onnx_path),
        "metrics": metrics or {},
        "data": {**first.data, "trained_on": f"{len(bundles)} cross-validation folds: every "
                 "patient of the dataset trained all but one member"},
        "training": training,
        "ensemble": {
            "combine": "mean of the members' calibrated P(IDC); logit = log(p / (1 - p)); cam "
                       "= mean of the members' maps",
            "members": [{"path": str(b.path.resolve()), "onnx_sha256": b.card.onnx_sha256,
                         "temperature": b.card.calibration.temperature,
                         "threshold": b.card.threshold} for b in bundles],
        },
        "tta": tta[0] if all(t == tta[0] for t in tta) else None,
        "versions": first.versions,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "disclaimer": DISCLAIMER,
        **(extra or {}),
    }
    write_card(ModelCard.model_validate(card), out_dir)
    return load_bundle(out_dir)


def halve_weights(model: onnx.ModelProto, min_size: int = 1024) -> onnx.ModelProto:
    """Store large float32 weights as float16, each cast back to float32 at load.

    The file is half the size (the shipped model must fit the wheel) and the engines still
    compute in float32 (ONNX Runtime folds the casts at load): only the weights are rounded,
    which moved P(IDC) by at most 0.001 on real patches.
    """
    graph = model.graph
    kept, casts = [], []
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.size >= min_size:
            half = numpy_helper.from_array(array.astype(np.float16), f"{init.name}/fp16")
            kept.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name],
                                          to=onnx.TensorProto.FLOAT))
        else:
            kept.append(init)
    nodes = casts + list(graph.node)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


def halve_bundle_weights(bundle_dir: str | Path) -> Bundle:
    """``halve_weights`` on a bundle in place; its card records it and is sealed again."""
    bundle = load_bundle(bundle_dir)
    tmp = bundle.onnx_path.with_suffix(".onnx.tmp")
    onnx.save(halve_weights(onnx.load(str(bundle.onnx_path))), str(tmp))
    tmp.replace(bundle.onnx_path)
    write_card(ModelCard.model_validate({
        **bundle.card.model_dump(), "onnx_sha256": sha256_file(bundle.onnx_path),
        "weights_storage": "float16, cast to float32 at load (computed in float32)"}),
        bundle.path)
    return load_bundle(bundle.path)
