"""Shipped models by name: wherever a BUNDLE is taken, a name works and a path works as before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from idcscan.errors import IdcscanError
from idcscan.runtime import shipped
from idcscan.runtime.bundle import load_bundle
from idcscan.runtime.predictor import Predictor


@pytest.fixture
def shelf(tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A shipped-model folder with two models, ``tiny-b`` the default."""
    root = tmp_path / "shipped"
    for name in ("tiny-a", "tiny-b"):
        shutil.copytree(tiny_bundle, root / name)
    (root / "index.json").write_text(json.dumps({"default": "tiny-b",
                                                 "models": ["tiny-a", "tiny-b"]}))
    monkeypatch.setattr(shipped, "SHIPPED_DIR", root)
    return root


def test_names_resolve_and_default_means_the_recommended_one(shelf: Path) -> None:
    assert shipped.shipped_names() == ["default", "tiny-b", "tiny-a"]
    assert shipped.resolve_bundle_path("default") == shelf / "tiny-b"
    assert shipped.resolve_bundle_path("tiny-a") == shelf / "tiny-a"
    assert load_bundle("default").path == shelf / "tiny-b"
    assert Predictor("tiny-a").bundle.path == shelf / "tiny-a"


def test_paths_work_as_before_and_dot_slash_reaches_a_folder_named_like_a_model(
        shelf: Path, tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_bundle(tiny_bundle).path == tiny_bundle
    shutil.copytree(tiny_bundle, tmp_path / "default")
    monkeypatch.chdir(tmp_path)
    assert shipped.resolve_bundle_path("default") == shelf / "tiny-b"
    assert shipped.resolve_bundle_path("./default") == Path("./default")
    shutil.copytree(tiny_bundle, tmp_path / "mine")
    assert load_bundle("mine").path == Path("mine")  # a bare folder name still works


def test_an_unknown_name_is_one_line_that_lists_the_names(shelf: Path) -> None:
    with pytest.raises(IdcscanError) as err:
        load_bundle("defualt")
    message = str(err.value)
    assert "\n" not in message and "No model bundle at defualt" in message
    assert "default, tiny-b, tiny-a" in message


def test_an_install_without_shipped_models_says_so(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path / "none")
    with pytest.raises(IdcscanError, match="none in this install"):
        shipped.resolve_bundle_path("default")
