"""The model that ships with idcscan: found by name, verified, honest about its data, and
right on the real example tissue that ships beside it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from idcscan import DISCLAIMER
from idcscan.cli import app
from idcscan.errors import IdcscanError
from idcscan.runtime.bundle import load_bundle
from idcscan.runtime.shipped import SHIPPED_DIR, examples_dir, resolve_bundle_path, shipped_models

EXAMPLES = examples_dir()


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def test_default_is_a_real_model_inside_the_package_and_small_enough_for_a_wheel() -> None:
    (default,) = [m for m in shipped_models() if m.is_default]
    assert default.path.parent == SHIPPED_DIR and resolve_bundle_path("default") == default.path
    card = load_bundle("default").card  # sha256 of model.onnx and of the card checked
    assert not card.demo
    size = sum(f.stat().st_size for f in default.path.iterdir())
    assert size < 20 * 1024 * 1024


def test_a_changed_shipped_file_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "default"
    shutil.copytree(resolve_bundle_path("default"), copy)
    onnx = copy / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(IdcscanError, match="sha256|does not match"):
        load_bundle(copy)


def test_the_card_states_its_data_licence_and_expected_accuracy() -> None:
    result = run("card", "default")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for words in ("Breast Histopathology Images", "CC0", "Janowczyk", "Cruz-Roa",
                  "209", "Expected accuracy on new patients", "cross-validation", "Limits",
                  "not validated on other scanners", DISCLAIMER):
        assert words in text, words


def test_models_lists_the_default_with_its_data_and_figures() -> None:
    result = run("models")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    card = load_bundle("default").card
    assert card.name in text and "(default)" in text and "209 patients" in text
    assert f"AUC {card.model_extra['expected_accuracy']['auc']:.3f}" in text


def test_models_counts_the_members_of_an_ensemble() -> None:
    from idcscan.runtime.bundle import ModelCard
    from idcscan.runtime.shipped_card import shipped_summary

    card = load_bundle("default").card
    assert "models averaged" not in shipped_summary(card)["network"]
    ensemble = ModelCard.model_validate(
        {**card.model_dump(), "ensemble": {"members": [{"path": "member-0"},
                                                       {"path": "member-1"}]}})
    assert "2 models averaged" in shipped_summary(ensemble)["network"]


@pytest.mark.skipif(EXAMPLES is None, reason="examples not installed")
def test_the_example_patches_are_called_as_labelled_by_and_large(tmp_path: Path) -> None:
    """The examples are drawn by a fixed rule, not picked for a right answer, so one may be
    called against its label (the model's specificity is about 0.88): what a user relies on
    is that most are right and every IDC example is found."""
    info = json.loads((EXAMPLES / "examples.json").read_text())
    out = tmp_path / "calls.json"
    result = run("predict", "default", *(EXAMPLES / p["file"] for p in info["patches"]),
                 "--out", out)
    assert result.exit_code == 0, result.output
    rows = {Path(r["path"]).name: r for r in json.loads(out.read_text())["predictions"]}
    agree = 0
    for patch in info["patches"]:
        called = rows[Path(patch["file"]).name]["class_name"]
        agree += called == ("IDC Positive" if patch["label"] == "IDC" else "IDC Negative")
        if patch["label"] == "IDC":
            assert called == "IDC Positive", patch
    assert agree >= len(info["patches"]) - 1


@pytest.mark.skipif(EXAMPLES is None, reason="examples not installed")
def test_the_example_section_maps_close_to_its_patch_labels(tmp_path: Path) -> None:
    info = json.loads((EXAMPLES / "examples.json").read_text())
    slide = EXAMPLES / info["slide"]["file"]
    result = run("slide", "default", slide, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / slide.stem / "summary.json").read_text())
    truth = info["slide"]["idc_patches"] / info["slide"]["patches"]
    assert summary["mpp_source"] == "metadata" and summary["mpp"] == 4.0
    assert abs(summary["idc_fraction"] - truth) < 0.1
