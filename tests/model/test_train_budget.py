"""`--max-minutes` bounds the whole command: a complete (smaller) schedule, then export."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

IDCSCAN = str(Path(sys.executable).with_name("idcscan"))

FIXED_COST_SCRIPT = """
import os, tempfile
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import lightning, timm, torch
from idcscan.model.export import export_bundle
from idcscan.model.network import IDCNet
from idcscan.preprocessing import Preprocessing

import pytest

pytestmark = pytest.mark.slow  # starts real training runs
net = IDCNet("test_efficientnet", Preprocessing(input_size=32)).eval()
export_bundle(net, tempfile.mkdtemp(), threshold=0.5)
"""


def _wall(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return time.monotonic() - start, proc


def test_short_budget_finishes_both_phases_and_exports_in_time(prepared_data, tmp_path):
    # What no schedule can shrink: starting Python, importing torch/Lightning, writing ONNX.
    fixed, proc = _wall([sys.executable, "-c", FIXED_COST_SCRIPT])
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    wall, proc = _wall([IDCSCAN, "train", str(prepared_data), "--out", str(run),
                        "--backbone", "test_efficientnet", "--weights", "none",
                        "--input-size", "32", "--batch-size", "16", "--max-minutes", "0.2",
                        "--no-progress"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((run / "config.json").read_text())
    schedule = saved["schedule"]
    assert schedule["details"]["mode"] == "time budget"
    assert schedule["phase1_steps"] >= 1 and schedule["phase2_steps"] >= 1
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert {r["phase"] for r in rows} == {"1", "2"}
    assert int(rows[-1]["step"]) == schedule["total_steps"]  # completed, not cut off
    assert (run / "bundle" / "model.onnx").is_file()
    assert str(run / "bundle") in proc.stdout
    # 12 s budget, plus the fixed costs (measured just now) and a little for a busy machine.
    assert wall <= 12 + fixed + 10, (wall, fixed)
