"""The HTML pages share one layout: header, disclaimer, footer; the Slides link only with --slides."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from idcscan import DISCLAIMER

PAGES = {"/": "Patches", "/static/slide.html": "Large image", "/browse": None, "/viewer": None}


def _nav(html: str) -> list[str]:
    nav = re.search(r'<nav class="site-nav"[^>]*>(.*?)</nav>', html, re.S).group(1)
    return re.findall(r">([^<]+)</a>", nav)


def test_every_page_carries_the_one_disclaimer_and_the_same_header(tiny_bundle: Path) -> None:
    from idcscan.server.app import create_app

    with TestClient(create_app(tiny_bundle)) as client:
        for url, current in PAGES.items():
            r = client.get(url)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            html = r.text
            assert html.count(DISCLAIMER) == 1, url
            assert "Research use only:</strong> not a medical device" in html
            # no slide folder served: no Slides link
            assert _nav(html) == ["Patches", "Large image", "Model card"], url
            if current:
                assert re.search(rf'aria-current="page"[^>]*>{current}<', html), url
            assert "{{" not in html and "{%" not in html


def test_the_slides_link_appears_when_slides_are_served(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    from idcscan.server.app import create_app
    from idcscan.server.routes.viewer import configure_viewer

    app = create_app(tiny_bundle)
    (tmp_path / "slides").mkdir()
    configure_viewer(app, tmp_path / "slides", tmp_path / "maps")
    with TestClient(app) as client:
        for url in PAGES:
            assert _nav(client.get(url).text) == ["Patches", "Large image", "Slides",
                                                  "Model card"], url
        assert 'aria-current="page">Slides<' in client.get("/browse").text
