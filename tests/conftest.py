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


@pytest.fixture(scope="session")
def synthetic_kaggle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset in the exact Kaggle layout: 12 patients x 40 patches, seed 0."""
    from idcscan.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("kaggle") / "IDC_regular_ps50_idx5"
    generate_dataset(root, patients=12, patches_per_patient=40, seed=0)
    return root


@pytest.fixture(scope="session")
def prepared_data(synthetic_kaggle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``synthetic_kaggle`` packed by ``prepare`` (default fractions, seed 0); read-only."""
    from idcscan.data.packing import prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare(synthetic_kaggle, out, val_frac=0.15, test_frac=0.15, seed=0, progress=False)
    return out
