"""Fixtures for the inference tests. ``trained_bundle`` lives here (not in a test module) so
that it is trained once per session however many modules use it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slide_helpers import texture


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny IDCNet that tells the two textures apart, exported as a real bundle."""
    import torch

    from idcscan.model.export import export_bundle
    from idcscan.model.network import IDCNet
    from idcscan.preprocessing import Preprocessing

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = IDCNet("test_efficientnet", Preprocessing(input_size=32))
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(12):
        labels = rng.integers(0, 2, 16)
        patches = np.stack([texture(rng, 50, 50, "idc" if y else "normal") for y in labels])
        logits = net(torch.from_numpy(patches))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, torch.from_numpy(labels).float()
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    # a dozen steps leave BatchNorm's running statistics far from the data: re-estimate them
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None  # cumulative average over the passes below
        for _ in range(4):
            labels = rng.integers(0, 2, 32)
            kinds = ["idc" if y else "normal" for y in labels]
            net(torch.from_numpy(np.stack([texture(rng, 50, 50, k) for k in kinds])))
    out = tmp_path_factory.mktemp("slide-bundle")
    export_bundle(net.eval(), out, threshold=0.5, data={"source": "two synthetic textures"})
    return out
