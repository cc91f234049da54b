"""Shared server state, reached by route handlers through FastAPI dependencies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from idcscan.inference.predictor import Predictor


@dataclass(frozen=True)
class ServerSettings:
    max_upload_mb: float = 20.0
    #: Decompression-bomb guard for single images, judged from the header before decoding.
    max_pixels: int = 50_000_000
    #: Large-image (slide) uploads are allowed to be bigger.
    max_slide_upload_mb: float = 200.0
    max_slide_pixels: int = 400_000_000


@dataclass
class ServerState:
    predictor: Predictor
    settings: ServerSettings = field(default_factory=ServerSettings)
    batcher: Any = None  # the micro-batcher (idcscan.inference.batching), set by the app factory


def get_state(request: Request) -> ServerState:
    return request.app.state.idcscan
