"""Metrics, threshold choice, calibration error and bootstrap intervals on known answers."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from idcscan.errors import IdcscanError
from idcscan.evaluation import metrics as m


def clustered(rng: np.random.Generator, n_patients: int = 30, per_patient: int = 130):
    """Patches with patient-level random effects, like real slides: each patient has its own
    IDC prevalence and its own score shift (stain, scanner), so errors cluster by patient."""
    patients = np.repeat(np.arange(n_patients), per_patient)
    prevalence = 1 / (1 + np.exp(-rng.normal(0, 1.0, n_patients)))[patients]
    labels = (rng.random(patients.size) < prevalence).astype(int)
    stain = rng.normal(0, 1.0, n_patients)[patients]
    logit = 1.5 * (2 * labels - 1) + stain + rng.normal(0, 0.7, patients.size)
    return labels, 1 / (1 + np.exp(-logit)), np.array([f"p{k}" for k in patients])


def test_perfect_classifier_scores_one():
    labels = np.array([0, 0, 0, 1, 1])
    result = m.binary_metrics(labels, [0.1, 0.2, 0.3, 0.8, 0.9], threshold=0.5)
    for key in ("auc", "pr_auc", "accuracy", "balanced_accuracy", "f1", "sensitivity",
                "specificity", "precision"):
        assert result[key] == pytest.approx(1.0), key
    assert result["confusion_matrix"] == [[3, 0], [0, 2]]
    assert result["n_patches"] == 5 and result["threshold"] == 0.5


def test_hand_computed_confusion_matrix():
    labels = [0, 0, 0, 1, 1, 1, 1]
    probs = [0.1, 0.6, 0.4, 0.7, 0.3, 0.9, 0.5]  # 0.5 == threshold counts as IDC
    r = m.binary_metrics(labels, probs, threshold=0.5)
    assert r["confusion_matrix"] == [[2, 1], [1, 3]]
    assert r["accuracy"] == pytest.approx(5 / 7)
    assert r["sensitivity"] == pytest.approx(3 / 4)
    assert r["specificity"] == pytest.approx(2 / 3)
    assert r["precision"] == pytest.approx(3 / 4)
    assert r["f1"] == pytest.approx(0.75)
    assert r["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert r["auc"] == pytest.approx(roc_auc_score(labels, probs))
    assert r["pr_auc"] == pytest.approx(average_precision_score(labels, probs))


def test_one_class_gives_none_not_crash():
    r = m.binary_metrics([1, 1, 1], [0.2, 0.7, 0.9], threshold=0.5)
    assert r["auc"] is None and r["specificity"] is None and r["balanced_accuracy"] is None
    assert r["sensitivity"] == pytest.approx(2 / 3) and r["precision"] == pytest.approx(1.0)
    r = m.binary_metrics([0, 0], [0.1, 0.2], threshold=0.5)
    assert r["auc"] is None and r["pr_auc"] is None and r["precision"] is None
    assert r["f1"] is None and r["accuracy"] == 1.0 and r["specificity"] == 1.0
    ci = m.patient_bootstrap_ci([0, 0], [0.1, 0.2], ["a", "b"], 0.5, n_boot=50)
    assert ci["auc"] == [None, None] and ci["accuracy"] == [1.0, 1.0]


def test_bad_inputs_raise_user_error():
    with pytest.raises(IdcscanError):
        m.binary_metrics([0, 1], [0.2], 0.5)
    with pytest.raises(IdcscanError):
        m.binary_metrics([0, 2], [0.2, 0.3], 0.5)
    with pytest.raises(IdcscanError):
        m.binary_metrics([0, 1], [0.2, np.nan], 0.5)
    with pytest.raises(IdcscanError):
        m.choose_threshold([1, 1], [0.2, 0.3])


def test_ece_calibrated_small_overconfident_large(rng):
    p = rng.random(50_000)
    calibrated = (rng.random(p.size) < p).astype(int)
    assert m.expected_calibration_error(calibrated, p) < 0.01
    # Overconfident: the model says 0.95/0.05 but is right only 70% of the time.
    labels = rng.integers(0, 2, 20_000)
    right = rng.random(labels.size) < 0.7
    said = np.where(right == (labels == 1), 0.95, 0.05)
    assert m.expected_calibration_error(labels, said) == pytest.approx(0.25, abs=0.02)
    # Exact: everything at 0.8, half positive -> |0.5 - 0.8| = 0.3.
    assert m.expected_calibration_error([0, 1, 0, 1], [0.8] * 4) == pytest.approx(0.3)


def test_choose_threshold_separable_case():
    labels = [0, 0, 0, 1, 1]
    probs = [0.1, 0.2, 0.3, 0.6, 0.7]
    t = m.choose_threshold(labels, probs)
    assert t == pytest.approx(0.45)  # halfway between the last negative and first positive
    assert m.binary_metrics(labels, probs, t)["balanced_accuracy"] == 1.0


def test_choose_threshold_never_splits_ties_and_is_optimal(rng):
    labels = rng.integers(0, 2, 400)
    probs = np.round(np.clip(0.5 + 0.25 * (2 * labels - 1) + rng.normal(0, 0.25, 400), 0, 1), 2)
    t = m.choose_threshold(labels, probs)
    best = max(m.binary_metrics(labels, probs, c)["balanced_accuracy"] for c in np.unique(probs))
    assert m.binary_metrics(labels, probs, t)["balanced_accuracy"] == pytest.approx(best)
    assert not np.isclose(probs, t).any()  # the cut falls between distinct scores
    assert 0.0 <= t <= 1.0


def test_bootstrap_replicates_match_sklearn_with_weights(rng):
    labels, probs, patients = clustered(rng, n_patients=12, per_patient=40)
    probs = np.round(probs, 2)  # ties in scores too
    uniq, unit = np.unique(patients, return_inverse=True)
    stats = m._unit_stats(labels, probs, unit, len(uniq), 0.5, 15)
    weights = rng.multinomial(len(uniq), np.full(len(uniq), 1 / len(uniq)), size=4).astype(float)
    reps = m._replicate_metrics(weights, stats)
    for i, w in enumerate(weights):
        sw = w[unit]
        assert reps["auc"][i] == pytest.approx(roc_auc_score(labels, probs, sample_weight=sw))
        assert reps["pr_auc"][i] == pytest.approx(
            average_precision_score(labels, probs, sample_weight=sw)
        )
        keep = sw > 0
        expanded = m.binary_metrics(
            np.repeat(labels[keep], sw[keep].astype(int)),
            np.repeat(probs[keep], sw[keep].astype(int)),
            0.5,
        )
        for key in ("accuracy", "f1", "sensitivity", "specificity", "precision", "ece"):
            assert reps[key][i] == pytest.approx(expanded[key]), key


def test_ci_contains_point_estimate(rng):
    labels, probs, patients = clustered(rng)
    point = m.binary_metrics(labels, probs, 0.5)
    ci = m.patient_bootstrap_ci(labels, probs, patients, 0.5, n_boot=400)
    assert set(ci) == set(m.SCALAR_METRICS)
    for key, (low, high) in ci.items():
        assert low < high, key
        assert low <= point[key] <= high, key


def test_patient_interval_wider_than_patch_interval_on_clustered_data(rng):
    labels, probs, patients = clustered(rng)
    by_patient = m.patient_bootstrap_ci(labels, probs, patients, 0.5, n_boot=400)
    by_patch = m.patch_bootstrap_ci(labels, probs, 0.5, n_boot=400)
    for key in m.SCALAR_METRICS:
        width_patient = by_patient[key][1] - by_patient[key][0]
        width_patch = by_patch[key][1] - by_patch[key][0]
        assert width_patient > 2 * width_patch, key


def test_bootstrap_is_deterministic_for_a_seed(rng):
    labels, probs, patients = clustered(rng, n_patients=10, per_patient=30)
    a = m.patient_bootstrap_ci(labels, probs, patients, 0.5, n_boot=200, seed=3)
    b = m.patient_bootstrap_ci(labels, probs, patients, 0.5, n_boot=200, seed=3)
    c = m.patient_bootstrap_ci(labels, probs, patients, 0.5, n_boot=200, seed=4)
    assert a == b and a != c


def test_thousand_patient_resamples_are_fast(rng):
    labels, probs, patients = clustered(rng, n_patients=30, per_patient=134)
    start = time.process_time()  # CPU time: the machine's other load does not count
    m.patient_bootstrap_ci(labels, probs, patients, 0.5, n_boot=1000)
    assert time.process_time() - start < 10


def test_patient_table():
    patients = ["a", "a", "a", "b", "b"]
    rows = m.patient_table([0, 1, 1, 0, 0], [0.2, 0.9, 0.4, 0.1, 0.7], patients, 0.5)
    a, b = rows
    assert a["patient"] == "a" and a["n_patches"] == 3 and a["n_idc"] == 2
    assert a["idc_fraction_true"] == pytest.approx(2 / 3)
    assert a["idc_fraction_pred"] == pytest.approx(1 / 3)
    assert a["accuracy"] == pytest.approx(2 / 3) and a["auc"] == pytest.approx(1.0)
    assert b["auc"] is None and b["accuracy"] == pytest.approx(0.5)
    assert b["mean_probability"] == pytest.approx(0.4)


def test_summarize_has_ci_and_patients(rng):
    labels, probs, patients = clustered(rng, n_patients=8, per_patient=20)
    s = m.summarize(labels, probs, patients, 0.5, n_boot=100)
    assert s["n_patients"] == 8 and s["n_patches"] == 160
    assert set(s["ci95"]) == set(m.SCALAR_METRICS)
