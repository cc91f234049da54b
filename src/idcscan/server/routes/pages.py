"""The dashboard's HTML pages, rendered from one layout (templates/base.html).

Every page shares the header, the research-use disclaimer (``idcscan.DISCLAIMER``, the one
text the API, CLI and files also carry) and the footer, so a change to any of them is made
once. The "Slides" link appears only when the server was started with ``--slides``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from idcscan import DISCLAIMER

TEMPLATES = Path(__file__).parent.parent / "templates"

#: page name -> title (the <title> after "idcscan · ") and whether it shows the model status
PAGES: dict[str, tuple[str, bool]] = {
    "index": ("IDC patch classifier", True),
    "slide": ("Large-image IDC map", True),
    "browse": ("slides", False),
    "viewer": ("slide viewer", False),
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
    return links


@lru_cache(maxsize=16)
def render_page(name: str, with_slides: bool = False) -> str:
    """The page's HTML (cached: pages depend only on which views the server offers)."""
    title, model_status = PAGES[name]
    context: dict[str, Any] = {
        "title": title, "page": name, "model_status": model_status,
        "nav": _nav(with_slides), "disclaimer": DISCLAIMER,
    }  # fmt: skip
    return _environment().get_template(f"{name}.html").render(**context)


def page_response(name: str, app: Any) -> HTMLResponse:
    with_slides = getattr(app.state, "idcscan_viewer", None) is not None
    return HTMLResponse(render_page(name, with_slides))
