"""Shared fixtures: tiny models and data the suite builds itself (never real patients)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported bundle from a randomly initialised Lite0 at 32 px: real ONNX, tiny cost."""
    import torch

    from idcscan.model.export import export_bundle
    from idcscan.model.network import IDCNet
    from idcscan.preprocessing import Preprocessing

    torch.manual_seed(0)
    net = IDCNet("tf_efficientnet_lite0", Preprocessing(input_size=32)).eval()
    out = tmp_path_factory.mktemp("bundle")
    export_bundle(
        net,
        out,
        threshold=0.5,
        metrics={"validation": {"auc": 0.5}},
        data={"source": "random weights (test fixture)"},
    )
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
