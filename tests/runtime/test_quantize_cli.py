"""`idcscan quantize` as a user runs it: a folder of patches in, a loadable int8 bundle out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from idcscan import DISCLAIMER
from idcscan.cli import app
from idcscan.runtime.predictor import Predictor


def test_quantize_command_writes_an_int8_bundle(
    tiny_bundle: Path, synthetic_kaggle: Path, tmp_path
):
    out = tmp_path / "int8"
    result = CliRunner().invoke(
        app,
        [
            "quantize",
            str(tiny_bundle),
            "--out",
            str(out),
            "--calibration",
            str(synthetic_kaggle),
            "--calibration-size",
            "32",
            "--check-size",
            "16",
            "--format",
            "qoperator",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "int8 bundle written" in result.output
    assert " ".join(DISCLAIMER.split()[:6]) in " ".join(result.output.split())

    card = json.loads((out / "model.json").read_text())
    assert card["quantization"]["calibration"]["kind"] == "images"
    assert "QOPERATOR" in card["quantization"]["method"]
    predictor = Predictor(out)
    patches = np.random.default_rng(0).integers(0, 256, (4, 50, 50, 3), dtype=np.uint8)
    p8, p32 = predictor.predict_proba(patches), Predictor(tiny_bundle).predict_proba(patches)
    assert np.abs(p8 - p32).max() < 0.1


def test_quantize_command_explains_bad_input(tiny_bundle: Path, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["quantize", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2
    assert "No model bundle" in missing.output

    bad_format = runner.invoke(
        app, ["quantize", str(tiny_bundle), "--out", str(tmp_path / "o"), "--format", "fp8"]
    )
    assert bad_format.exit_code == 2
    assert "--format must be qdq or qoperator" in bad_format.output
    assert not (tmp_path / "o").exists()
