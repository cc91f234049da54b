"""The shipped model's build: every patient trained on, members averaged, an honest card."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from idcscan.data.kaggle import content_digest
from idcscan.runtime.bundle import load_bundle
from idcscan.runtime.labels import area_threshold
from idcscan.runtime.model_card import card_markdown, readable_card
from idcscan.runtime.predictor import Predictor
from idcscan.training.pipelines import ShippedRecipe, build_shipped

TINY = {"backbone": "test_efficientnet", "weights": "none", "input_size": 32}


def _oof(path: Path, labels: np.ndarray, probs: np.ndarray, patients: list[str]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["row", "patient", "fold", "label", "probability"])
        for i, (y, p, pid) in enumerate(zip(labels, probs, patients)):
            writer.writerow([i, pid, i % 5, int(y), f"{p:.6f}"])
    return path


@pytest.fixture(scope="module")
def shipped(synthetic_kaggle: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("shipped")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    patients = [f"p{i % 40}" for i in range(400)]
    # member 0 ranks perfectly, member 1 is noise: the estimate is of their average
    files = [_oof(root / "a.csv", labels, np.where(labels == 1, 0.9, 0.1), patients),
             _oof(root / "b.csv", labels, rng.random(400), patients)]
    recipe = ShippedRecipe(name="tiny-shipped", members=(TINY, {**TINY, "patient_balance": 0.5}),
                           finetune_epochs=0.3, tta_views=2)
    result = build_shipped(synthetic_kaggle, root / "out", root / "work", oof=files,
                           recipe=recipe, command="idcscan build-shipped KAGGLE --out OUT")
    return result, labels, files


def test_every_patient_is_trained_on_and_the_members_are_averaged(shipped, synthetic_kaggle):
    result, _, _ = shipped
    card = result.bundle.card
    assert card.name == "tiny-shipped"
    for member in result.members:
        config = json.loads((member.parent / "config.json").read_text())["config"]
        assert config["train_on_val"] and config["tta_views"] == 2
    assert [m["path"] for m in card.model_extra["ensemble"]["members"]] == ["member-0",
                                                                           "member-1"]
    assert card.data["n_patients"] == 12 and card.data["n_patches"] == 480
    # the average of class-balanced members stays class-balanced, so the slide-area rule holds
    assert card.calibration.method == "none"
    assert area_threshold(card)[0] > 0.5
    patches = np.random.default_rng(1).integers(0, 256, (6, 50, 50, 3), dtype=np.uint8)
    members = [Predictor(m).predict_proba(patches) for m in result.members]
    assert np.allclose(Predictor(result.bundle).predict_proba(patches),
                       np.mean(members, axis=0), atol=2e-3)  # float16 weights: tiny rounding


def test_the_card_says_what_data_how_it_was_built_and_what_to_expect(shipped, synthetic_kaggle):
    result, labels, _ = shipped
    card = load_bundle(result.bundle.path).card  # sealed and verified like every bundle
    extra = card.model_extra
    assert card.data["content_sha256"] == content_digest(synthetic_kaggle)
    assert "CC0" in card.data["licence"]
    assert "Janowczyk" in card.data["citation"] and "Cruz-Roa" in card.data["citation"]
    assert extra["build"]["command"] == "idcscan build-shipped KAGGLE --out OUT"
    assert extra["build"]["recipe"]["seed"] == 0 and extra["build"]["git_commit"]
    assert extra["weights_storage"].startswith("float16")
    expected = extra["expected_accuracy"]
    assert 0.5 < expected["auc"] < 1.0  # a perfect member averaged with noise
    low, high = expected["ci95"]["auc"]
    assert low <= expected["auc"] <= high
    assert "estimate" in expected["method"] and expected["n_patients"] == 40
    assert any("not validated on other scanners" in limit for limit in extra["limits"])
    text = card_markdown(readable_card(card))
    for words in ("CC0", "Janowczyk", "Expected accuracy", "Limits", "Research use only"):
        assert words in text


def test_one_oof_file_per_member(synthetic_kaggle, tmp_path):
    from idcscan.errors import IdcscanError

    with pytest.raises(IdcscanError, match="one file per member"):
        build_shipped(synthetic_kaggle, tmp_path / "o", tmp_path / "w", oof=[tmp_path / "a"],
                      recipe=ShippedRecipe(name="x", members=(TINY, TINY)))
