"""The patch routes: ``POST /predict`` (the seed's contract) and ``POST /predict/batch``.

Uploads are read by ``idcscan.server.uploads`` (in memory, byte-limited, nothing written to
disk), decoded by ``idcscan.images`` (type by content, pixel limit from the header),
and scored through the shared ``MicroBatcher``, so concurrent requests share ONNX Runtime
calls. Errors are raised as ``IdcscanError``s; the app's handlers word them as JSON.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from PIL import Image
from starlette.concurrency import run_in_threadpool

from idcscan import DISCLAIMER
from idcscan.errors import IdcscanError
from idcscan.runtime.batching import Scored
from idcscan.runtime.explain import explain as explain_cam
from idcscan.images import ImageTooLarge, decode_rgb, png_data_url
from idcscan.runtime.patch_size import MAX_PATCH_SIDE, check_patch_size, patch_warnings
from idcscan.preprocessing import to_patch
from idcscan.server.schemas import BatchResponse, ErrorResponse, PredictResponse, verdict
from idcscan.server.state import ServerState, get_state
from idcscan.server.uploads import (
    ENVELOPE_BYTES,
    BadUpload,
    NotAPatchUpload,
    UploadTooLarge,
    many_files,
    multipart_body,
    one_file,
    read_form,
)

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "No usable upload, or a broken image."},
    413: {"model": ErrorResponse, "description": "Too many bytes or pixels; with "
          '"use": "/slide" when the large-image view takes it.'},
    415: {"model": ErrorResponse, "description": "An image format idcscan does not decode."},
    422: {
        "model": ErrorResponse,
        "description": f"A large image (over {MAX_PATCH_SIDE} px on the long side), not a "
        'patch: send it to /slide ("use": "/slide").',
    },
}


#: Images up to this many pixels (judged from the header) are decoded and rendered on the
#: event loop itself: for a patch the two thread hops cost more CPU than the work they carry
#: (profile in docs/BENCHMARKS.md). Anything larger goes to worker threads as before.
INLINE_PIXELS = 128 * 128

Decoded = tuple[Image.Image, np.ndarray, list[str]]


def _decode(data: bytes, state: ServerState, source: str | None) -> Decoded:
    """Image -> (RGB preview for the answer, model patch, size warnings). A worker thread."""
    side = state.settings.max_preview_side
    patch_size = state.predictor.pre.patch_size
    with state.decode_gate:
        rgb = decode_rgb(data, max_pixels=state.settings.max_pixels, source=source)
        check_patch_size(rgb.size, patch_size, state.settings.max_patch_side)
        notes = patch_warnings(rgb.size, patch_size, state.predictor.card.mpp)
        patch = to_patch(rgb, patch_size)
        if max(rgb.size) > side:  # ``rgb`` is our own decoded copy: shrink it in place
            rgb.thumbnail((side, side), Image.Resampling.BILINEAR)
    return rgb, patch, notes


def _decode_small(data: bytes, state: ServerState, source: str | None) -> Decoded | None:
    """``_decode`` on the calling thread for a small image; ``None`` when it is not small
    (or not decodable: the threaded path then gives the answer with the real limits)."""
    limit = min(INLINE_PIXELS, state.settings.max_pixels)
    try:
        rgb = decode_rgb(data, max_pixels=limit, source=source)
    except IdcscanError:
        return None
    patch_size = state.predictor.pre.patch_size
    if max(rgb.size) > state.settings.max_patch_side:
        return None
    notes = patch_warnings(rgb.size, patch_size, state.predictor.card.mpp)
    return rgb, to_patch(rgb, patch_size), notes


def _render(
    state: ServerState, preview: Image.Image, scored: Scored, notes: list[str]
) -> dict[str, Any]:
    """The JSON answer for one scored image. Runs in a worker thread (PNG encoding)."""
    predictor = state.predictor
    card = predictor.card
    answer = verdict(scored.probability, predictor.threshold)
    answer.update(
        image=png_data_url(preview),
        warnings=notes,
        model={"name": card.name, "version": card.version, "backbone": card.backbone,
               "engine": predictor.engine.info.label},
        disclaimer=DISCLAIMER,
        demo=state.demo,
    )
    if scored.cam is not None:
        shown = explain_cam(
            preview, scored.cam, predictor.temperature, patch_size=predictor.pre.patch_size
        )
        if shown.overlay is not None:
            answer["explanation"] = shown.overlay
        else:
            answer["explanation_note"] = shown.note
    return answer


async def score_image(
    state: ServerState, data: bytes, explain: bool, source: str | None = None
) -> dict[str, Any]:
    """Decode, score (micro-batched) and render one upload."""
    with state.batcher.incoming():  # a batch being collected waits for this one
        decoded = _decode_small(data, state, source)
        if decoded is None:
            decoded = await run_in_threadpool(_decode, data, state, source)
    preview, patch, notes = decoded
    scored = await state.batcher.predict(patch, cam=explain)
    if scored.cam is None and preview.width * preview.height <= INLINE_PIXELS:
        return _render(state, preview, scored, notes)
    return await run_in_threadpool(_render, state, preview, scored, notes)


def to_slide(exc: UploadTooLarge | ImageTooLarge, state: ServerState) -> NotAPatchUpload:
    """The 413 of an upload too large for /predict, saying where it belongs: /slide (the
    large-image view) when its limits take it, else ``idcscan slide``."""
    s = state.settings
    size = getattr(exc, "size", None)
    # an image whose size Pillow refused to read is over its decompression-bomb bound, which
    # /slide's decoder keeps too
    beyond = size[0] * size[1] > s.max_slide_pixels if size else isinstance(exc, ImageTooLarge)
    if beyond:
        return NotAPatchUpload(
            f"{exc} That is over the large-image view's limit ({s.max_slide_pixels:,} pixels) "
            "too: map it with `idcscan slide BUNDLE FILE --out DIR` on the command line.", None)
    return NotAPatchUpload(
        f"{exc} An image this large is not a patch: send it to POST /slide (the large-image "
        f"view, /static/slide.html), which takes up to {s.max_slide_upload_mb:g} MB and "
        f"{s.max_slide_pixels:,} pixels and tiles it at the training scale.", "/slide")


router = APIRouter()


@router.post(
    "/predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    openapi_extra=multipart_body("file", many=False),
    summary="Classify one image patch",
)
async def predict(
    request: Request,
    explain: bool = Query(False, description="Add a Grad-CAM heat-map overlay."),
    state: ServerState = Depends(get_state),
) -> dict[str, Any]:
    """Upload one image in multipart field ``file``; get the IDC call in percent."""
    limits = state.settings
    try:
        parts = await read_form(
            request,
            max_bytes=limits.max_upload_bytes + ENVELOPE_BYTES,
            max_file_bytes=limits.max_upload_bytes,
            max_parts=8,
        )
        upload = one_file(parts, "file")
        return await score_image(state, upload.data, explain)
    except (UploadTooLarge, ImageTooLarge) as exc:
        raise to_slide(exc, state) from exc


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    openapi_extra=multipart_body("files", many=True),
    summary="Classify several images",
)
async def predict_batch(
    request: Request,
    explain: bool = Query(False, description="Add a Grad-CAM heat-map overlay to each."),
    state: ServerState = Depends(get_state),
) -> dict[str, Any]:
    """Upload images in repeated multipart field ``files``; one result per file, in order.

    A file that cannot be used gets ``{"filename", "error"}`` and the others are still scored.
    """
    limits = state.settings
    parts = await read_form(
        request,
        max_bytes=limits.max_batch_upload_bytes + ENVELOPE_BYTES,
        max_file_bytes=limits.max_upload_bytes,
        max_parts=limits.max_batch_files + 8,
    )
    uploads = many_files(parts, "files")
    if len(uploads) > limits.max_batch_files:
        raise BadUpload(
            f"Send at most {limits.max_batch_files} files per batch (got {len(uploads)})."
        )

    async def one(data: bytes, name: str) -> dict[str, Any]:
        try:
            if not data:
                raise BadUpload("The file is empty.")
            answer = await score_image(state, data, explain)
        except ImageTooLarge as exc:
            return {"filename": name, "error": str(to_slide(exc, state))}
        except IdcscanError as exc:
            return {"filename": name, "error": str(exc)}
        answer["filename"] = name
        return answer

    names = [u.filename or f"file {i + 1}" for i, u in enumerate(uploads)]
    results = await asyncio.gather(*(one(u.data, name) for u, name in zip(uploads, names)))
    return {"results": list(results)}
