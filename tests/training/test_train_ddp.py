"""`--devices 2` trains with DDP: two CPU processes (gloo), one schedule, one bundle."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from idcscan.runtime.bundle import load_bundle

import pytest

from recipes import FIRST_RECIPE_ARGS

pytestmark = pytest.mark.slow  # starts real training runs

IDCSCAN = str(Path(sys.executable).with_name("idcscan"))


def test_two_process_ddp_on_cpu(prepared_data, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(
        [IDCSCAN, "train", str(prepared_data), "--out", str(run), "--backbone",
         "test_efficientnet", "--weights", "none", "--input-size", "32", "--batch-size", "8",
         "--frozen-epochs", "1", "--finetune-epochs", "1", "--devices", "2", "--no-progress",
         *FIRST_RECIPE_ARGS],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in proc.stderr and "distributed_backend=gloo" in proc.stderr
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["devices"] == 2
    # 320 training patches, 8 per process and step, 2 processes: 20 steps per pass.
    assert saved["steps_per_pass"] == 20
    assert saved["schedule"]["total_steps"] == 40
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [20, 40]
    card = load_bundle(run / "bundle").card
    # Validation logits were gathered from both ranks: all 80 validation patches count.
    assert card.metrics["validation"]["n_patches"] == 80
    assert proc.stdout.count(str(run / "bundle")) == 1  # only rank 0 reports
