"""report.md rendering: what a reader must always see."""

from __future__ import annotations

from idcscan import DISCLAIMER
from idcscan.evaluation.metrics import SCALAR_METRICS
from idcscan.evaluation.report import render_report


def summary(**bundle_extra):
    bundle = {
        "path": "/b", "name": "idcscan-x", "version": "0.1.0", "backbone": "resnet18",
        "input_size": 96, "patch_size": 50, "mpp": 4.0, "temperature": 1.3, "threshold": 0.42,
        "onnx_sha256": "ab" * 32, "demo": False, "card_metrics": {"val": {"auc": 0.91}},
        "card_training": {}, "card_extra": {},
    }
    bundle.update(bundle_extra)
    s = {k: 0.5 for k in SCALAR_METRICS}
    s.update(auc=None, threshold=0.42, n_patches=10, n_patients=2, split="test", tta=False,
             confusion_matrix=[[4, 1], [2, 3]], bundle=bundle,
             ci95={k: [0.4, 0.6] for k in SCALAR_METRICS} | {"auc": [None, None]},
             data={"path": "/d", "n_patches": 10, "n_patients": 2, "n_idc": 5,
                   "idc_prevalence": 0.5})
    return s


def test_report_shows_disclaimer_metrics_and_threshold_source():
    text = render_report(summary(card_training={"threshold_method": "Youden's J on val"}))
    assert text.index(DISCLAIMER) < text.index("## Model")
    assert "| ROC AUC | n/a | n/a |" in text  # undefined metric shown, not hidden or crashed
    assert "| Accuracy | 0.5000 | 0.4000 - 0.6000 |" in text
    assert "Youden's J on val" in text and "P(IDC) >= 42.00%" in text
    assert "IDC Positive when P(IDC) >= 42.00%" in text  # the call, at this summary's 0.42
    assert "demo" not in text.splitlines()[0]
    assert "`val.auc` | 0.9100" in text
    assert "| **true IDC** | 2 (FN) | 3 (TP) |" in text
    assert "demo model" not in text


def test_report_flags_demo_models():
    text = render_report(summary(demo=True))
    assert "demo model" in text
    assert text.splitlines()[0] == ("# idcscan evaluation report: DEMO model trained on "
                                    "synthetic data")


def test_calibration_and_tta_are_said_as_the_card_says_them():
    """A class-balanced bundle (calibration "none") is not reported as temperature-scaled, and
    TTA is what ran (the card's in-graph views), not what the flag asked for."""
    text = render_report({**summary(calibration="none", temperature=1.0),
                          "tta": True, "tta_views": 4,
                          "tta_in_use": "4 flipped/rotated views averaged inside the model "
                                        "(always on)"})
    row = next(line for line in text.splitlines() if line.startswith("| Calibration |"))
    assert row.startswith("| Calibration | none: P(IDC) is class-balanced")
    assert "temperature scaling" not in text and "temperature-calibrated" not in text
    assert "class-balanced P(IDC)" in text
    assert "- Test-time augmentation: 4 flipped/rotated views averaged inside the model" in text
    scaled = render_report(summary(calibration="temperature"))
    assert "| Calibration | temperature scaling (T = 1.300)" in scaled
    assert "temperature-calibrated P(IDC)" in scaled
    assert "- Test-time augmentation: off" in scaled
