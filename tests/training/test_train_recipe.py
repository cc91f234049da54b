"""`idcscan train` with non-default recipe options: what is recorded in config.json and
model.json, and that the bundle holds exactly the weights and graph the options ask for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from idcscan.cli import app
from idcscan.data.packed import load_packed
from idcscan.runtime.bundle import load_bundle
from idcscan.runtime.predictor import Predictor
from idcscan.training.config import TrainConfig
from idcscan.training.network import DihedralTTA
from idcscan.training.train import build_network

pytestmark = pytest.mark.slow  # a real (tiny) training run

OPTIONS = ["--backbone", "test_efficientnet", "--weights", "none", "--input-size", "32",
           "--batch-size", "16", "--frozen-epochs", "0.5", "--finetune-epochs", "2",
           "--frozen-time-fraction", "0", "--unfreeze", "all", "--lr-head", "1e-3",
           "--lr-backbone", "1e-3", "--warmup-fraction", "0", "--final-lr-fraction", "0",
           "--augment", "basic", "--normalize", "half", "--head", "linear", "--select", "ema",
           "--calibration", "none", "--threshold-rule", "0.5", "--tta", "--label-smoothing",
           "0", "--stain-norm", "reinhard", "--no-progress"]


@pytest.fixture(scope="module")
def run(prepared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("recipe") / "run"
    result = CliRunner().invoke(app, ["train", str(prepared_data), "--out", str(out), *OPTIONS])
    assert result.exit_code == 0, result.output
    return out


def test_every_option_is_recorded(run: Path):
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert cfg["select"] == "ema" and cfg["head"] == "linear" and cfg["tta"] is True
    assert cfg["augment"] == "basic" and cfg["normalize"] == "half"
    assert cfg["final_lr_fraction"] == 0 and cfg["warmup_fraction"] == 0
    assert cfg["calibration"] == "none" and cfg["threshold_rule"] == "0.5"
    assert cfg["stain_norm"] == "reinhard" and len(cfg["stain_target"]["mean"]) == 3
    card = load_bundle(run / "bundle").card
    assert card.model_extra["tta"]["in_graph"] is True
    assert cfg["tta_views"] == card.model_extra["tta"]["views"] == 4  # the default: the flips
    assert card.preprocessing["mean"] == card.preprocessing["std"] == [0.5, 0.5, 0.5]
    assert card.preprocessing["stain_norm"] == cfg["stain_target"]
    assert card.threshold == 0.5 and card.calibration.temperature == 1.0
    assert "only measured" in card.data["trained_on"]  # EMA, no calibration, fixed threshold
    assert card.training["prior_correction"] == 0.0
    assert card.training["schedule"]["phase1_steps"] == 0  # no frozen phase
    assert card.training["augmentation"]["preset"] == "basic"
    assert card.training["augmentation"]["hed_sigma"] == 0.0


def test_bundle_holds_the_ema_weights_with_tta_in_the_graph(run: Path, prepared_data: Path):
    card = load_bundle(run / "bundle").card
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == card.training["schedule"]["total_steps"]  # the final state
    ema_state = next(v["ema"] for k, v in ckpt["callbacks"].items() if "WeightEMA" in k)
    last_state = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    patches = load_packed(prepared_data).subset("test").images()[:24]
    x = torch.from_numpy(patches)
    nets = {}
    for name, state in (("ema", ema_state), ("last", last_state)):
        net = build_network(TrainConfig.from_dict(card.training["config"])).eval()
        net.load_state_dict(state)
        with torch.no_grad():
            nets[name] = DihedralTTA(net, card.model_extra["tta"]["views"])(x).numpy()
    reference = Predictor(run / "bundle", runtime="onnxruntime")  # the file, in fp32
    onnx_logits = reference.logits(patches)
    np.testing.assert_allclose(onnx_logits, nets["ema"], atol=1e-4)
    assert not np.allclose(onnx_logits, nets["last"], atol=1e-3)  # the average, not the last
    # Evaluate applies the graph's TTA as-is (and does not stack its own on top).
    assert np.array_equal(reference.logits(patches, tta=True), onnx_logits)
