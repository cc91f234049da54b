"""The two phases: what trains, what stays frozen (BatchNorm statistics included), and the loss."""

from __future__ import annotations

import math

import pytest
import torch

from idcscan.training.module import IDCModule, backbone_layers, split_backbone
from idcscan.training.network import IDCNet
from idcscan.preprocessing import Preprocessing


def _module(unfreeze: str = "all", **kw) -> IDCModule:
    torch.manual_seed(0)
    return IDCModule(IDCNet("test_efficientnet", Preprocessing(input_size=32)),
                     unfreeze=unfreeze, **kw)


def _batch(n: int = 8):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 50, 50, 3), generator=g, dtype=torch.uint8).float()
    return images, torch.tensor([0, 1] * (n // 2))


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _step(module: IDCModule) -> None:
    opt = torch.optim.AdamW(module.param_groups(), lr=1e-2)
    loss, _ = module.compute_loss(*_batch())
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_layers_include_norms_with_child_activations():
    net = IDCNet("tf_efficientnet_lite0", Preprocessing(input_size=32))
    layers = backbone_layers(net.backbone)
    kinds = {type(m).__name__ for _, m in layers}
    assert "BatchNormAct2d" in kinds and ({"Conv2d", "Conv2dSame"} & kinds)
    params = sum(p.numel() for _, m in layers for p in m.parameters(recurse=False))
    assert params == sum(p.numel() for p in net.backbone.parameters())


def test_phase_one_changes_only_the_head_and_keeps_bn_statistics():
    module = _module()
    module.train()
    module.set_phase(1)
    before = _snapshot(module.net.backbone)
    head_before = module.net.head.fc1.weight.detach().clone()
    _step(module)
    after = module.net.backbone.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key  # weights and running stats untouched
    assert not torch.equal(module.net.head.fc1.weight, head_before)


def test_phase_two_trains_the_backbone_and_updates_its_bn_statistics():
    module = _module()
    module.train()
    module.set_phase(2)
    before = _snapshot(module.net.backbone)
    _step(module)
    after = module.net.backbone.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(after[k], v)]
    assert any(k.endswith("running_mean") for k in changed)
    assert any(k.endswith("weight") for k in changed)


def test_partial_unfreeze_keeps_early_layers_frozen_in_both_phases():
    module = _module(unfreeze="10")
    frozen, tail = split_backbone(module.net.backbone, "10")
    assert len(tail) == 10 and frozen
    module.train()
    module.set_phase(2)
    assert all(not m.training for m in module._frozen_bn)
    assert all(m.training for m in module._tail_bn)
    before = _snapshot(module.net.backbone)
    _step(module)
    after = module.net.backbone.state_dict()
    frozen_names = {n for n, m in backbone_layers(module.net.backbone) if m in frozen}
    for key, value in before.items():
        layer = key.rsplit(".", 1)[0]
        if layer in frozen_names:
            assert torch.equal(after[key], value), key
    # Lightning's train()/eval() toggling must not wake the frozen statistics up.
    module.eval()
    module.train()
    assert all(not m.training for m in module._frozen_bn)


def test_param_groups_split_head_and_backbone_without_decay_on_norms():
    module = _module(lr_head=1e-3, lr_backbone=1e-4, weight_decay=0.05)
    groups = module.param_groups()
    by_part = {(g["part"], g["weight_decay"] > 0): g for g in groups}
    assert by_part[("head", True)]["lr"] == 1e-3
    assert by_part[("backbone", True)]["lr"] == 1e-4
    assert all(p.ndim == 1 for g in groups if g["weight_decay"] == 0 for p in g["params"])
    n_params = sum(len(g["params"]) for g in groups)
    assert n_params == len([p for p in module.net.parameters() if p.requires_grad])


def test_prior_correction_undoes_the_pos_weight_shift():
    module = _module(pos_weight=4.0)
    bias = module.net.head.fc2.bias.item()
    shift = module.fold_prior_correction()
    assert shift == -math.log(4.0)
    assert module.net.head.fc2.bias.item() == pytest.approx(bias + shift, abs=1e-6)


def test_unfreeze_accepts_all_a_count_or_a_share():
    from idcscan.training.module import unfrozen_count

    assert unfrozen_count("all", 98) == 98
    assert unfrozen_count("30", 98) == 30
    assert unfrozen_count("0.7", 98) == 68  # Lite0: stages 3-6 and the head conv
    assert unfrozen_count("500", 98) == 98
    net = IDCNet("tf_efficientnet_lite0", Preprocessing(input_size=32))
    frozen, tail = split_backbone(net.backbone, "0.7")
    names = {m: n for n, m in backbone_layers(net.backbone)}
    assert names[tail[0]].startswith("blocks.3.0")  # the first trained layer opens stage 3
    assert names[frozen[-1]].startswith("blocks.2.")
