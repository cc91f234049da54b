"""The two classes and the one rule that turns a probability into a call.

Every output (CLI rows, HTTP answers, reports) names classes through here, so "IDC Positive"
always means P(IDC) >= the bundle's threshold.
"""

from __future__ import annotations

POSITIVE = 1
NEGATIVE = 0
CLASS_NAMES: dict[int, str] = {POSITIVE: "IDC Positive", NEGATIVE: "IDC Negative"}


def classify(probability_positive: float, threshold: float) -> int:
    """1 (IDC Positive) when the calibrated P(IDC) reaches the bundle's threshold, else 0."""
    return POSITIVE if probability_positive >= threshold else NEGATIVE


def confidence(probability_positive: float, predicted_class: int) -> float:
    """Probability of the predicted class (a fraction)."""
    return probability_positive if predicted_class == POSITIVE else 1.0 - probability_positive
