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

For a slide, two more: slide mode reads each tile's P(IDC) with its neighbours
(``CONTEXT_SIGMA``, ``idcscan.maps.context``), and ``area_threshold`` says from which P(IDC) a
tile counts towards the IDC area.

The area call. A class-balanced bundle (the default recipe: BCE with pos_weight = n_neg/n_pos)
reports P(IDC) as if IDC and non-IDC were equally common. Called at 50%, it over-calls the
minority class and inflates the IDC share of a slide. The IDC area is the count of tiles whose
IDC is more likely than not *at the IDC share the model was trained on*: on the class-balanced
scale that is P(IDC) >= w / (1 + w), w the bundle's pos_weight, which is the same log-odds shift
the temperature recipe removes before calibrating (``IDCModule.fold_prior_correction``). A
bundle already calibrated to its training share is called at 50%. Under the same CV the mean
IDC-fraction error fell from 0.136 to 0.075; slides that are mostly IDC read low.

The seed's fields keep their names and meaning: ``predicted_class`` 1 is "IDC Positive",
``confidence`` is the probability of the predicted class.
"""

from __future__ import annotations

import math
from typing import Any

POSITIVE = 1
NEGATIVE = 0
CLASS_NAMES: dict[int, str] = {POSITIVE: "IDC Positive", NEGATIVE: "IDC Negative"}

#: The call: P(IDC) from which a patch is called IDC Positive.
DECISION_THRESHOLD = 0.5

#: Slide mode's spatial context: Gaussian sigma in patches (the model's field of view); 0 turns
#: it off.
CONTEXT_SIGMA = 1.0

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


def number(value: object, digits: int = 3) -> str:
    """A metric as the cards print it (``0.940``); ``n/a`` when it was not measured."""
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def percent(fraction: float) -> str:
    """A fraction as people read it on every page and in the CLI: ``29.25%``."""
    return f"{100.0 * float(fraction):.2f}%"


def area_threshold(card: Any) -> tuple[float, str]:
    """P(IDC) from which a tile counts towards the IDC area, and why that value.

    Decided by what the bundle's logits carry, not by its calibration label: training with
    ``pos_weight`` w adds log(w) to the logit, and ``training.prior_correction`` records what
    export took away again (-log w with temperature scaling, 0 when P(IDC) stays
    class-balanced). Bundles exported before the card said "none" were labelled
    "temperature" with a zero correction, so the label alone would mislead.
    """
    training = card.training if isinstance(card.training, dict) else {}
    weight = training.get("pos_weight")
    if not (isinstance(weight, int | float) and weight > 0):
        return 0.5, "IDC more likely than not (no class weighting recorded in the model card)"
    method = getattr(card.calibration, "method", "temperature")
    removed = training.get("prior_correction")
    if not isinstance(removed, int | float):  # older cards: infer it from the label
        removed = 0.0 if method == "none" else -math.log(weight)
    residual = math.log(weight) + removed  # the log-odds shift left in P(IDC)
    if abs(residual) < 1e-6:
        return 0.5, "IDC more likely than not (P(IDC) is calibrated to the training IDC share)"
    temperature = float(getattr(card.calibration, "temperature", 1.0) or 1.0)
    threshold = 1.0 / (1.0 + math.exp(-residual / temperature))
    return round(threshold, 6), (
        f"IDC more likely than not at the training IDC share: P(IDC) is class-balanced "
        f"(pos_weight {math.exp(residual):.3f} left in it), so the call is at w/(1+w)"
    )
