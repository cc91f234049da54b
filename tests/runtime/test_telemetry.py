"""Nothing about a scoring run leaves the machine: ONNX Runtime's own telemetry is off, and
neither engine leaves anything (caches, device ids, opt-in files) in the user's home."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCORE = (
    "import numpy as np\n"
    "from idcscan.runtime.predictor import Predictor\n"
    "Predictor({bundle!r}, runtime={runtime!r}).logits(np.zeros((1, 50, 50, 3), np.uint8))\n"
)
PLAIN = (
    "import onnxruntime as ort\n"
    "ort.InferenceSession({onnx!r}, providers=['CPUExecutionProvider'])\n"
)


def _run(code: str, home: Path) -> bool:
    """Run ``code`` with only PATH and a fresh HOME (no CI variables, which also silence
    ONNX Runtime); True when its telemetry cache appeared."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    return (home / ".cache" / "Microsoft").exists()


def test_scoring_writes_no_onnxruntime_telemetry(two_class_demo: Path, tmp_path: Path) -> None:
    bundle = two_class_demo / "bundle"
    if not _run(PLAIN.format(onnx=str(bundle / "model.onnx")), tmp_path / "plain"):
        pytest.skip("this onnxruntime build keeps no telemetry: nothing to turn off")
    assert not _run(SCORE.format(bundle=str(bundle), runtime="onnxruntime"),
                    tmp_path / "idcscan")


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_scoring_leaves_nothing_in_home(two_class_demo: Path, tmp_path: Path, runtime) -> None:
    home = tmp_path / runtime
    home.mkdir()
    _run(SCORE.format(bundle=str(two_class_demo / "bundle"), runtime=runtime), home)
    assert [p.relative_to(home) for p in home.rglob("*")] == []
