"""The dashboard's HTML pages, rendered from one layout (templates/base.html).

Every page shares the header, the research-use disclaimer (``idcscan.DISCLAIMER``, the one
text the API, CLI and files also carry) and the footer, so a change to any of them is made
once. The "Slides" link appears only when the server was started with ``--slides``. The pages
that draw an IDC map take their default overlay from ``idcscan.maps.colour``, the one colour
scale, so the page, the viewer and heatmap.png agree.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from idcscan import DISCLAIMER
from idcscan.maps.colour import ALPHA_FROM, PAGE_OPACITY

TEMPLATES = Path(__file__).parent.parent / "templates"

#: page name -> title (the <title> after "idcscan · ") and whether it shows the model status
PAGES: dict[str, tuple[str, bool]] = {
    "index": ("IDC patch classifier", True),
    "slide": ("Large-image IDC map", True),
    "browse": ("slides", False),
    "viewer": ("slide viewer", False),
    "model_card": ("model card", False),
    "report": ("evaluation report", False),
}


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
        keep_trailing_newline=True,
    )  # fmt: skip


def _nav(with_slides: bool) -> list[tuple[str, str, str, str]]:
    links = [("/", "Patches", "index", ""),
             ("/static/slide.html", "Large image", "slide", ' id="slide-link"')]
    if with_slides:
        links.append(("/browse", "Slides", "browse", ""))
    links.append(("/model-card", "Model card", "model_card", ""))
    return links


def _context(name: str, with_slides: bool) -> dict[str, Any]:
    title, model_status = PAGES[name]
    return {
        "title": title, "page": name, "model_status": model_status,
        "nav": _nav(with_slides), "disclaimer": DISCLAIMER,
        "map_opacity": round(PAGE_OPACITY * 100), "alpha_from": round(ALPHA_FROM * 100),
    }  # fmt: skip


@lru_cache(maxsize=16)
def render_page(name: str, with_slides: bool = False) -> str:
    """The page's HTML (cached: pages depend only on which views the server offers)."""
    return _environment().get_template(f"{name}.html").render(**_context(name, with_slides))


def page_response(name: str, app: Any, **content: Any) -> HTMLResponse:
    """The page ``name``; ``content`` (a model card, a report) makes it a page of its own,
    rendered for this answer (autoescaped, like every value put into a template)."""
    with_slides = getattr(app.state, "idcscan_viewer", None) is not None
    if not content:
        return HTMLResponse(render_page(name, with_slides))
    template = _environment().get_template(f"{name}.html")
    return HTMLResponse(template.render(**_context(name, with_slides), **content))


def _quality(part: str) -> tuple[str, float]:
    media, _, params = part.strip().partition(";")
    q = 1.0
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip() == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
    return media.strip().lower(), q


def wants_html(request: Request) -> bool:
    """Whether the client asks for a page: ``text/html`` named in ``Accept`` and preferred
    to JSON, Markdown and plain text. Browsers name it first; ``fetch``, curl and scripts send
    ``*/*`` or ``application/json`` and keep their data."""
    ranges = dict(_quality(p) for p in request.headers.get("accept", "").split(",") if p.strip())
    html = ranges.get("text/html", 0.0)
    data = max(ranges.get(m, 0.0) for m in ("application/json", "text/markdown", "text/plain"))
    return html > 0 and html >= data
