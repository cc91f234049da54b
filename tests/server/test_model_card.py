"""The model card a person reads (/model-card, /report), built from model.json and the
evaluation report of the same bundle; model.json itself stays complete in /health."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from idcscan.runtime.bundle import ModelCard
from idcscan.runtime.model_card import readable_card, tta_text
from idcscan.server.app import create_app
from idcscan.tta import tta_card


@pytest.fixture(scope="module")
def evaluated(two_class_demo: Path, prepared_data: Path, tmp_path_factory) -> Path:
    """ROOT/bundle with ROOT/report, the `idcscan evaluate` output of that very bundle."""
    from idcscan.evaluation.evaluate import evaluate

    root = tmp_path_factory.mktemp("evaluated")
    shutil.copytree(two_class_demo / "bundle", root / "bundle")
    evaluate(root / "bundle", prepared_data, split="test", out=root / "report", n_boot=50,
             progress=False)
    return root


def test_card_reads_like_a_card(evaluated: Path) -> None:
    with TestClient(create_app(evaluated / "bundle")) as client:
        card = client.get("/model-card").json()
        health = client.get("/health").json()
        markdown = client.get("/model-card?format=md").text
    text = json.dumps(card)
    assert card["demo"] is True and "synthetic" in card["summary"]
    assert "1 = IDC Positive, 0 = IDC Negative" in text
    assert "P(IDC) ≥ 50.00%" in card["decision"]["call"]
    assert text.count("30.00%") == 1  # the review threshold, once, with its meaning
    assert "/somewhere" not in text and str(evaluated) not in text  # no absolute paths
    model_rows = dict(card["sections"][0]["rows"])
    assert model_rows["Test-time augmentation"] == tta_text(health["model"]["tta"])
    titles = [s["title"] for s in card["sections"]]
    assert titles[:2] == ["Model", "Training data"]
    test = card["sections"][-1]
    assert test["title"].startswith("Test set") and test["link"]["href"] == "/report"
    auc = dict(test["rows"])["ROC AUC"]
    assert "(" in auc and "–" in auc  # a value with its 95% CI
    assert test["confusion"]["rows"][1][0] == "true IDC"
    # Machines still get every field of model.json, but no path on the server's disks.
    assert set(health["model"]) >= set(json.loads((evaluated / "bundle" / "model.json")
                                                  .read_text()))
    assert health["model"]["data"]["source"] == "kaggle"
    assert markdown.startswith("# Model card: ") and "| true IDC |" in markdown


def test_report_and_figures_are_served(evaluated: Path) -> None:
    with TestClient(create_app(evaluated / "bundle")) as client:
        report = client.get("/report")
        assert report.status_code == 200
        assert report.text.startswith("# idcscan evaluation report: DEMO model trained on "
                                      "synthetic data")
        assert "](/report/roc.png)" in report.text
        figure = client.get("/report/roc.png")
        assert figure.status_code == 200 and figure.content[:4] == b"\x89PNG"
        assert client.get("/report/..%2Fbundle%2Fmodel.json").status_code == 404


def test_a_report_of_another_model_is_not_linked(evaluated: Path, tmp_path: Path) -> None:
    shutil.copytree(evaluated, tmp_path / "copy")
    metrics = tmp_path / "copy" / "report" / "metrics.json"
    summary = json.loads(metrics.read_text())
    summary["bundle"]["onnx_sha256"] = "0" * 64  # evaluated with some other model.onnx
    metrics.write_text(json.dumps(summary))
    with TestClient(create_app(tmp_path / "copy" / "bundle")) as client:
        card = client.get("/model-card").json()
        assert card["has_report"] is False
        assert not any(s["title"].startswith("Test set") for s in card["sections"])
        missing = client.get("/report")
        assert missing.status_code == 404 and "idcscan evaluate" in missing.json()["error"]


def test_the_card_says_how_many_views_each_answer_averages() -> None:
    assert tta_text(None) == "none (one view per patch)"
    four = tta_text(tta_card(4))
    assert four.startswith("mean logit over identity, horizontal and vertical flips")
    assert "averages 4 flipped/rotated views" in four and "4 model evaluations" in four
    assert "8 model evaluations" in tta_text(tta_card(8))


def _card(threshold: float, select: str, calibration: str, threshold_rule: str) -> dict:
    """The readable card of a model.json that records how its recipe used validation."""
    rule = ("max balanced accuracy on the validation patients" if threshold_rule == "balanced"
            else f"fixed at {threshold_rule}")
    card = ModelCard(
        name="m", version="1", backbone="tf_efficientnet_lite0", input_size=64, patch_size=50,
        mpp=4.0, preprocessing={}, onnx_sha256="0" * 64, threshold=threshold,
        created="2026-12-05T23:08:10+00:00",
        data={"trained_on": "train split; validation split used for checkpoint choice, "
                            "temperature and threshold; test split untouched"},
        training={"threshold_rule": rule, "config": {
            "select": select, "calibration": calibration, "threshold_rule": threshold_rule}},
    )
    return readable_card(card)


def test_a_fixed_threshold_does_not_read_as_one_fitted_to_patients() -> None:
    card = _card(0.5, "last", "none", "0.5")  # the default recipe
    review = card["decision"]["review"]
    assert "chosen on validation" not in review
    assert "fixed threshold, the same as the call" in review and "exactly the IDC Positive" in review
    use = dict(card["sections"][1]["rows"])["Use of splits"]
    assert "only measured" in use and "checkpoint choice" not in use
    assert dict(card["sections"][0]["rows"])["Exported"] == "2026-12-05 23:08 UTC"


def test_a_fitted_threshold_says_how_it_was_chosen() -> None:
    card = _card(0.31, "best", "temperature", "balanced")
    assert card["decision"]["review"] == (
        "Flagged for review when P(IDC) ≥ 31.00%: the review threshold (max balanced accuracy "
        "on the validation patients). It catches more IDC at the cost of false alarms.")
    use = dict(card["sections"][1]["rows"])["Use of splits"]
    assert use == ("train split; validation split used for checkpoint choice, temperature and "
                   "review threshold; test split untouched")
    only = dict(_card(0.5, "last", "temperature", "0.5")["sections"][1]["rows"])["Use of splits"]
    assert "used for temperature;" in only
    # A fitted threshold at or above the call catches no more IDC than the call does.
    high = _card(0.59, "ema", "none", "balanced")["decision"]["review"]
    assert high.endswith("(max balanced accuracy on the validation patients).")


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_a_browser_gets_pages_and_scripts_keep_their_data(evaluated: Path) -> None:
    """Content negotiation: text/html first (a browser) gets a page; */* (curl, fetch) and
    application/json keep the JSON card and the Markdown report; ?format= chooses outright."""
    from idcscan import DISCLAIMER

    with TestClient(create_app(evaluated / "bundle")) as client:
        page = client.get("/model-card", headers={"Accept": BROWSER_ACCEPT})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        html = page.text
        assert "<h1" in html and "Model card: " in html and html.count(DISCLAIMER) == 1
        assert "1 = IDC Positive, 0 = IDC Negative" in html
        assert 'data-testid="confusion-matrix"' in html and 'href="/report"' in html
        assert "/somewhere" not in html and '{"title"' not in html
        assert client.get("/model-card").json()["title"]  # */* from a script: JSON
        assert client.get("/model-card", headers={"Accept": "application/json"}).json()
        forced = client.get("/model-card?format=json", headers={"Accept": BROWSER_ACCEPT})
        assert forced.json()["title"]
        md = client.get("/model-card?format=md", headers={"Accept": BROWSER_ACCEPT})
        assert md.text.startswith("# Model card: ")

        report = client.get("/report", headers={"Accept": BROWSER_ACCEPT})
        assert report.headers["content-type"].startswith("text/html")
        body = report.text
        assert '<img src="/report/roc.png" alt="ROC curve"' in body
        assert "<table>" in body and "![ROC curve]" not in body
        assert body.count(DISCLAIMER) >= 1
        assert client.get("/report").text.startswith("# idcscan evaluation report")
        md = client.get("/report?format=md", headers={"Accept": BROWSER_ACCEPT})
        assert md.text.startswith("# idcscan evaluation report")


def test_the_report_page_never_passes_markup_from_the_file(evaluated: Path,
                                                           tmp_path: Path) -> None:
    shutil.copytree(evaluated, tmp_path / "copy")
    report = tmp_path / "copy" / "report" / "report.md"
    report.write_text(report.read_text() + "\n<script>alert(1)</script>\n\n"
                      "[click](javascript:alert(2)) <img src=x onerror=alert(3)>\n")
    with TestClient(create_app(tmp_path / "copy" / "bundle")) as client:
        body = client.get("/report", headers={"Accept": BROWSER_ACCEPT}).text
    assert "<script>alert" not in body and "&lt;script&gt;alert(1)" in body
    assert 'href="javascript:' not in body and "<img src=x" not in body
