"""The slide browser and deep-zoom viewer (``idcscan serve BUNDLE --slides DIR``).

Pages: ``/browse`` (every slide under DIR) and ``/viewer?slide=ID`` (OpenSeadragon, vendored
in static/openseadragon/). Deep Zoom: ``GET /slides/{id}.dzi`` and
``GET /slides/{id}_files/{level}/{col}_{row}.jpeg``, cut from the slide readers region by
region (``idcscan.slides.deepzoom``). API: ``GET /api/slides`` (id, name, width, height,
mpp, format, has_map; unreadable files are listed with their one-line ``error``), and per
slide its map: ``POST /api/slides/{id}/map`` starts ``idcscan slide`` on it in the
background (a slide without a recorded scale takes one in the JSON body, ``{"mpp": 0.25}``),
``POST /api/slides/{id}/map/remap`` makes it again, ``POST /api/slides/{id}/map/cancel``
stops it, ``GET /api/slides/{id}/map`` tells how far it is and gives its summary; the
layers are ``/slides/{id}/map/overlay.png`` (P(IDC), one pixel per tile),
``/slides/{id}/map/qc.png`` (artefact QC labels), ``/slides/{id}/map/grid.json`` (per-tile
values for the read-out under the cursor) and ``/slides/{id}/map/regions.geojson``.

Ids that name no readable slide are 404s (see ``slide_library`` for why no request can
reach a file outside DIR). A slide that stops being readable (a damaged tile, a file cut
short) answers 500 with a one-line reason; answers name slides by their path under DIR,
never where DIR is. A slide whose file records no scale is mapped only with ``mpp``: the
viewer never guesses a scale.

Jobs are bounded (``ServerSettings``): ``mpp`` finite and within the scale fields' range
(400), at most ``max_map_tiles`` tiles (422), one job queued or running per client and
``max_map_jobs`` in all (429). Tiles and thumbnails may be kept by the browser
(``private``), never by a shared cache; every other answer here is ``no-store``
(``server.security``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from idcscan import DISCLAIMER
from idcscan.errors import IdcscanError
from idcscan.slides.deepzoom import jpeg_bytes
from idcscan.maps.layers import load_grid, overlay_png
from idcscan.maps.mapper import TooManyTiles
from idcscan.runtime.predictor import Predictor
from idcscan.server.map_jobs import MapBusy, MapStore
from idcscan.server.routes.pages import page_response
from idcscan.server.slide_library import SlideEntry, SlideLibrary, SlideNotFound, one_line
from idcscan.server.state import MAX_MPP, MIN_MPP, ServerSettings
from idcscan.slides.tiling import grid_shape

router = APIRouter()
log = logging.getLogger(__name__)
#: where `idcscan serve --slides` keeps maps unless told (--maps)
ENV_SLIDES = "IDCSCAN_SERVE_SLIDES"
ENV_MAPS = "IDCSCAN_SERVE_MAPS"
#: the browser may keep a patient's tiles for the session; a proxy or shared cache may not
TILE_CACHE_CONTROL = "private, max-age=3600"


def default_maps_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "idcscan" / "maps"


class Viewer:
    """What the viewer routes share: the slide library, the map store, small thumbnails."""

    def __init__(
        self, slides: str | Path, maps: str | Path, predictor: Predictor, demo: bool = False,
        settings: ServerSettings | None = None,
    ) -> None:
        self.demo = demo
        self.settings = settings or ServerSettings()
        self.card = predictor.card
        self.library = SlideLibrary(slides)
        self.maps = MapStore(maps, predictor, max_jobs=self.settings.max_map_jobs,
                             max_tiles=self.settings.max_map_tiles)
        self._thumbs: OrderedDict[str, bytes] = OrderedDict()
        self._thumb_lock = threading.Lock()

    def thumbnail(self, entry: SlideEntry) -> bytes:
        slide_id = entry.id
        with self._thumb_lock:
            if slide_id in self._thumbs:
                return self._thumbs[slide_id]
        with _reading(entry), self.library.open(slide_id) as handle:
            data = jpeg_bytes(handle.zoom.thumbnail(256))
        with self._thumb_lock:
            self._thumbs[slide_id] = data
            while len(self._thumbs) > 512:
                self._thumbs.popitem(last=False)
        return data

    def close(self) -> None:
        self.maps.close()
        self.library.close()


def configure_viewer(app: Any, slides: str | Path, maps: str | Path | None = None) -> Viewer:
    """Serve the slides under ``slides`` from ``app`` (made by ``create_app``)."""
    state = app.state.idcscan
    viewer = Viewer(slides, maps or default_maps_dir(), state.predictor, demo=state.demo,
                    settings=state.settings)
    app.state.idcscan_viewer = viewer
    return viewer


def configure_viewer_from_env(app: Any) -> Viewer | None:
    """The viewer ``idcscan serve --slides`` asked for (through the environment, which also
    reaches spawned worker processes), built once with the app, before any request."""
    slides = os.environ.get(ENV_SLIDES)
    if not slides:
        return None
    return configure_viewer(app, slides, os.environ.get(ENV_MAPS) or None)


async def get_viewer(request: Request) -> Viewer:
    # async: FastAPI runs a plain-def dependency in the thread pool, a hand-off per request
    # (per Deep Zoom tile) for what is an attribute read.
    viewer = getattr(request.app.state, "idcscan_viewer", None)
    if viewer is None:
        raise HTTPException(404)
    return viewer


def _entry(viewer: Viewer, slide_id: str) -> SlideEntry:
    try:
        return viewer.library.get(slide_id)
    except SlideNotFound:
        raise HTTPException(404) from None


@contextmanager
def _reading(entry: SlideEntry) -> Iterator[None]:
    """Pixels that cannot be read are the server's file's fault, not the request's: 500,
    with the reader's one-line reason."""
    try:
        yield
    except SlideNotFound:
        raise HTTPException(404) from None
    except IdcscanError as exc:
        log.warning("Could not serve %s: %s", entry.path, exc)  # the operator sees the full path
        raise HTTPException(500, one_line(entry.redact(str(exc)))) from exc


def _map_folder(viewer: Viewer, slide_id: str) -> Path:
    folder = viewer.maps.folder(_entry(viewer, slide_id))
    if folder is None:
        raise HTTPException(404)
    return folder


# ------------------------------------------------------------------------------- pages


def examples_note(viewer: Viewer | None) -> str | None:
    """What the example section is, when the slide folder is the one that ships with idcscan
    (``serve --examples``): a first-time user should know whose tissue it is and that the
    shipped model has seen it."""
    from idcscan.runtime.shipped import examples_dir, examples_info

    folder = examples_dir()
    if viewer is None or folder is None or viewer.library.root != (folder / "slides").resolve():
        return None
    info = examples_info()
    slide = info.get("slide") or {}
    share = slide.get("idc_patches", 0) / max(1, slide.get("patches", 1))
    return (f"The example section that ships with idcscan: the {slide.get('patches', '?')} "
            f"patches of Kaggle patient {slide.get('patient', '?')} put back together at "
            f"{slide.get('mpp', 4):g} µm/px; {slide.get('idc_patches', '?')} of them "
            f"({share:.1%}) are labelled IDC. {info.get('note', '')} {info.get('source', '')}")


@router.get("/browse", include_in_schema=False)
async def browse_page(request: Request) -> HTMLResponse:
    note = examples_note(getattr(request.app.state, "idcscan_viewer", None))
    return page_response("browse", request.app, **({"examples_note": note} if note else {}))


@router.get("/viewer", include_in_schema=False)
async def viewer_page(request: Request) -> HTMLResponse:
    return page_response("viewer", request.app)


# -------------------------------------------------------------------------------- API


@router.get("/api/slides", summary="The slides under --slides DIR")
def list_slides(viewer: Viewer = Depends(get_viewer)) -> list[dict[str, Any]]:
    """Every slide found (recursively); unreadable files carry a one-line ``error``."""
    out = []
    for entry in viewer.library.entries():
        item = entry.public()
        item["has_map"] = entry.readable and viewer.maps.folder(entry) is not None
        out.append(item)
    return out


@router.get("/api/slides/{slide_id}", summary="One slide, and the state of its map")
def slide_info(slide_id: str, viewer: Viewer = Depends(get_viewer)) -> dict[str, Any]:
    entry = _entry(viewer, slide_id)
    return _with_map(viewer, entry)


def _with_map(viewer: Viewer, entry: SlideEntry) -> dict[str, Any]:
    item = entry.public()
    status = viewer.maps.status(entry)
    folder = viewer.maps.folder(entry)
    item["has_map"] = folder is not None
    item["map"] = status
    if folder is not None:
        item["map"]["summary"] = entry.redact_all(_summary(viewer, entry))
    item["disclaimer"] = DISCLAIMER
    item["demo"] = viewer.demo
    return item


def _summary(viewer: Viewer, entry: SlideEntry) -> dict[str, Any]:
    folder = viewer.maps.folder(entry)
    return {} if folder is None else json.loads((folder / "summary.json").read_text())


@router.get("/api/slides/{slide_id}/map", summary="How far the slide's map is")
def map_status(slide_id: str, viewer: Viewer = Depends(get_viewer)) -> dict[str, Any]:
    return _with_map(viewer, _entry(viewer, slide_id))["map"]


class MapRequest(BaseModel):
    """The body of a map request; empty for a slide whose file records its scale."""

    model_config = ConfigDict(extra="forbid")
    mpp: float | None = Field(
        None, ge=MIN_MPP, le=MAX_MPP, allow_inf_nan=False, strict=True,  # true is not 1 µm/px
        description=f"µm per pixel of the slide's full resolution, {MIN_MPP:g} to {MAX_MPP:g}; "
        "only for a slide whose file records no scale.",
    )


MAP_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: {"description": "No scale for a slide without one, or a scale out of range."},
    409: {"description": "A scale other than the one its map was made at, or is being made "
                         "at (ask for a re-map), or a re-map while the slide's map is under "
                         "way."},
    422: {"description": "More tiles than one job may map."},
    429: {"description": "The client has a map under way already, or the queue is full."},
}


def _request_map(request: Request, viewer: Viewer, slide_id: str, body: MapRequest | None,
                 replace: bool) -> JSONResponse:
    entry = _entry(viewer, slide_id)
    if "mpp" in request.query_params:
        raise IdcscanError('The scale goes in the JSON body now, {"mpp": 0.25}, not in ?mpp=.')
    mpp = body.mpp if body is not None else None
    if entry.mpp is not None and mpp is not None:
        raise IdcscanError(
            f"{entry.relpath} records its own scale ({entry.mpp:g} µm/px), which is the one "
            "used; mpp is only for a slide whose file records none."
        )
    state = viewer.maps.status(entry)["state"]
    starts = replace or state not in ("queued", "running", "done")
    if state == "done" and not replace and mpp is not None:
        made_at = _summary(viewer, entry).get("mpp")
        if made_at is not None and made_at != mpp:
            raise MapBusy(f"{entry.relpath} was mapped at {made_at:g} µm/px; to map it at "
                          f"{mpp:g}, ask for a re-map (POST /api/slides/{entry.id}/map/remap).")
    if entry.mpp is None and mpp is None and starts:
        raise IdcscanError(
            f"{entry.relpath} records no scale (µm per pixel): give the scale of its full "
            'resolution (the scale field, or {"mpp": ...} in the JSON body) to map it; a '
            "guessed scale would give a wrong map."
        )
    scale = entry.mpp or mpp
    if starts and scale is not None and entry.width and entry.height:
        _, _, cols, rows = grid_shape(entry.width, entry.height, scale, viewer.card.mpp,
                                      viewer.card.patch_size, None)
        if cols * rows > viewer.settings.max_map_tiles:
            raise TooManyTiles(entry.relpath, scale, cols, rows, viewer.settings.max_map_tiles)
    client = request.client.host if request.client else None
    status = viewer.maps.start(entry, mpp=mpp, client=client, replace=replace)
    if status["state"] == "failed":  # could not even start (e.g. the maps folder is read-only)
        return JSONResponse({"error": status["error"], **status}, status_code=503)
    return JSONResponse(status, status_code=200 if status["state"] == "done" else 202)


@router.post("/api/slides/{slide_id}/map", summary="Map the slide in the background",
             responses=MAP_ANSWERS)
def start_map(
    slide_id: str, request: Request, body: MapRequest | None = Body(None),
    viewer: Viewer = Depends(get_viewer),
) -> JSONResponse:
    """202 while queued or running, 200 when a map exists (it is not made again)."""
    return _request_map(request, viewer, slide_id, body, replace=False)


@router.post("/api/slides/{slide_id}/map/remap", summary="Map the slide again",
             responses=MAP_ANSWERS)
def remap(
    slide_id: str, request: Request, body: MapRequest | None = Body(None),
    viewer: Viewer = Depends(get_viewer),
) -> JSONResponse:
    """Like starting a map, but made again even if one exists (e.g. at a corrected scale);
    the old map is served until the new one replaces it."""
    return _request_map(request, viewer, slide_id, body, replace=True)


@router.post("/api/slides/{slide_id}/map/cancel", summary="Stop the slide's map",
             responses={409: {"description": "No map of the slide is queued or running."}})
def cancel_map(slide_id: str, viewer: Viewer = Depends(get_viewer)) -> JSONResponse:
    """200 ``cancelled`` when it had not begun; 202 while a running map stops at its next
    batch of tiles (``GET .../map`` then says ``cancelled``)."""
    status = viewer.maps.cancel(_entry(viewer, slide_id))
    return JSONResponse(status, status_code=200 if status["state"] == "cancelled" else 202)


# ---------------------------------------------------------------------------- deep zoom


@router.get("/slides/{slide_id}.dzi", summary="Deep Zoom descriptor")
def dzi(slide_id: str, viewer: Viewer = Depends(get_viewer)) -> Response:
    with _reading(_entry(viewer, slide_id)), viewer.library.open(slide_id) as handle:
        return Response(handle.zoom.dzi(), media_type="application/xml")


@router.get("/slides/{slide_id}_files/{level}/{col}_{row}.jpeg", summary="Deep Zoom tile")
def dz_tile(
    slide_id: str, level: int, col: int, row: int, viewer: Viewer = Depends(get_viewer)
) -> Response:
    with _reading(_entry(viewer, slide_id)), viewer.library.open(slide_id) as handle:
        if handle.reader.thread_safe:  # tiles of one slide decoded in parallel
            data = handle.zoom.tile_jpeg(level, col, row)
        else:
            with handle.lock:
                data = handle.zoom.tile_jpeg(level, col, row)
    if data is None:
        raise HTTPException(404)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": TILE_CACHE_CONTROL})


@router.get("/slides/{slide_id}/thumbnail.jpeg", summary="Small picture of the slide")
async def thumbnail(slide_id: str, viewer: Viewer = Depends(get_viewer)) -> Response:
    data = await run_in_threadpool(viewer.thumbnail, _entry(viewer, slide_id))
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": TILE_CACHE_CONTROL})


# ------------------------------------------------------------------------------ layers


@router.get("/slides/{slide_id}/map/overlay.png", summary="P(IDC) layer, one pixel per tile")
def map_overlay(slide_id: str, viewer: Viewer = Depends(get_viewer)) -> Response:
    grid = load_grid(_map_folder(viewer, slide_id))
    return Response(overlay_png(grid), media_type="image/png")


@router.get("/slides/{slide_id}/map/qc.png", summary="Artefact QC layer (qc_mask.png)")
def map_qc(slide_id: str, viewer: Viewer = Depends(get_viewer)) -> FileResponse:
    path = _map_folder(viewer, slide_id) / "qc_mask.png"
    if not path.is_file():
        raise HTTPException(404)
    return FileResponse(path, media_type="image/png")


@router.get("/slides/{slide_id}/map/grid.json", summary="Per-tile P(IDC) and QC")
def map_grid(slide_id: str, viewer: Viewer = Depends(get_viewer)) -> dict[str, Any]:
    return load_grid(_map_folder(viewer, slide_id)).as_json()


@router.get("/slides/{slide_id}/map/regions.geojson", summary="IDC regions (idc.geojson)")
def map_regions(slide_id: str, viewer: Viewer = Depends(get_viewer)) -> FileResponse:
    return FileResponse(
        _map_folder(viewer, slide_id) / "idc.geojson", media_type="application/geo+json"
    )
