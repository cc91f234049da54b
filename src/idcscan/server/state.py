"""Shared server state, reached by route handlers through FastAPI dependencies."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from idcscan.runtime.model_card import without_paths
from idcscan.runtime.predictor import Predictor
from idcscan.runtime.patch_size import MAX_PATCH_SIDE, PREVIEW_SIDE

MB = 1024 * 1024
#: µm/px a client may give for a slide or picture whose file records no scale: the range the
#: pages' scale fields take (viewer.html, slide.html). A finer or coarser "scale" is a typo
#: or an attack (1e6 cut a 40 x 40 px picture into 1,600 one-pixel tiles).
MIN_MPP = 0.05
MAX_MPP = 20.0


@dataclass(frozen=True)
class ServerSettings:
    max_upload_mb: float = 20.0
    #: Decompression-bomb guard for single images, judged from the header before decoding.
    max_pixels: int = 50_000_000
    #: Large-image (slide) uploads are allowed to be bigger.
    max_slide_upload_mb: float = 200.0
    max_slide_pixels: int = 400_000_000
    #: /predict/batch: files per request, and the whole body (each file also <= max_upload_mb).
    max_batch_files: int = 64
    max_batch_upload_mb: float = 100.0
    #: Micro-batching: patches per ONNX call, and how long the first request waits for company.
    max_batch: int = 32
    batch_wait_ms: float = 2.0
    #: The ``image`` echoed back is shrunk to this long side (a preview, not an archive).
    max_preview_side: int = PREVIEW_SIDE
    #: /predict refuses images longer than this (a large image, not a patch): use /slide.
    max_patch_side: int = MAX_PATCH_SIDE
    #: Images decoded at once, server-wide: bounds memory when many large uploads arrive.
    decode_slots: int = 4
    #: Slow clients: seconds to deliver a request's headers, and its body (at most
    #: ``upload_idle_timeout_s`` without a byte; in all ``upload_timeout_s`` plus the time
    #: the route's largest allowed body takes at ``upload_min_bytes_per_s``).
    header_timeout_s: float = 10.0
    upload_timeout_s: float = 60.0
    upload_idle_timeout_s: float = 15.0
    upload_min_bytes_per_s: float = 256 * 1024
    #: Map jobs (the viewer's "map this slide"): queued or running server-wide; and tiles
    #: in one map (/slide too): the largest real slide, 75 x 25 mm at 0.25 µm/px, is ~47,000.
    max_map_jobs: int = 8
    max_map_tiles: int = 200_000

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def max_batch_upload_bytes(self) -> int:
        return int(self.max_batch_upload_mb * MB)

    @property
    def max_slide_upload_bytes(self) -> int:
        return int(self.max_slide_upload_mb * MB)


@dataclass
class ServerState:
    predictor: Predictor
    settings: ServerSettings = field(default_factory=ServerSettings)
    batcher: Any = None  # the micro-batcher (idcscan.runtime.batching), set by the app factory
    demo: bool = False
    decode_gate: threading.BoundedSemaphore = field(init=False)
    #: model.json as /health gives it out (no server paths), made once: the card never changes
    public_card: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.decode_gate = threading.BoundedSemaphore(max(1, self.settings.decode_slots))
        self.public_card = without_paths(self.predictor.card.model_dump(mode="json"))


async def get_state(request: Request) -> ServerState:
    # async: FastAPI runs a plain-def dependency in the thread pool, a hand-off per request
    # for what is an attribute read.
    return request.app.state.idcscan
