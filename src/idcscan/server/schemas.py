"""Pydantic models of the HTTP API: what /docs shows and what every answer is checked against.

``PredictResponse`` keeps the seed web app's keys and meaning (``predicted_class``,
``class_name``, ``confidence``, ``probability_positive``, ``probability_negative``, ``image``);
everything else is an addition. Probabilities in HTTP answers are PERCENTS with 2 decimals,
made for people; files written by ``idcscan predict`` hold fractions.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from idcscan.inference.labels import CLASS_NAMES, classify


class ErrorResponse(BaseModel):
    error: str = Field(description="What went wrong and what to do about it.")


class ModelInfo(BaseModel):
    name: str
    version: str
    backbone: str


class PredictResponse(BaseModel):
    predicted_class: Literal[0, 1] = Field(
        description="1 = IDC Positive (P(IDC) >= threshold), 0 = IDC Negative."
    )
    class_name: Literal["IDC Positive", "IDC Negative"]
    confidence: float = Field(
        description="Probability of the predicted class, percent (2 decimals). Equals the "
        "larger of the two probabilities whenever the threshold is 50%."
    )
    probability_positive: float = Field(description="Calibrated P(IDC), percent, 2 decimals.")
    probability_negative: float = Field(
        description="100 - probability_positive, percent; the two sum to exactly 100.00."
    )
    image: str = Field(
        description="The upload as decoded, converted to RGB, as a PNG data URL (shrunk to "
        "the server's preview size if it is very large)."
    )
    threshold: float = Field(
        description="The bundle's decision threshold on P(IDC), in PERCENT like the "
        "probabilities (e.g. 50.0)."
    )
    model: ModelInfo
    disclaimer: str
    demo: bool = Field(description="True when the model is a demo trained on synthetic data.")
    explanation: str | None = Field(
        None,
        description="With ?explain=true: Grad-CAM heat map over the image, PNG data URL.",
    )


class BatchItem(PredictResponse):
    filename: str


class BatchError(BaseModel):
    # Forbidding extras keeps the union unambiguous: a full answer can never pass as an error.
    model_config = ConfigDict(extra="forbid")

    filename: str
    error: str


class BatchResponse(BaseModel):
    results: list[BatchItem | BatchError] = Field(
        description="One entry per uploaded file, in upload order."
    )


class HealthResponse(BaseModel):
    status: Literal["ok"]
    model_loaded: bool
    model: dict[str, Any] = Field(
        description="The model card: name, version, backbone, input/patch size, threshold "
        "(fraction), metrics, data provenance, calibration, demo flag, ..."
    )
    versions: dict[str, str]
    disclaimer: str
    demo: bool
    batching: dict[str, Any] = Field(description="Micro-batching counters since startup.")
    limits: dict[str, Any]


def percent_pair(probability_positive: float) -> tuple[float, float]:
    """(positive, negative) in percent with 2 decimals that sum to exactly 100.00.

    Rounded in integer hundredths of a percent, the negative derived from the positive, so
    the two printed numbers always add up.
    """
    hundredths = int(round(float(probability_positive) * 10_000))
    hundredths = min(max(hundredths, 0), 10_000)
    return hundredths / 100, (10_000 - hundredths) / 100


def verdict(probability_positive: float, threshold: float) -> dict[str, Any]:
    """The seed's keys for one probability (fraction in, percents out)."""
    cls = classify(probability_positive, threshold)
    positive, negative = percent_pair(probability_positive)
    return {
        "predicted_class": cls,
        "class_name": CLASS_NAMES[cls],
        "confidence": positive if cls == 1 else negative,
        "probability_positive": positive,
        "probability_negative": negative,
    }
