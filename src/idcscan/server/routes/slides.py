"""``POST /slide``: an IDC map of a large image uploaded from the browser.

The upload is read by ``idcscan.server.uploads.read_form`` under the slide limits of
``ServerSettings`` (``max_slide_upload_mb``), in memory, never spooled to disk. Plain images
(PNG, JPEG, TIFF, ...) are decoded whole under ``max_slide_pixels``; tiled/pyramidal TIFFs
are read region by region from the bytes. The work is ``idcscan.maps.mapper.map_slide``,
the same as ``idcscan slide``, run in a worker thread, one slide at a time (a second
request waits), so a large upload cannot starve ``/predict``.

Errors follow /predict: JSON ``{"error": ...}`` with 400 (bad upload or image, bad option,
a scale that is not a finite number from ``MIN_MPP`` to ``MAX_MPP``), 413 (too many bytes or
pixels), 415 (a format idcscan does not decode), 422 (more tiles than ``max_map_tiles``).
"""

from __future__ import annotations

import asyncio
import warnings
from pathlib import PurePath
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from PIL import Image
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from idcscan import DISCLAIMER
from idcscan.runtime.labels import CONTEXT_SIGMA
from idcscan.images import png_data_url
from idcscan.errors import IdcscanError
from idcscan.maps.mapper import NoScale, ScaleWarning, SlideOptions, map_slide
from idcscan.maps.outputs import geojson, heatmap_layer, idc_polygons
from idcscan.slides.formats import open_slide_bytes
from idcscan.server.state import MAX_MPP, MB, MIN_MPP, ServerState, get_state
from idcscan.server.uploads import ENVELOPE_BYTES, multipart_body, one_file, read_form

router = APIRouter()


class SlideResponse(BaseModel):
    """The summary of ``idcscan slide`` plus images for the page (fractions, not percents)."""

    slide: str
    width: int
    height: int
    mpp: float = Field(description="µm per pixel of the image as used.")
    mpp_source: str = Field(
        description='"metadata" (recorded in the file) or "option" (?mpp=): an image that '
        "records no scale is refused without ?mpp=, never mapped at a guessed one."
    )
    level: int
    tile_size: int = Field(description="Tile side in image pixels (50 px at the training scale).")
    stride: int
    n_tiles: int = Field(description="Tissue tiles classified (background is never scored).")
    n_idc_tiles: int
    tissue_area_mm2: float
    idc_area_mm2: float
    idc_fraction: float = Field(description="IDC tiles / tissue tiles, from 0 to 1.")
    n_regions: int
    threshold: float = Field(
        description="P(IDC) from which a tile counts towards the IDC area, 0 to 1: IDC more "
        "likely than not at the model's training IDC share (see threshold_rule)."
    )
    threshold_rule: str = Field(description="Why the threshold has its value, in words.")
    context: float = Field(
        description="Spatial context sigma in patches the map was made with (0: tiles alone)."
    )
    tta: bool = Field(description="Whether each tile's answer averaged several views.")
    tta_views: int = Field(
        description="Views averaged per tile: the model's own in-graph views, or 8 with ?tta=true "
        "on a model without them, else 1."
    )
    timings: dict[str, float]
    model: dict[str, str]
    warnings: list[str] = Field(
        description="What to know before trusting the numbers: most tissue left out by "
        "artefact QC (and why), a scale coarser than training."
    )
    image: str = Field(description="The image, downsized (long side <= 2048 px), PNG data URL.")
    heatmap: str = Field(
        description="P(IDC) colour layer of the same size as `image`, transparent where no "
        "tissue was scored; PNG (RGBA) data URL to lay over `image`."
    )
    regions: dict[str, Any] = Field(
        description="IDC regions as GeoJSON (level-0 pixel coordinates), as idc.geojson."
    )
    disclaimer: str
    demo: bool = Field(description="True when the model is a demo trained on synthetic data.")


def _analyse(
    state: ServerState, data: bytes, name: str, options: SlideOptions
) -> dict[str, Any]:
    """Decode, map and render one upload (a worker thread)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ScaleWarning)
        reader = open_slide_bytes(
            data, name=name, max_pixels=state.settings.max_slide_pixels,
            training_mpp=state.predictor.card.mpp,
        )  # fmt: skip
        with reader:
            try:
                slide = map_slide(state.predictor, reader, options, name=name)
            except NoScale as exc:
                raise IdcscanError(
                    f"{exc.name} records no scale (µm per pixel): enter the scale of its full "
                    "resolution in the Scale field (?mpp= in the API): about 0.25 for a 40x "
                    "scan, 0.5 for 20x, 4 for an image already at the training scale. A guessed "
                    "scale would give a wrong map."
                ) from None
    polygons = idc_polygons(slide)
    slide.timings["total"] = slide.timings.pop("map", 0.0)
    summary = slide.summary(n_regions=len(polygons)).to_dict()
    for key in ("path", "tissue", "reader", "fingerprint"):
        summary.pop(key, None)
    summary.update(
        warnings=summary["warnings"]
        + [str(w.message) for w in caught if issubclass(w.category, ScaleWarning)],
        image=png_data_url(Image.fromarray(slide.thumbnail, mode="RGB")),
        heatmap=png_data_url(heatmap_layer(slide)),
        regions=geojson(slide, polygons),
        disclaimer=DISCLAIMER,
        demo=state.demo,
    )
    return summary


def _lock(request: Request) -> asyncio.Semaphore:
    app_state = request.app.state
    lock = getattr(app_state, "idcscan_slide_lock", None)
    if lock is None:
        lock = asyncio.Semaphore(1)
        app_state.idcscan_slide_lock = lock
    return lock


@router.post(
    "/slide",
    response_model=SlideResponse,
    summary="Map IDC over a large image",
    responses={
        400: {"description": "No usable upload, a broken image or a bad option."},
        413: {"description": "Too many bytes or pixels."},
        415: {"description": "An image format idcscan does not decode."},
        422: {"description": "More tiles than one map may have (a scale or stride too fine "
                             "for the image)."},
    },
    openapi_extra=multipart_body("file", many=False),
)
async def slide(
    request: Request,
    mpp: float | None = Query(
        None, ge=MIN_MPP, le=MAX_MPP, allow_inf_nan=False,
        description=f"µm/px of the full resolution, for an image whose file records no scale "
        f"({MIN_MPP:g} to {MAX_MPP:g}; needed for those: a scale is never guessed).",
    ),
    stride: int | None = Query(
        None, ge=1, description="Tile step in training-scale pixels (default: the patch size)."
    ),
    tta: bool = Query(
        False, description="Average each tile over its 8 flips/rotations at run time (8x "
        "slower); a model that averages views in its graph (GET /health: model.tta) always "
        "does, and ignores it."
    ),
    context: float = Query(
        CONTEXT_SIGMA, ge=0, le=10,
        description="Spatial context: each tile's P(IDC) is the Gaussian-weighted mean "
        "log-odds of the tissue tiles around it, sigma in patches; 0 scores each tile alone.",
    ),
    state: ServerState = Depends(get_state),
) -> dict[str, Any]:
    """Upload a large image in multipart field ``file``; get the IDC map and its summary."""
    max_bytes = int(state.settings.max_slide_upload_mb * MB)
    parts = await read_form(
        request, max_bytes=max_bytes + ENVELOPE_BYTES, max_file_bytes=max_bytes, max_parts=8
    )
    upload = one_file(parts, "file")
    options = SlideOptions(mpp=mpp, stride=stride, tta=tta, context=context,
                           max_tiles=state.settings.max_map_tiles)
    async with _lock(request):
        return await run_in_threadpool(
            _analyse, state, upload.data, PurePath(upload.filename or "upload").name, options
        )
