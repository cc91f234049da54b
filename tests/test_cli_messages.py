"""What the command line says and how it exits, for the mistakes people make.

Run through Typer's CliRunner, i.e. NOT on a terminal: the case where rich would otherwise
wrap a one-line error at 80 columns.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from idcscan import DISCLAIMER
from idcscan.cli import app


def run(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result, result.stdout, result.stderr


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def bundle(two_class_demo: Path) -> Path:
    return two_class_demo / "bundle"


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("meeting notes, not an image\n")
    return path


def test_nothing_scored_exits_non_zero_with_one_line(bundle, notes) -> None:
    result, out, err = run("predict", bundle, notes)
    assert result.exit_code == 2
    (line,) = error_lines(err)
    assert str(notes) in line and "Nothing was scored" in line
    assert len(line) > 80  # long, and still one line off a terminal
    assert "images" not in out


def test_a_run_folder_gets_did_you_mean(bundle, tmp_path, two_class_demo) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(bundle, run_dir / "bundle")
    patch = next((two_class_demo / "patches").glob("*.png"))
    result, _, err = run("predict", run_dir, patch)
    assert result.exit_code == 2
    (line,) = error_lines(err)
    assert f"did you mean {run_dir / 'bundle'}?" in line


def test_swapped_arguments_are_recognised(bundle, two_class_demo) -> None:
    patch = next((two_class_demo / "patches").glob("*.png"))
    for command in ("predict", "slide"):
        extra = ["--out", "unused"] if command == "slide" else []
        result, _, err = run(command, patch, bundle, *extra)
        assert result.exit_code == 2
        (line,) = error_lines(err)
        assert "arguments look swapped" in line
        assert f"idcscan {command} {bundle} {patch}" in line


def test_slide_on_a_text_file_says_one_sentence(bundle, notes, tmp_path) -> None:
    result, out, err = run("slide", bundle, notes, "--out", tmp_path / "maps")
    assert result.exit_code == 2
    (line,) = error_lines(err)
    assert line == (f"error: {notes} is not an image or slide idcscan can read; give a PNG, "
                    "JPEG or TIFF image or a whole-slide file (" + line.split("(", 1)[1])
    assert line.count(". ") == 0  # one sentence
    assert (out + err).count(DISCLAIMER) == 1


def test_help_is_plain(bundle) -> None:
    for command in ("predict", "slide", "evaluate", "serve", "train", "card"):
        result, out, _ = run(command, "--help")
        assert result.exit_code == 0
        for noise in ("<bool>", "<list[Path]>", "{bundle}", "<path>", "<int"):
            assert noise not in out, (command, noise)
    _, out, _ = run("predict", "--help")
    assert "BUNDLE INPUT..." in out


def test_predict_refuses_sections_in_their_row_and_marks_demo_rows(bundle, two_class_demo,
                                                                      tmp_path):
    """A tissue section is not scored as one patch (as POST /predict refuses it): its row
    carries a one-line error naming `idcscan slide`; the others are scored."""
    big = tmp_path / "section.png"
    Image.fromarray(np.full((700, 900, 3), 200, np.uint8)).save(big)
    medium = tmp_path / "medium.png"
    Image.fromarray(np.full((100, 100, 3), 200, np.uint8)).save(medium)
    out_csv = tmp_path / "rows.csv"
    patches = two_class_demo / "patches"
    result, out, err = run("predict", bundle, patches, big, medium, "-o", out_csv)
    assert result.exit_code == 0, err  # eight patches and the medium image were scored
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"{medium}: 100 x 100 px was resized" in warnings[0]
    assert err.count(DISCLAIMER) == 1
    assert "IDC Positive when P(IDC) >= 50.00%; flagged for review when P(IDC) >= 30.00%" in err
    assert "9 images scored" in err and "1 not scored" in err
    rows = list(csv.DictReader(out_csv.open()))
    assert {r["demo"] for r in rows} == {"True"}
    by_name = {Path(r["path"]).name: r for r in rows}
    section = by_name.pop("section.png")
    assert section["class_name"] == "" and section["probability_positive"] == ""
    assert section["error"].startswith(f"{big}: 900 x 700 px is a large image")
    assert "not scored" in section["error"] and "idcscan slide" in section["error"]
    assert "\n" not in section["error"]
    for r in by_name.values():
        p = float(r["probability_positive"])
        assert r["class_name"] == ("IDC Positive" if p >= 0.5 else "IDC Negative")
        assert float(r["confidence"]) >= 0.5
        assert r["flagged"] == str(p >= 0.3)
    assert {r["class_name"] for r in by_name.values()} == {"IDC Positive", "IDC Negative"}
    assert by_name["patch0.png"]["warning"] == ""


def test_predict_on_a_section_alone_scores_nothing_and_exits_2(bundle, tmp_path):
    big = tmp_path / "mosaic.png"
    Image.fromarray(np.full((2100, 3182, 3), 210, np.uint8)).save(big)
    result, out, err = run("predict", bundle, big)
    assert result.exit_code == 2
    (line,) = error_lines(err)
    assert "3182 x 2100 px is a large image" in line and "idcscan slide" in line
    assert "Nothing was scored" in line
    assert "IDC Negative" not in out + err and "IDC Positive 1" not in out


def test_slide_outputs_carry_the_demo_flag(bundle, tmp_path) -> None:
    image = tmp_path / "tissue.png"
    rng = np.random.default_rng(1)
    arr = np.clip(np.full((150, 200, 3), (200, 110, 170)) + rng.integers(-30, 30, (150, 200, 3)),
                  0, 255).astype(np.uint8)
    Image.fromarray(arr).save(image)
    result, out, err = run("slide", bundle, image, "--out", tmp_path / "maps", "--mpp", "4")
    assert result.exit_code == 0, err
    summary = json.loads((tmp_path / "maps" / "tissue" / "summary.json").read_text())
    assert summary["demo"] is True
    rows = list(csv.DictReader((tmp_path / "maps" / "summary.csv").open()))
    assert rows[0]["demo"] == "True"
    assert "DEMO model" in err and (out + err).count(DISCLAIMER) == 1


def test_card_is_readable_markdown_without_absolute_paths(bundle) -> None:
    result, out, _ = run("card", bundle)
    assert result.exit_code == 0
    assert "1 = IDC Positive, 0 = IDC Negative" in out
    assert out.count("P(IDC) ≥ 30.00%") == 1  # the review threshold, stated once
    assert "| true IDC |" in out and "/somewhere" not in out and str(bundle) not in out
    assert "SYNTHETIC" in out


def test_train_header_and_quiet_lightning(prepared_data: Path, tmp_path: Path) -> None:
    from idcscan.cli.train import train_header
    from idcscan.training.config import TrainConfig
    from idcscan.training.train import _DropTips

    config = TrainConfig(data=str(prepared_data), out=str(tmp_path / "run"), max_minutes=3)
    header = train_header(config)
    assert header.startswith(f"Training {config.backbone} (ImageNet weights) on prepared")
    assert "train patches from" in header and "validation patches from" in header
    assert "Budget: 3 min" in header and str(tmp_path / "run" / "bundle") in header
    noise = ["GPU available: False, used: False", "TPU available: False, using: 0 TPU cores",
             "`Trainer.fit` stopped: `max_epochs=3` reached."]
    keep = "Restoring states from the checkpoint path at last.ckpt"
    drop = _DropTips()
    for message in noise:
        assert not drop.filter(logging.LogRecord("x", logging.INFO, "", 0, message, None, None))
    assert drop.filter(logging.LogRecord("x", logging.INFO, "", 0, keep, None, None))
