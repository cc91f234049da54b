"""The slide browser and deep-zoom viewer (``idcscan serve BUNDLE --slides DIR``).

Pages: ``/browse`` (every slide under DIR) and ``/viewer?slide=ID`` (OpenSeadragon, vendored
in static/openseadragon/). Deep Zoom: ``GET /slides/{id}.dzi`` and
``GET /slides/{id}_files/{level}/{col}_{row}.jpeg``, cut from the slide readers region by
region (``idcscan.slides.deepzoom``). API: ``GET /api/slides`` (id, name, width, height,
mpp, format, has_map; unreadable files are listed with their one-line ``error``), and per
slide its map: ``POST /api/slides/{id}/map`` starts ``idcscan slide`` on it in the
background, ``GET /api/slides/{id}/map`` tells how far it is and gives its summary; the
layers are ``/slides/{id}/map/overlay.png`` (P(IDC), one pixel per tile),
``/slides/{id}/map/qc.png`` (artefact QC labels), ``/slides/{id}/map/grid.json`` (per-tile
values for the read-out under the cursor) and ``/slides/{id}/map/regions.geojson``.

Ids that name no readable slide are 404s (see ``slide_library`` for why no request can
reach a file outside DIR). A slide that stops being readable (a damaged tile, a file cut
short) answers 500 with a one-line reason; answers name slides by their path under DIR,
never where DIR is. A slide whose file records no scale is mapped only with ``mpp``: the
viewer never guesses a scale.
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

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from idcscan import DISCLAIMER
from idcscan.errors import IdcscanError
from idcscan.slides.deepzoom import jpeg_bytes
from idcscan.maps.layers import load_grid, overlay_png
from idcscan.runtime.predictor import Predictor
from idcscan.server.map_jobs import MapStore
from idcscan.server.routes.pages import page_response
from idcscan.server.slide_library import SlideEntry, SlideLibrary, SlideNotFound, one_line

router = APIRouter()
log = logging.getLogger(__name__)
#: where `idcscan serve --slides` keeps maps unless told (--maps)
ENV_SLIDES = "IDCSCAN_SERVE_SLIDES"
ENV_MAPS = "IDCSCAN_SERVE_MAPS"
TILE_CACHE_CONTROL = "public, max-age=3600"


def default_maps_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "idcscan" / "maps"


class Viewer:
    """What the viewer routes share: the slide library, the map store, small thumbnails."""

    def __init__(
        self, slides: str | Path, maps: str | Path, predictor: Predictor, demo: bool = False
    ) -> None:
        self.demo = demo
        self.library = SlideLibrary(slides)
        self.maps = MapStore(maps, predictor)
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
    viewer = Viewer(slides, maps or default_maps_dir(), state.predictor, demo=state.demo)
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


@router.get("/browse", include_in_schema=False)
async def browse_page(request: Request) -> HTMLResponse:
    return page_response("browse", request.app)


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
        summary = json.loads((folder / "summary.json").read_text())
        item["map"]["summary"] = entry.redact_all(summary)
    item["disclaimer"] = DISCLAIMER
    item["demo"] = viewer.demo
    return item


@router.get("/api/slides/{slide_id}/map", summary="How far the slide's map is")
def map_status(slide_id: str, viewer: Viewer = Depends(get_viewer)) -> dict[str, Any]:
    return _with_map(viewer, _entry(viewer, slide_id))["map"]


@router.post("/api/slides/{slide_id}/map", summary="Map the slide in the background")
def start_map(
    slide_id: str,
    mpp: float | None = Query(None, gt=0, description="µm/px, for a slide without a scale."),
    viewer: Viewer = Depends(get_viewer),
) -> JSONResponse:
    entry = _entry(viewer, slide_id)
    if entry.mpp is None and mpp is None and \
            viewer.maps.status(entry)["state"] in ("none", "failed"):  # a new job would start
        raise IdcscanError(
            f"{entry.relpath} records no scale (µm per pixel): give the scale of its full "
            "resolution (the scale field, or ?mpp=) to map it; a guessed scale would give a "
            "wrong map."
        )
    status = viewer.maps.start(entry, mpp=mpp)
    if status["state"] == "failed":  # could not even start (e.g. the maps folder is read-only)
        return JSONResponse({"error": status["error"], **status}, status_code=503)
    return JSONResponse(status, status_code=200 if status["state"] == "done" else 202)


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
