"""``GET /model-card`` (the readable model card) and ``GET /report`` (its evaluation report).

The card is ``idcscan.runtime.model_card.readable_card`` of the served bundle; the full
model.json stays in ``/health`` for machines. The report is the ``idcscan evaluate`` output of
this very bundle (``create_app(report=...)``, else found next to the bundle and matched by the
ONNX sha256): ``/report`` is its report.md, ``/report/<figure>.png`` its figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, PlainTextResponse

from idcscan.errors import IdcscanError
from idcscan.runtime.model_card import card_markdown, load_report, readable_card
from idcscan.server.state import ServerState, get_state

router = APIRouter()


class NoReport(IdcscanError):
    """No evaluation report (or no such figure) for the served bundle (HTTP 404)."""

REPORT_FIGURES = ("roc.png", "pr.png", "confusion_matrix.png", "calibration.png")


def report_dir(request: Request) -> Path | None:
    return getattr(request.app.state, "idcscan_report", None)


@router.get("/model-card", summary="The model card, for people", response_model=None)
async def model_card(
    request: Request,
    format: str = Query("json", pattern="^(json|md)$", description="json or md (Markdown)."),
    state: ServerState = Depends(get_state),
) -> dict[str, Any] | PlainTextResponse:
    """Class names, the decision convention, data and patients, validation and (when an
    evaluation report of this bundle exists) test metrics with 95% CIs; no absolute paths."""
    folder = report_dir(request)
    readable = readable_card(
        state.predictor.card, load_report(folder), "/report" if folder else None
    )
    if format == "md":
        return PlainTextResponse(card_markdown(readable), media_type="text/markdown")
    return readable


@router.get("/report", include_in_schema=False, response_model=None)
async def report(request: Request) -> PlainTextResponse:
    folder = report_dir(request)
    if folder is None or not (folder / "report.md").is_file():
        raise NoReport("No evaluation report of this model was found next to it; run "
                       "`idcscan evaluate BUNDLE DATA --out REPORT` and serve with it.")
    text = (folder / "report.md").read_text()
    for name in REPORT_FIGURES:  # figures are served next to /report
        text = text.replace(f"]({name})", f"](/report/{name})")
    return PlainTextResponse(text, media_type="text/plain; charset=utf-8")


@router.get("/report/{name}", include_in_schema=False, response_model=None)
async def report_figure(name: str, request: Request) -> FileResponse:
    folder = report_dir(request)
    if folder is None or name not in REPORT_FIGURES or not (folder / name).is_file():
        raise NoReport(f"No report figure {name!r}; figures: {', '.join(REPORT_FIGURES)}.")
    return FileResponse(folder / name, media_type="image/png")
