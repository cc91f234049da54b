"""The FastAPI app: /health, the pages, the error answers, and the routers put together.

Built by ``create_app`` so tests and ``idcscan serve`` make one around any bundle. The routes
live beside it: ``predict_routes`` (/predict, /predict/batch), ``slide_routes`` (/slide),
``card_routes`` (the model card), ``viewer_routes`` (the slide browser and deep zoom).

Every error answer is JSON ``{"error": "..."}``: 400 for a bad request or a broken image,
413 for too many bytes or pixels, 415 for an image format idcscan does not decode, 408 for an
upload that came too slowly, 422 (with ``"use": "/slide"``) for an image far larger than a
patch or a map of too many tiles, 409 and 429 for map jobs (one under way; the queue or the
client's share of it full). The catch-all 500 exists for bugs; no input is meant to reach it.

Before any route, ``server.security`` checks the Host (400), the Origin of changes (403) and
the token when there is one (401), and puts the security headers on every answer.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import platform
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from idcscan import DISCLAIMER, __version__
from idcscan.errors import IdcscanError
from idcscan.runtime.batching import MicroBatcher
from idcscan.runtime.bundle import Bundle
from idcscan.images import ImageTooLarge, UnsupportedImage
from idcscan.runtime.labels import CALL_RULE, CONFIDENCE_RULE, FLAG_RULE
from idcscan.runtime.model_card import find_report
from idcscan.runtime.predictor import Predictor
from idcscan.runtime.patch_size import MAX_PATCH_SIDE, NotAPatch
from idcscan.maps.mapper import TooManyTiles
from idcscan.server.map_jobs import MapBusy
from idcscan.server.map_queue import QueueFull
from idcscan.server.routes.card import NoReport
from idcscan.server.routes.card import router as card_router
from idcscan.server.routes.docs import install_docs
from idcscan.server.routes.pages import page_response
from idcscan.server.routes.predict import router as predict_router
from idcscan.server.schemas import HealthResponse
from idcscan.server.security import SecurityMiddleware, SecurityPolicy, redact_access_log
from idcscan.server.state import ServerSettings, ServerState, get_state
from idcscan.server.uploads import UploadTimeout, UploadTooLarge

log = logging.getLogger("idcscan.server")

STATIC_DIR = Path(__file__).parent / "static"

_STATUS_BY_ERROR: tuple[tuple[type[IdcscanError], int], ...] = (
    (UploadTimeout, 408),
    (UploadTooLarge, 413),
    (ImageTooLarge, 413),
    (UnsupportedImage, 415),
    (NotAPatch, 422),
    (TooManyTiles, 422),
    (NoReport, 404),
    (MapBusy, 409),
    (QueueFull, 429),
)

def status_for(exc: IdcscanError) -> int:
    """HTTP status of a user error: 413 too large, 415 unsupported format, else 400."""
    for kind, status in _STATUS_BY_ERROR:
        if isinstance(exc, kind):
            return status
    return 400


#: seconds a client told 429 waits before asking again: about one small map, or a progress
#: poll's few turns on a large one
RETRY_AFTER_S = 10


def error_response(status: int, message: str, use: str | None = None) -> JSONResponse:
    # A refused body may still be arriving; closing the connection stops the client sending.
    headers = {"Connection": "close"} if status in (408, 413) else None
    if status == 429:
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    body = {"error": message} if use is None else {"error": message, "use": use}
    return JSONResponse(body, status_code=status, headers=headers)


router = APIRouter()


def _versions() -> dict[str, str]:
    versions = {"idcscan": __version__, "python": platform.python_version()}
    for package in ("onnxruntime", "openvino", "numpy", "pillow", "fastapi"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


@router.get("/health", response_model=HealthResponse, summary="Service and model card")
async def health(state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """Liveness plus everything a person should know about the model being served."""
    s = state.settings
    return {
        "status": "ok",
        "model_loaded": state.predictor is not None,
        "model": state.public_card,
        "runtime": state.predictor.engine.info.as_dict(),
        "versions": _versions(),
        "disclaimer": DISCLAIMER,
        "demo": state.demo,
        "batching": {
            **state.batcher.stats.as_dict(),
            "max_batch": state.batcher.max_batch,
            "max_wait_ms": state.batcher.max_wait_s * 1000.0,
        },
        "limits": {
            "max_upload_mb": s.max_upload_mb,
            "max_pixels": s.max_pixels,
            "max_patch_side": s.max_patch_side,
            "max_preview_side": s.max_preview_side,
            "max_batch_files": s.max_batch_files,
            "max_batch_upload_mb": s.max_batch_upload_mb,
            "max_slide_upload_mb": s.max_slide_upload_mb,
            "max_slide_pixels": s.max_slide_pixels,
        },
    }


@router.get("/", include_in_schema=False, response_model=None)
async def dashboard(request: Request) -> HTMLResponse:
    return page_response("index", request.app)


@router.get("/static/slide.html", include_in_schema=False, response_model=None)
async def large_image_page(request: Request) -> HTMLResponse:
    """The large-image page, at the address it always had (before the /static mount)."""
    return page_response("slide", request.app)


# ---------------------------------------------------------------------------- the factory


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(IdcscanError)
    async def _user_error(request: Request, exc: IdcscanError) -> JSONResponse:
        return error_response(status_for(exc), str(exc), getattr(exc, "use_instead", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        )
        return error_response(400, f"Invalid request ({problems}).")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"There is nothing at {request.url.path}; the API is described at /docs."
        elif exc.status_code == 405:
            message = (
                f"{request.method} is not allowed on {request.url.path}; "
                "the API is described at /docs."
            )
        response = error_response(exc.status_code, message)
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("Unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            500, f"Internal error in idcscan (a bug, not your input): {type(exc).__name__}."
        )


#: FastAPI's own OpenTelemetry (FastAPI >= 0.16x): spans, metrics and log records of every
#: request, validation failures with the request body included, sent wherever the process's
#: OpenTelemetry providers or ``FASTAPI_OTEL_AUTO_CONFIGURE`` + ``OTEL_EXPORTER_OTLP_*`` point.
#: idcscan promises that nothing leaves the machine, and bodies are patients' images: off.
TELEMETRY_OFF = {"tracing": False, "metrics": False, "logs": False,
                 "operation_spans": False, "auto_configure": False}


def _no_telemetry() -> dict[str, Any]:
    """``FastAPI(telemetry=...)`` where this FastAPI has it (older ones have none to stop)."""
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        return {"telemetry": dict(TELEMETRY_OFF)}
    return {}


def create_app(
    bundle_or_predictor: Predictor | Bundle | str | Path,
    settings: ServerSettings | None = None,
    demo: bool | None = None,
    report: str | Path | None = None,
    security: SecurityPolicy | None = None,
) -> FastAPI:
    """Build the service around a bundle directory, a loaded ``Bundle`` or a ``Predictor``.

    ``demo`` defaults to the model card's flag (bundles trained on synthetic data).
    ``report``: the ``idcscan evaluate`` folder of this bundle, linked from the model card;
    by default one next to the bundle whose metrics.json names this bundle's ONNX sha256.
    ``security``: host names, token (``idcscan.server.security``); by default what
    ``IDCSCAN_ALLOWED_HOSTS`` and ``IDCSCAN_TOKEN`` say, loopback only and no token when unset.
    """
    predictor = (
        bundle_or_predictor
        if isinstance(bundle_or_predictor, Predictor)
        else Predictor(bundle_or_predictor)
    )
    settings = settings or ServerSettings()
    batcher = MicroBatcher(
        predictor, max_batch=settings.max_batch, max_wait_s=settings.batch_wait_ms / 1000.0
    )
    state = ServerState(
        predictor=predictor,
        settings=settings,
        batcher=batcher,
        demo=predictor.card.demo if demo is None else demo,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await batcher.aclose()
        batcher.shutdown()
        viewer = getattr(app.state, "idcscan_viewer", None)
        if viewer is not None:
            viewer.close()

    card = predictor.card
    app = FastAPI(
        title="idcscan",
        version=__version__,
        summary="Invasive Ductal Carcinoma detection in H&E breast histopathology patches.",
        description=(
            f"**{DISCLAIMER}**\n\nModel: `{card.name}` {card.version} ({card.backbone}). "
            "Probabilities in answers are percents (2 decimals); the thresholds too.\n\n"
            f"**The call.** {CALL_RULE} {CONFIDENCE_RULE}\n\n**The review flag.** {FLAG_RULE} "
            f"This model's review threshold: P(IDC) ≥ {card.threshold * 100:.2f}%.\n\n"
            f"**Patches only.** /predict reads one 50 x 50 px patch; images over "
            f"{MAX_PATCH_SIDE} px on the long side are refused (422) and belong to /slide, "
            "which tiles them at the training scale. Smaller or larger patches are padded or "
            "resized, and the answer's `warnings` say so."
            + ("\n\n**Demo model trained on synthetic data: its answers mean nothing.**"
               if state.demo else "")
        ),
        lifespan=lifespan,
        docs_url=None,  # served from the package's own assets (offline): idcscan.server.routes.docs
        redoc_url=None,
        **_no_telemetry(),
    )
    app.state.idcscan = state
    app.state.idcscan_report = (
        Path(report) if report is not None else find_report(predictor.bundle.path, card)
    )
    _install_error_handlers(app)
    install_docs(app)
    app.include_router(predict_router)
    app.include_router(router)

    from idcscan.server.routes.slides import router as slide_router

    app.include_router(slide_router)
    app.include_router(card_router)
    from idcscan.server.routes.examples import router as examples_router

    app.include_router(examples_router)
    from idcscan.server.routes.viewer import router as viewer_router

    app.include_router(viewer_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    app.state.idcscan_security = security or SecurityPolicy.from_env()
    app.add_middleware(SecurityMiddleware, policy=app.state.idcscan_security)
    redact_access_log()
    return app


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (``idcscan serve --workers N``): reads the bundle
    and settings that the CLI put in the environment."""
    import json
    import os

    bundle = os.environ.get("IDCSCAN_SERVE_BUNDLE")
    if not bundle:
        raise IdcscanError("IDCSCAN_SERVE_BUNDLE is not set; start it with `idcscan serve`.")
    raw = json.loads(os.environ.get("IDCSCAN_SERVE_SETTINGS", "{}"))
    threads = int(os.environ.get("IDCSCAN_SERVE_THREADS", "0")) or None
    from idcscan.server.routes.viewer import configure_viewer_from_env

    app = create_app(Predictor(bundle, threads=threads), settings=ServerSettings(**raw))
    configure_viewer_from_env(app)
    return app
