"""Pydantic models of the HTTP API: what /docs shows and what every answer is checked against.

``PredictResponse`` keeps the seed web app's keys and meaning (``predicted_class``,
``class_name``, ``confidence``, ``probability_positive``, ``probability_negative``, ``image``);
everything else is an addition. Probabilities in HTTP answers are PERCENTS with 2 decimals,
made for people; files written by ``idcscan predict`` hold fractions. The decision convention
(the call at 50%, the review flag at the bundle's threshold) is ``idcscan.runtime.labels``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from idcscan.runtime.labels import (
    CALL_RULE,
    CLASS_NAMES,
    CONFIDENCE_RULE,
    DECISION_THRESHOLD,
    FLAG_RULE,
    classify,
    flagged,
)
from idcscan.runtime.patch_size import MAX_PATCH_SIDE, PREVIEW_SIDE


class ErrorResponse(BaseModel):
    error: str = Field(description="What went wrong and what to do about it.")
    use: str | None = Field(
        None,
        description="The route to use instead, when the input belongs elsewhere (a large "
        "image sent to /predict gets 422 with use = \"/slide\").",
    )


class ModelInfo(BaseModel):
    name: str
    version: str
    backbone: str
    engine: str = Field(description="What scored the patch, e.g. \"openvino bf16\" or "
                        "\"onnxruntime fp32\": one patch's P(IDC) can differ by up to 0.10 "
                        "between bf16 and fp32.")


class PredictResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "predicted_class": 1,
                    "class_name": "IDC Positive",
                    "confidence": 81.2,
                    "probability_positive": 81.2,
                    "probability_negative": 18.8,
                    "image": "data:image/png;base64,iVBORw0KGgo...",
                    "threshold": 50.0,
                    "flagged": True,
                    "review_threshold": 29.25,
                    "warnings": [],
                    "model": {"name": "idcscan-tf_efficientnet_lite0", "version": "0.1.0",
                              "backbone": "tf_efficientnet_lite0", "engine": "openvino bf16"},
                    "disclaimer": "Research use only. ...",
                    "demo": False,
                }
            ]
        }
    )

    predicted_class: Literal[0, 1] = Field(
        description=f"The call: 1 = IDC Positive, 0 = IDC Negative. {CALL_RULE}"
    )
    class_name: Literal["IDC Positive", "IDC Negative"]
    confidence: float = Field(
        description=f"{CONFIDENCE_RULE} Percent, 2 decimals: probability_positive for IDC "
        "Positive, probability_negative for IDC Negative."
    )
    probability_positive: float = Field(description="Calibrated P(IDC), percent, 2 decimals.")
    probability_negative: float = Field(
        description="100 - probability_positive, percent; the two sum to exactly 100.00."
    )
    image: str = Field(
        description="A preview of the upload as decoded (RGB), PNG data URL, at most "
        f"{PREVIEW_SIDE} px on the long side (never the full upload)."
    )
    threshold: float = Field(
        description="The decision threshold of the call on P(IDC), percent: always "
        f"{DECISION_THRESHOLD * 100:.2f}."
    )
    flagged: bool = Field(description=FLAG_RULE)
    review_threshold: float = Field(
        description="The model's review threshold on P(IDC) (model.json threshold), percent."
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="What happened to the image on its way to one patch (padded, or resized "
        f"from a larger image); empty when none. Images over {MAX_PATCH_SIDE} px on the long "
        "side are refused with 422 and use = \"/slide\".",
    )
    model: ModelInfo
    disclaimer: str
    demo: bool = Field(description="True when the model is a demo trained on synthetic data.")
    explanation: str | None = Field(
        None,
        description="With ?explain=true: Grad-CAM overlay (PNG data URL) on an absolute scale, "
        "the same colours on every patch (full colour = +2 log-odds of IDC); absent "
        "when the map is empty (see explanation_note).",
    )
    explanation_note: str | None = Field(
        None,
        description="With ?explain=true and an empty map: 'Nothing here raised the IDC score'.",
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
    runtime: dict[str, Any] = Field(
        description="What scores the patches: engine (onnxruntime or openvino), precision "
        "(fp32 or bf16), device (cpu or cuda) and threads per server process."
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


def verdict(probability_positive: float, review_threshold: float) -> dict[str, Any]:
    """The seed's keys, the call's threshold and the review flag for one probability
    (fractions in, percents out)."""
    cls = classify(probability_positive)
    positive, negative = percent_pair(probability_positive)
    return {
        "predicted_class": cls,
        "class_name": CLASS_NAMES[cls],
        "confidence": positive if cls == 1 else negative,
        "probability_positive": positive,
        "probability_negative": negative,
        "threshold": round(DECISION_THRESHOLD * 100.0, 2),
        "flagged": flagged(probability_positive, review_threshold),
        "review_threshold": round(review_threshold * 100.0, 2),
    }
