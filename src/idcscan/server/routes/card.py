"""``GET /model-card`` (the readable model card) and ``GET /report`` (its evaluation report).

The card is ``idcscan.runtime.model_card.readable_card`` of the served bundle; the full
model.json stays in ``/health`` for machines. The report is the ``idcscan evaluate`` output of
this very bundle (``create_app(report=...)``, else found next to the bundle and matched by the
ONNX sha256): ``/report`` is its report.md, ``/report/<figure>.png`` its figures.

Both answer a browser with a page and a script with data, by the request's ``Accept`` header
(``pages.wants_html``): a browser asks for ``text/html`` first and gets the page; ``fetch``,
curl and scripts (``*/*`` or ``application/json``) get JSON (the card) or Markdown (the
report), as before. ``?format=json|md|html`` chooses outright. The report's Markdown is
rendered by markdown-it-py with raw HTML switched off, so nothing in a report file reaches
the page as markup.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse
from markdown_it import MarkdownIt

from idcscan.errors import IdcscanError
from idcscan.runtime.model_card import card_markdown, load_report, readable_card
from idcscan.server.routes.pages import page_response, wants_html
from idcscan.server.state import ServerState, get_state

router = APIRouter()


class NoReport(IdcscanError):
    """No evaluation report (or no such figure) for the served bundle (HTTP 404)."""


REPORT_FIGURES = ("roc.png", "pr.png", "confusion_matrix.png", "calibration.png")
FORMAT_HELP = "json, md (Markdown) or html; default: html for a browser, else json."


def report_dir(request: Request) -> Path | None:
    return getattr(request.app.state, "idcscan_report", None)


def _html(request: Request, format: str | None) -> bool:
    return format == "html" or (format is None and wants_html(request))


@router.get("/model-card", summary="The model card, for people", response_model=None)
async def model_card(
    request: Request,
    format: str | None = Query(None, pattern="^(json|md|html)$", description=FORMAT_HELP),
    state: ServerState = Depends(get_state),
) -> dict[str, Any] | PlainTextResponse | HTMLResponse:
    """Class names, the decision convention, data and patients, validation and (when an
    evaluation report of this bundle exists) test metrics with 95% CIs; no absolute paths."""
    folder = report_dir(request)
    readable = readable_card(
        state.predictor.card, load_report(folder), "/report" if folder else None
    )
    if format == "md":
        return PlainTextResponse(card_markdown(readable), media_type="text/markdown")
    if _html(request, format):
        return page_response("model_card", request.app, card=readable)
    return readable


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # CommonMark with tables; html=False: raw HTML in a report file is shown as text
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def report_html(markdown: str) -> str:
    """The report's Markdown as safe HTML (no raw HTML passes; links are checked by
    markdown-it's ``validateLink``, which refuses javascript: and the like)."""
    return _markdown().render(markdown)


@router.get("/report", include_in_schema=False, response_model=None)
async def report(
    request: Request,
    format: str | None = Query(None, pattern="^(md|html)$"),
) -> PlainTextResponse | HTMLResponse:
    folder = report_dir(request)
    if folder is None or not (folder / "report.md").is_file():
        raise NoReport("No evaluation report of this model was found next to it; run "
                       "`idcscan evaluate BUNDLE DATA --out REPORT` and serve with it.")
    text = (folder / "report.md").read_text()
    for name in REPORT_FIGURES:  # figures are served next to /report
        text = text.replace(f"]({name})", f"](/report/{name})")
    if _html(request, format):
        return page_response("report", request.app, report=report_html(text))
    return PlainTextResponse(text, media_type="text/plain; charset=utf-8")


@router.get("/report/{name}", include_in_schema=False, response_model=None)
async def report_figure(name: str, request: Request) -> FileResponse:
    folder = report_dir(request)
    if folder is None or name not in REPORT_FIGURES or not (folder / name).is_file():
        raise NoReport(f"No report figure {name!r}; figures: {', '.join(REPORT_FIGURES)}.")
    return FileResponse(folder / name, media_type="image/png")
