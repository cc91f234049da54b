"""`--max-minutes` bounds the whole command: a complete (smaller) schedule, then export."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from recipes import FIRST_RECIPE_ARGS

IDCSCAN = str(Path(sys.executable).with_name("idcscan"))

pytestmark = pytest.mark.slow  # starts a real training run


def test_short_budget_finishes_both_phases_and_exports(prepared_data, tmp_path):
    """The budget is honoured by planning, and the plan is what is checked: a schedule whose
    predicted time fits the budget, run to its last step, then exported. (A stopwatch on the
    whole command would test the machine's load, not idcscan: the suite runs beside other
    work.)"""
    run = tmp_path / "run"
    proc = subprocess.run(
        [IDCSCAN, "train", str(prepared_data), "--out", str(run), "--backbone",
         "test_efficientnet", "--weights", "none", "--input-size", "32", "--batch-size", "16",
         "--max-minutes", "0.2", "--no-progress",
         *FIRST_RECIPE_ARGS],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((run / "config.json").read_text())
    schedule = saved["schedule"]
    assert schedule["details"]["mode"] == "time budget"
    assert schedule["phase1_steps"] >= 1 and schedule["phase2_steps"] >= 1
    details = schedule["details"]
    assert details["seconds_left_at_fit"] <= 0.2 * 60  # what was left of the 12 s at fit
    fits = details["predicted_s"] <= details["seconds_left_at_fit"] + 0.01
    assert fits or details["budget_too_small"], details
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert {r["phase"] for r in rows} == {"1", "2"}
    assert int(rows[-1]["step"]) == schedule["total_steps"]  # completed, not cut off
    assert (run / "bundle" / "model.onnx").is_file()
    assert str(run / "bundle") in proc.stdout
