"""The two classes and the one decision convention every output follows.

idcscan reports two things about a patch, everywhere (patches page, large-image page, CLI,
CSV/JSON files, evaluation reports, HTTP API):

* **The call.** "IDC Positive" when P(IDC) is at least 50%, i.e. IDC is more likely than not;
  otherwise "IDC Negative". ``confidence`` is the probability of the class called, so it is
  always 50% or more and means what a reader takes it to mean. What P(IDC) is calibrated to is
  the bundle's (model card, ``calibration``): class-balanced for the default recipe (IDC and
  non-IDC weighted equally, so 50% balances sensitivity and specificity), or the training
  set's IDC share after temperature scaling.
* **The review flag.** ``flagged`` when P(IDC) reaches the bundle's threshold (model.json
  ``threshold``: fixed at 50% for the default recipe, so it flags exactly the positive calls;
  chosen on validation patients to maximise balanced accuracy with ``--threshold-rule
  balanced``, below 50% when IDC is the rarer class). It marks patches worth a pathologist's
  second look, trading false alarms for missed IDC. A flagged patch may still be called IDC
  Negative.

The seed's fields keep their names and meaning: ``predicted_class`` 1 is "IDC Positive",
``confidence`` is the probability of the predicted class.
"""

from __future__ import annotations

POSITIVE = 1
NEGATIVE = 0
CLASS_NAMES: dict[int, str] = {POSITIVE: "IDC Positive", NEGATIVE: "IDC Negative"}

#: The call: P(IDC) from which a patch is called IDC Positive.
DECISION_THRESHOLD = 0.5

#: One-sentence definitions, shared by the API docs, the CLI and the pages.
CALL_RULE = (
    "IDC Positive when the model's probability of IDC, P(IDC), is at least 50% "
    "(IDC more likely than not), otherwise IDC Negative."
)
CONFIDENCE_RULE = (
    "Confidence is the probability of the class called, so it is always at least 50%."
)
FLAG_RULE = (
    "Flagged for review when P(IDC) reaches the model's review threshold (its model card says "
    "how it was set: fixed, or chosen on validation patients for balanced sensitivity and "
    "specificity); below 50% it catches more IDC at the cost of false alarms, so a flagged "
    "patch may still be called IDC Negative."
)


def classify(probability_positive: float, threshold: float = DECISION_THRESHOLD) -> int:
    """1 (IDC Positive) when P(IDC) reaches ``threshold`` (the call: 0.5)."""
    return POSITIVE if probability_positive >= threshold else NEGATIVE


def confidence(probability_positive: float, predicted_class: int) -> float:
    """Probability of the predicted class (a fraction)."""
    return probability_positive if predicted_class == POSITIVE else 1.0 - probability_positive


def flagged(probability_positive: float, review_threshold: float) -> bool:
    """True when P(IDC) reaches the bundle's review threshold (model.json ``threshold``)."""
    return bool(probability_positive >= review_threshold)


def percent(fraction: float) -> str:
    """A fraction as people read it on every page and in the CLI: ``29.25%``."""
    return f"{100.0 * float(fraction):.2f}%"
