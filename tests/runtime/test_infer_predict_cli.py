"""`idcscan predict`: files and folders in, one row per image out, same numbers as Predictor."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from idcscan import DISCLAIMER
from idcscan.cli import app
from idcscan.runtime.predict_files import COLUMNS, collect_images, predict_files
from idcscan.runtime.predictor import Predictor

runner = CliRunner()


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A nested folder of 50 x 50 patches in several formats, plus things that are not images."""
    rng = np.random.default_rng(11)
    root = tmp_path / "images"
    (root / "p1" / "1").mkdir(parents=True)
    (root / "p2" / "0" / "deeper").mkdir(parents=True)
    arrays: dict[str, np.ndarray] = {}
    for name in ("p1/1/a.png", "p2/0/b.png", "p2/0/deeper/c.TIF", "p2/0/d.bmp"):
        arr = rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / name)
        arrays[str(root / name)] = arr
    (root / "p1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated nonsense")
    (root / "p1" / "README.txt").write_text("not an image, and not named like one")
    return root, arrays


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_folders_are_searched_recursively_by_suffix(tree) -> None:
    root, arrays = tree
    found = [str(p) for p in collect_images([root])]
    assert sorted(found) == sorted([*arrays, str(root / "p1" / "broken.png")])
    assert not any(f.endswith(".txt") for f in found)


def test_csv_rows_match_predictor_and_errors_get_rows(tiny_bundle: Path, tree, tmp_path) -> None:
    root, arrays = tree
    out = tmp_path / "out" / "pred.csv"
    result = runner.invoke(app, ["predict", str(tiny_bundle), str(root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert list(rows[0]) == list(COLUMNS)
    assert len(rows) == len(arrays) + 1
    by_path = {r["path"]: r for r in rows}

    broken = by_path[str(root / "p1" / "broken.png")]
    assert broken["error"]
    assert broken["predicted_class"] == "" and broken["probability_positive"] == ""

    predictor = Predictor(tiny_bundle)
    names = list(arrays)
    expected = predictor.predict_proba(np.stack([arrays[n] for n in names]))
    for name, p in zip(names, expected):
        row = by_path[name]
        assert row["error"] == ""
        prob = float(row["probability_positive"])
        assert 0.0 <= prob <= 1.0  # fractions, not percents
        assert prob == pytest.approx(float(p), abs=1e-6)
        cls = int(row["predicted_class"])
        assert cls == int(p >= 0.5)  # the call; the review flag is its own column
        assert row["flagged"] == str(p >= predictor.threshold)
        assert row["class_name"] == ("IDC Positive" if cls else "IDC Negative")
        assert float(row["confidence"]) == pytest.approx(prob if cls else 1 - prob)
    assert not list(out.parent.glob("*.tmp")) and not list(out.parent.glob(".*.tmp"))


def test_kaggle_png_gives_exactly_the_packed_row(tiny_bundle: Path, tmp_path: Path) -> None:
    """evaluate scores patches.npy rows with Predictor; the PNG of that row scores the same."""
    row = np.random.default_rng(4).integers(0, 256, (50, 50, 3), dtype=np.uint8)
    png = tmp_path / "10253_idx5_x1351_y1101_class0.png"
    Image.fromarray(row).save(png)
    out = tmp_path / "one.csv"
    result = runner.invoke(app, ["predict", str(tiny_bundle), str(png), "-o", str(out)])
    assert result.exit_code == 0, result.output
    cli = float(read_csv(out)[0]["probability_positive"])
    assert cli == float(Predictor(tiny_bundle).predict_proba(row[None])[0])


def test_json_output_and_explicitly_named_files(tiny_bundle: Path, tree, tmp_path: Path) -> None:
    root, arrays = tree
    misnamed = tmp_path / "patch.txt"  # PNG content, wrong name: judged by content
    misnamed.write_bytes((root / "p1" / "1" / "a.png").read_bytes())
    out = tmp_path / "pred.json"
    args = ["predict", str(tiny_bundle), str(misnamed), str(root / "p1"), "--out", str(out)]
    result = runner.invoke(app, [*args, "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["disclaimer"] == DISCLAIMER
    assert doc["model"]["backbone"] == "tf_efficientnet_lite0"
    rows = doc["predictions"]
    assert [Path(r["path"]).name for r in rows] == ["patch.txt", "a.png", "broken.png"]
    assert rows[0]["error"] is None
    assert rows[0]["probability_positive"] == pytest.approx(rows[1]["probability_positive"])
    assert rows[2]["error"] and rows[2]["probability_positive"] is None
    assert all(set(r) == set(COLUMNS) for r in rows)


def test_table_output_shows_disclaimer(tiny_bundle: Path, tree) -> None:
    root, _ = tree
    result = runner.invoke(app, ["predict", str(tiny_bundle), str(root / "p2")])
    assert result.exit_code == 0, result.output
    assert "b.png" in result.output and "c.TIF" in result.output
    assert "Research use only" in result.output


def test_tta_matches_predictor_tta(tiny_bundle: Path, tree, tmp_path: Path) -> None:
    root, arrays = tree
    out = tmp_path / "tta.csv"
    result = runner.invoke(
        app, ["predict", str(tiny_bundle), str(root / "p2"), "--tta", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = {r["path"]: float(r["probability_positive"]) for r in read_csv(out)}
    predictor = Predictor(tiny_bundle)
    for path, prob in rows.items():
        expected = predictor.predict_proba(arrays[path][None], tta=True)[0]
        assert prob == pytest.approx(float(expected), abs=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing-dir"], "does not exist"),
        (["EMPTY"], "holds no images"),
        (["IMG", "--out", "x.xlsx"], ".csv or .json"),
    ],
)
def test_user_errors_exit_2_with_a_message(tiny_bundle, tree, tmp_path, args, message) -> None:
    root, arrays = tree
    (tmp_path / "empty").mkdir()
    args = [
        {"EMPTY": str(tmp_path / "empty"), "IMG": next(iter(arrays))}.get(a, a) for a in args
    ]
    result = runner.invoke(app, ["predict", str(tiny_bundle), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())  # rich wraps long lines


def test_library_reports_progress_and_keeps_order(tiny_bundle: Path, tree) -> None:
    root, arrays = tree
    paths = collect_images([root])
    seen: list[int] = []
    rows = list(predict_files(Predictor(tiny_bundle), paths, batch_size=2, on_progress=seen.append))
    assert [r.path for r in rows] == [str(p) for p in paths]
    assert sum(seen) == len(paths)


def test_inference_modules_do_not_import_torch() -> None:
    code = (
        "import sys, idcscan.runtime.predict_files, idcscan.server.app, idcscan.runtime.explain;"
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_runtime_flag_picks_the_engine_and_a_bad_one_is_named(tiny_bundle, tree, tmp_path,
                                                              monkeypatch) -> None:
    import os

    from idcscan.runtime.engine import ENV_RUNTIME

    root, arrays = tree
    for runtime in ("onnxruntime", "openvino"):
        monkeypatch.delenv(ENV_RUNTIME, raising=False)
        out = tmp_path / f"{runtime}.json"
        result = runner.invoke(app, ["predict", str(tiny_bundle), str(root), "--out", str(out),
                                     "--runtime", runtime])
        assert result.exit_code == 0, result.output
        # set for this process and whatever it starts (the conftest fixture restores it)
        assert os.environ[ENV_RUNTIME] == runtime
        engine = Predictor(tiny_bundle, runtime=runtime)
        doc = json.loads(out.read_text())
        assert doc["model"]["engine"] == engine.engine.info.label
        rows = {r["path"]: r for r in doc["predictions"] if not r["error"]}
        for path, arr in arrays.items():
            want = engine.predict_proba(arr[None])[0]
            assert rows[path]["probability_positive"] == pytest.approx(want, abs=1e-7)
    bad = runner.invoke(app, ["predict", str(tiny_bundle), str(root), "--runtime", "tensorrt"])
    assert bad.exit_code == 2
    assert "--runtime must be one of auto, onnxruntime, openvino; got 'tensorrt'" in bad.output
