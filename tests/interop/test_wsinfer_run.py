"""The real ``wsinfer run`` (0.6.1) on a small pyramidal scan with an exported idcscan model
writes the probabilities idcscan's slide mode wrote for the same tiles.

wsinfer finds tissue and places tiles itself; on the painted scan its grid is slide mode's
(``patch_size_pixels * spacing_um_px / slide µm/px`` = 800 level-0 px from the top-left
corner), so the tiles are matched by their top-left corners and compared with tiles.csv's
``patch_probability`` (the tile alone, as wsinfer scores it; ``probability`` adds the
neighbours). It runs offline: wsinfer's start-up reads the model-zoo registry from Hugging
Face, so a registry with no models is put in the cache it reads when offline.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

LAUNCHER = Path(__file__).with_name("wsinfer_launcher.py")


@pytest.fixture(scope="module")
def wsinfer_installed() -> None:
    missing = [m for m in ("wsinfer", "onnx2torch", "torch") if importlib.util.find_spec(m) is None]
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{', '.join(missing)} missing: CI installs them with '.[dev]'.")
        pytest.skip(f"{', '.join(missing)} not installed (pip install -e '.[dev]').")


@pytest.fixture(scope="module")
def wsinfer_results(wsinfer_installed, trained_bundle: Path, painted_map: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> Path:
    from idcscan.interop.wsinfer import export_wsinfer

    root = tmp_path_factory.mktemp("wsinfer")
    model = export_wsinfer(trained_bundle, root / "model").path
    home = root / "home"
    (home / ".wsinfer-zoo").mkdir(parents=True)
    (home / ".wsinfer-zoo" / "wsinfer-zoo-registry.json").write_text('{"models": {}}')
    env = {**os.environ, "HOME": str(home), "HF_HUB_OFFLINE": "1", "WSINFER_FORCE_CPU": "1"}
    run = subprocess.run(
        [sys.executable, str(LAUNCHER), "run", "-i", str(painted_map / "slides"),
         "-o", str(root / "results"), "-c", str(model / "config.json"),
         "-p", str(model / "torchscript_model.pt"), "-n", "1", "-b", "8"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return root / "results"


def test_wsinfer_run_agrees_with_slide_mode_tile_by_tile(wsinfer_results: Path,
                                                         painted_map: Path) -> None:
    with open(wsinfer_results / "model-outputs-csv" / "scan.csv", newline="") as fh:
        theirs = {(int(r["minx"]), int(r["miny"])): r for r in csv.DictReader(fh)}
    with open(painted_map / "maps" / "scan" / "tiles.csv", newline="") as fh:
        ours = {(int(r["x"]), int(r["y"])): float(r["patch_probability"])
                for r in csv.DictReader(fh)}
    summary = json.loads((painted_map / "maps" / "scan" / "summary.json").read_text())
    assert {int(r["width"]) for r in theirs.values()} == {summary["tile_size"]} == {800}
    shared = sorted(set(ours) & set(theirs))
    assert len(shared) >= 0.8 * len(ours) >= 12
    p_idc = np.array([float(theirs[k]["prob_IDC"]) for k in shared])
    p_non = np.array([float(theirs[k]["prob_non-IDC"]) for k in shared])
    mine = np.array([ours[k] for k in shared])
    assert np.allclose(p_idc + p_non, 1.0, atol=1e-5)
    diff = np.abs(p_idc - mine)
    assert np.median(diff) <= 0.03
    assert np.mean(diff > 0.15) <= 0.05
    assert mine.max() > 0.9 and mine.min() < 0.1  # IDC and normal tissue both on the scan


def test_wsinfer_writes_tiles_qupath_imports(wsinfer_results: Path) -> None:
    from shapely.geometry import shape

    collection = json.loads((wsinfer_results / "model-outputs-geojson" / "scan.geojson")
                            .read_text())
    assert collection["features"]
    for feature in collection["features"]:
        assert shape(feature["geometry"]).is_valid
        assert feature["properties"]["objectType"] == "tile"
        assert set(feature["properties"]["measurements"]) == {"prob_non-IDC", "prob_IDC"}
