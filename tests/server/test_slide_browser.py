"""The large-image page (slide.html) in headless Chromium against the real app (uvicorn).

What a person does: open the page, read the disclaimer, pick a large image, see the IDC map
over it, move the opacity slider, read the IDC share and tile count (the same numbers the API
gives), and see the server's own words when a file is refused. Every request stays local (no
CDN). A screenshot goes to test-artifacts/slide.png for a human to look at.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from idcscan import DISCLAIMER

pytestmark = pytest.mark.browser

@pytest.fixture(scope="module")
def slide_server(tiny_bundle: Path, live_server) -> Iterator[str]:
    from idcscan.server.app import create_app

    with live_server(create_app(tiny_bundle)) as url:
        yield url


def _large_png() -> bytes:
    """Pink 'tissue' on the left 200 px, glass on the right: 8 tissue tiles at 4 µm/px (its
    scale recorded in the file: 6350 dpi)."""
    rng = np.random.default_rng(0)
    img = np.clip(244 + rng.normal(0, 2, (100, 300, 3)), 0, 255)
    img[:, :200] = np.clip(np.array([225, 150, 200]) + rng.normal(0, 12, (100, 200, 1)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, format="PNG", dpi=(6350, 6350))
    return buf.getvalue()


def test_slide_page_maps_an_image_and_explains_refusals(
    slide_server: str, browser, artifacts_dir: Path
) -> None:
    import httpx
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1360, "height": 1000})
    hosts: set[str] = set()
    page.on("request", lambda r: hosts.add(urlparse(r.url).netloc or "data"))
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))

    page.goto(slide_server + "/static/slide.html")
    expect(page.get_by_test_id("disclaimer")).to_have_text(DISCLAIMER)
    expect(page.get_by_role("link", name="Patches")).to_have_attribute("href", "/")

    png = _large_png()
    page.locator("#file-input").set_input_files(
        [{"name": "large.png", "mimeType": "image/png", "buffer": png}]
    )
    expect(page.locator("#summary")).to_be_visible(timeout=30_000)
    api = httpx.post(
        slide_server + "/slide", files={"file": ("large.png", png, "image/png")}, timeout=60
    ).json()
    tiles = f"{api['n_tiles']} ({api['n_idc_tiles']} IDC)"
    expect(page.locator("#tiles")).to_have_text(tiles)
    expect(page.locator("#idc-fraction")).to_have_text(f"{100 * api['idc_fraction']:.1f}%")
    expect(page.locator("#scale")).to_contain_text("from the file")
    expect(page.locator("#warnings")).to_be_hidden()  # nothing to caution about
    assert api["n_tiles"] == 8
    overlay = page.locator("#heatmap-image")
    expect(overlay).to_be_visible()
    assert overlay.get_attribute("src").startswith("data:image/png;base64,")

    page.locator("#opacity").fill("20")
    expect(page.locator("#opacity-value")).to_have_text("20%")
    opacity = "getComputedStyle(document.getElementById('heatmap-image')).opacity"
    assert page.evaluate(opacity) == "0.2"
    expect(page.get_by_test_id("disclaimer")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "slide.png"), full_page=True)

    bad = b"%PDF-1.4 not an image"
    page.locator("#file-input").set_input_files(
        [{"name": "report.pdf", "mimeType": "application/pdf", "buffer": bad}]
    )
    message = httpx.post(
        slide_server + "/slide", files={"file": ("report.pdf", bad, "application/pdf")}
    ).json()["error"]
    expect(page.locator("#error-banner")).to_be_visible(timeout=20_000)
    expect(page.locator("#error-text")).to_have_text(message)
    expect(page.locator("#error-title")).to_contain_text("not supported")

    local = urlparse(slide_server).netloc
    assert hosts <= {local, "data"}, hosts
    # Chromium logs every 4xx fetch as a console error; the refusal above is meant
    assert not [e for e in errors if "Failed to load resource" not in e], errors
