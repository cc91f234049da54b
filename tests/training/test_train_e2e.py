"""prepare -> train -> export -> evaluate: the run directory, the model card, and an ONNX graph
that scores exactly like the network it came from."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from idcscan.data.packed import load_packed
from idcscan.runtime.bundle import load_bundle
from idcscan.runtime.predictor import Predictor
from idcscan.training.config import TrainConfig
from idcscan.training.train import TrainResult, build_network, train

from recipes import FIRST_RECIPE  # noqa: E402

pytestmark = pytest.mark.slow  # starts real training runs


@pytest.fixture(scope="module")
def run(prepared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    out = tmp_path_factory.mktemp("run") / "run"
    cfg = TrainConfig(
        data=str(prepared_data), out=str(out), backbone="tf_efficientnet_lite0",
        weights="imagenet", input_size=32, batch_size=16, finetune_epochs=0.5,
        progress=False, seed=0, **FIRST_RECIPE,
    )
    return train(cfg)


def test_run_directory_holds_config_metrics_curves_checkpoints(run: TrainResult):
    d = run.run_dir
    saved = json.loads((d / "config.json").read_text())
    assert saved["config"]["backbone"] == "tf_efficientnet_lite0"
    assert saved["schedule"]["phase1_steps"] == 20 and saved["schedule"]["phase2_steps"] == 10
    assert saved["result"]["bundle"] == str(d / "bundle")
    rows = list(csv.DictReader(open(d / "metrics.csv")))
    assert [r["phase"] for r in rows] == ["1", "2"]
    assert int(rows[-1]["step"]) == 30
    assert all(0 <= float(r["val_auc"]) <= 1 for r in rows)
    assert (d / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (d / "checkpoints" / "last.ckpt").is_file()
    assert run.best_checkpoint is not None and run.best_checkpoint.is_file()


def test_model_card_has_calibration_threshold_metrics_provenance(run: TrainResult):
    card = load_bundle(run.bundle_dir, verify=True).card  # verifies the sha256 too
    assert card.backbone == "tf_efficientnet_lite0" and card.input_size == 32
    assert card.mpp == 4.0 and card.patch_size == 50
    assert card.calibration.method == "temperature" and card.calibration.temperature > 0
    assert 0 < card.threshold < 1
    val = card.metrics["validation"]
    assert val["threshold"] == card.threshold
    assert {"auc", "balanced_accuracy", "sensitivity", "specificity", "ece"} <= set(val)
    assert card.data["split_by"] == "patient" and card.data["n_patients"] == 12
    # The first recipe chose all three on validation patients, and the card says so.
    assert card.data["trained_on"] == ("train split; validation split used for checkpoint "
                                       "choice, temperature and review threshold; test split "
                                       "untouched")
    assert card.data["counts"]["val"]["total"] == val["n_patches"]
    assert card.training["weights"]["source"].startswith("package efficientnet-lite0")
    assert card.training["schedule"]["total_steps"] == 30
    assert len(card.onnx_sha256) == 64
    # Lite0's TF weights expect inputs scaled to [-1, 1], and the card says so.
    assert card.preprocessing["mean"] == [0.5, 0.5, 0.5]


def _exported_network(run: TrainResult):
    """Rebuild what was exported from the checkpoint and the card, independently of train()."""
    card = load_bundle(run.bundle_dir).card
    net = build_network(TrainConfig.from_dict(card.training["config"]))
    state = torch.load(run.best_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
    with torch.no_grad():
        net.head.fc2.bias += card.training["prior_correction"]
    return net.eval()


def test_onnx_equals_pytorch_logits_and_cam(run: TrainResult, prepared_data: Path):
    patches = load_packed(prepared_data).subset("test").images()[:48]
    net = _exported_network(run)
    with torch.no_grad():
        logit, cam = net.forward_with_cam(torch.from_numpy(patches))
    predictor = Predictor(run.bundle_dir, runtime="onnxruntime")
    onnx_logit, onnx_cam = predictor.engine.run(["logit", "cam"], patches)
    assert onnx_cam.shape == tuple(cam.shape)
    np.testing.assert_allclose(onnx_logit, logit.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(onnx_cam, cam.numpy(), atol=1e-4, rtol=0)


def test_card_validation_metrics_are_what_the_bundle_produces(run: TrainResult,
                                                              prepared_data: Path):
    from idcscan.evaluation.metrics import binary_metrics

    val = load_packed(prepared_data).subset("val")
    predictor = Predictor(run.bundle_dir, runtime="onnxruntime")  # as training measured them
    probs = predictor.predict_proba(val.images())
    recomputed = binary_metrics(val.label, probs, predictor.threshold)
    card = predictor.card.metrics["validation"]
    assert recomputed["auc"] == pytest.approx(card["auc"], abs=1e-3)
    assert recomputed["balanced_accuracy"] == pytest.approx(card["balanced_accuracy"], abs=0.02)


def test_the_model_learned_and_evaluates_on_test_patients(run: TrainResult,
                                                          prepared_data: Path, tmp_path: Path):
    from idcscan.evaluation.evaluate import evaluate

    assert run.validation["auc"] > 0.6  # pretrained Lite0 separates the synthetic classes
    metrics = evaluate(run.bundle_dir, prepared_data, split="test", n_boot=50, progress=False)
    flat = json.dumps(metrics)
    assert '"auc"' in flat
    probs = Predictor(run.bundle_dir).predict_proba(
        load_packed(prepared_data).subset("test").images())
    assert np.all((probs >= 0) & (probs <= 1)) and probs.std() > 0
