"""TTA and calibration are described from the bundle's own card, not from the flag asked.

A bundle whose graph averages 4 views always averages them; ``--tta`` then changes nothing,
and outputs must say what ran (``tta``, ``tta_views``) with or without the flag.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from idcscan.cli import app


@pytest.fixture(scope="module")
def tta4_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Lite0 at 32 px with 4 dihedral views averaged in its graph, uncalibrated."""
    import torch

    from idcscan.preprocessing import Preprocessing
    from idcscan.training.export import export_bundle
    from idcscan.training.network import IDCNet

    torch.manual_seed(0)
    net = IDCNet("tf_efficientnet_lite0", Preprocessing(input_size=32)).eval()
    out = tmp_path_factory.mktemp("tta4")
    export_bundle(net, out, tta=True, tta_views=4, threshold=0.5,
                  calibration={"method": "none", "temperature": 1.0},
                  data={"source": "random weights (test fixture)"})
    return out


@pytest.fixture(scope="module")
def patches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("patches")
    rng = np.random.default_rng(3)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)).save(
            folder / f"p{i}.png")
    return folder


def predict_json(bundle: Path, folder: Path, out: Path, *flags: str) -> tuple[dict, str]:
    result = CliRunner().invoke(app, ["predict", str(bundle), str(folder), "-o", str(out),
                                      *flags])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.stderr


def test_in_graph_tta_is_reported_with_or_without_the_flag(
    tta4_bundle: Path, patches: Path, tmp_path: Path
) -> None:
    plain, plain_err = predict_json(tta4_bundle, patches, tmp_path / "a.json")
    asked, asked_err = predict_json(tta4_bundle, patches, tmp_path / "b.json", "--tta")
    for doc in (plain, asked):
        assert doc["tta"] is True and doc["tta_views"] == 4
        assert "inside the model" in doc["tta_in_use"]
    assert "changes nothing" in asked_err and "changes nothing" not in plain_err
    # and it really changes nothing
    p = [r["probability_positive"] for r in plain["predictions"]]
    q = [r["probability_positive"] for r in asked["predictions"]]
    assert p == q


def test_run_time_tta_is_reported_as_asked(tiny_bundle: Path, patches: Path,
                                           tmp_path: Path) -> None:
    plain, _ = predict_json(tiny_bundle, patches, tmp_path / "a.json")
    asked, _ = predict_json(tiny_bundle, patches, tmp_path / "b.json", "--tta")
    assert (plain["tta"], plain["tta_views"]) == (False, 1)
    assert (asked["tta"], asked["tta_views"]) == (True, 8)
    assert "at run time" in asked["tta_in_use"] and plain["tta_in_use"].startswith("off")


def test_help_and_card_describe_what_runs(tta4_bundle: Path) -> None:
    from idcscan.runtime.bundle import load_bundle
    from idcscan.runtime.model_card import readable_card

    for command in ("predict", "slide", "evaluate"):
        raw = CliRunner().invoke(app, [command, "--help"]).output
        text = " ".join(re.sub("[│╭╮╰╯─]", " ", raw).split())  # rich's help box, unwrapped
        assert "changes nothing" in text and "8 flips/rotations" in text, command
    readable = readable_card(load_bundle(tta4_bundle).card)
    rows = dict(readable["sections"][0]["rows"])
    assert "4 flipped/rotated views" in rows["Test-time augmentation"]
    assert rows["Calibration"].startswith("none: P(IDC) is class-balanced")
