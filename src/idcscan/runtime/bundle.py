"""The model bundle: ``model.onnx`` + ``model.json`` (the model card).

ONNX I/O contract (format_version 1):
  input  ``image``: uint8 [N, patch_size, patch_size, 3], RGB patches at the training scale
  output ``logit``: float32 [N], uncalibrated IDC logit
  output ``cam``:   float32 [N, h, w], non-negative Grad-CAM map of the IDC logit
P(IDC) = sigmoid(logit / calibration.temperature); a patch is called IDC when
P(IDC) >= threshold. Loading verifies the sha256 of model.onnx against the card, so a swapped
or corrupted model is refused instead of silently serving other numbers; and the card carries
``card_sha256``, the sha256 of its own canonical JSON (sorted keys, that one key left out), so
an edited threshold, temperature or preprocessing is refused too. A card without
``card_sha256`` (written before idcscan 0.1 sealed its cards) is still read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from idcscan import DISCLAIMER
from idcscan.errors import IdcscanError
from idcscan.runtime.shipped import resolve_bundle_path
from idcscan.preprocessing import Preprocessing

FORMAT_VERSION = 1
CARD_NAME = "model.json"
ONNX_NAME = "model.onnx"
#: The card's own checksum key: not part of what it covers.
CARD_SHA256 = "card_sha256"


class Calibration(BaseModel):
    method: str = "temperature"
    temperature: float = Field(1.0, gt=0)


class ModelCard(BaseModel):
    """What model.json must hold; unknown keys are kept (forward compatible)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    format_version: int = FORMAT_VERSION
    name: str
    version: str
    backbone: str
    input_size: int
    patch_size: int
    mpp: float = Field(description="training scale in µm per pixel")
    preprocessing: dict[str, Any]
    calibration: Calibration = Calibration()
    threshold: float = Field(0.5, ge=0, le=1)
    onnx_file: str = ONNX_NAME
    onnx_sha256: str
    metrics: dict[str, Any] = {}
    data: dict[str, Any] = {}
    training: dict[str, Any] = {}
    versions: dict[str, str] = {}
    created: str = ""
    demo: bool = False
    disclaimer: str = DISCLAIMER

    @property
    def pre(self) -> Preprocessing:
        return Preprocessing.from_dict(self.preprocessing)


@dataclass(frozen=True)
class Bundle:
    path: Path
    card: ModelCard

    @property
    def onnx_path(self) -> Path:
        return self.path / self.card.onnx_file


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def card_digest(payload: dict[str, Any]) -> str:
    """sha256 of a card's canonical JSON, its own ``card_sha256`` key left out."""
    body = {k: v for k, v in payload.items() if k != CARD_SHA256}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_card_digest(card_path: Path, payload: dict[str, Any]) -> None:
    claimed = payload.get(CARD_SHA256)
    if claimed is None:
        return  # a card written before cards were sealed
    actual = card_digest(payload)
    if actual != claimed:
        raise IdcscanError(
            f"{card_path} was changed after export (its {CARD_SHA256} {str(claimed)[:12]}… "
            f"!= {actual[:12]}… of its content): a threshold, calibration or preprocessing "
            "edited by hand would silently change every answer. Use the model.json exported "
            "with this model, or re-export it."
        )


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read and check a bundle directory (or its model.json), or a shipped model by name."""
    path = resolve_bundle_path(path)
    if path.is_file() and path.name == CARD_NAME:
        path = path.parent
    card_path = path / CARD_NAME
    if not card_path.is_file():
        nested = path / "bundle"
        if (nested / CARD_NAME).is_file():
            raise IdcscanError(
                f"{path} is a training run, not a model bundle: did you mean {nested}?"
            )
        raise IdcscanError(
            f"No model bundle at {path}: expected {CARD_NAME} and {ONNX_NAME} there "
            "(`idcscan train` writes one to RUN/bundle)."
        )
    try:
        payload = json.loads(card_path.read_text(encoding="utf-8"))
        card = ModelCard.model_validate(payload)
    except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as exc:
        raise IdcscanError(f"{card_path} is not a valid idcscan model card: {exc}") from exc
    if verify:
        _check_card_digest(card_path, payload)
    if card.format_version != FORMAT_VERSION:
        raise IdcscanError(
            f"{card_path} has bundle format {card.format_version}; this idcscan reads "
            f"format {FORMAT_VERSION}. Re-export the model or upgrade idcscan."
        )
    bundle = Bundle(path=path, card=card)
    if not bundle.onnx_path.is_file():
        raise IdcscanError(f"The bundle at {path} has no {card.onnx_file}.")
    if verify:
        actual = sha256_file(bundle.onnx_path)
        if actual != card.onnx_sha256:
            raise IdcscanError(
                f"{bundle.onnx_path} does not match its model card (sha256 {actual[:12]}… "
                f"!= {card.onnx_sha256[:12]}…): the file was changed or corrupted. "
                "Use the model.onnx exported with this model.json."
            )
    return bundle


def write_card(card: ModelCard, directory: Path) -> Path:
    """Write model.json, sealed with its ``card_sha256``, atomically (temporary name, then
    rename)."""
    from idcscan.files import atomic_write_text

    directory.mkdir(parents=True, exist_ok=True)
    payload = {k: v for k, v in card.model_dump(mode="json").items() if k != CARD_SHA256}
    payload[CARD_SHA256] = card_digest(payload)
    return atomic_write_text(directory / CARD_NAME, json.dumps(payload, indent=2) + "\n")
