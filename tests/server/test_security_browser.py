"""Every page under the Content-Security-Policy, reached as a colleague reaches a server that
needs a token: through the address `idcscan serve` printed, once, then by its cookie.

Headless Chromium opens the token address, then the Patches page (a prediction, whose meter
is drawn with styles set from script), the large-image page (an upload and its heatmap), the
slide browser, the viewer (a map made from the page, its overlay, outlines and QC layers,
and a slide mapped at a typed scale), Swagger UI at /docs (a request tried from it) and ReDoc
at /redoc. Chromium
reports anything the CSP refuses as a console error: there must be none, nor any other.
Screenshots: test-artifacts/secure-*.png.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

TOKEN = "lab-token-for-the-browser-test-0042"


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from idcscan.data.synthetic_slide import write_synthetic_wsi

    root = tmp_path_factory.mktemp("secure-slides")
    write_synthetic_wsi(root / "case-0042.tif", 6000, 4000, mpp=0.5)
    Image.new("RGB", (900, 600), (214, 150, 190)).save(root / "no-scale.png")
    return root


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, slides: Path, live_server, tmp_path_factory) -> Iterator[str]:
    from idcscan.server.app import create_app
    from idcscan.server.routes.viewer import configure_viewer
    from idcscan.server.security import SecurityPolicy

    app = create_app(tiny_bundle, security=SecurityPolicy(token=TOKEN))
    configure_viewer(app, slides, tmp_path_factory.mktemp("secure-maps"))
    with live_server(app) as url:
        yield url


def _png(side: int, seed: int) -> bytes:
    buf = io.BytesIO()
    rgb = np.random.default_rng(seed).integers(120, 230, (side, side, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_every_page_works_under_the_csp_through_the_token_address(
        server: str, browser, artifacts_dir: Path) -> None:
    import httpx
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 950})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: m.type in ("error", "warning") and problems.append(
        f"{page.url}: {m.text}"))
    page.on("pageerror", lambda exc: problems.append(f"{page.url}: {exc}"))
    hosts: set[str] = set()
    page.on("request", lambda r: hosts.add(urlparse(r.url).netloc or "data"))
    # (waits poll functions: Playwright polls a bare expression with eval(), which the CSP
    # refuses, as it should)

    # the printed address: the token is swapped for a cookie and leaves the address bar
    page.goto(f"{server}/?token={TOKEN}")
    assert page.url == f"{server}/"
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # out of reach of any script

    # Patches: a prediction; its meter's widths are set from script
    expect(page.locator("#model-status-text")).to_contain_text("ready", timeout=30_000)
    page.locator("#file-input").set_input_files(
        [{"name": "patch.png", "mimeType": "image/png", "buffer": _png(50, 1)}])
    card = page.locator("#results > li").first
    expect(card.get_by_test_id("probability")).to_be_visible(timeout=30_000)
    fill = card.locator(".meter__fill")
    assert fill.evaluate("e => e.style.width").endswith("%")
    page.screenshot(path=str(artifacts_dir / "secure-patches.png"))

    # Large image: an upload, its heatmap as a data: image
    page.goto(f"{server}/static/slide.html")
    page.locator("#mpp-input").fill("4")  # a picture that records no scale: the user gives it
    page.locator("#file-input").set_input_files(
        [{"name": "section.png", "mimeType": "image/png", "buffer": _png(400, 2)}])
    expect(page.locator("#summary")).to_be_visible(timeout=60_000)
    expect(page.locator("#heatmap-image")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "secure-large-image.png"))

    # the slide browser, then the viewer: map the slide from the page
    page.goto(f"{server}/browse")
    expect(page.locator("#slide-rows tr")).to_have_count(2, timeout=30_000)
    listing = httpx.get(f"{server}/api/slides", headers={"authorization": f"Bearer {TOKEN}"},
                        timeout=60).json()
    ids = {s["path"]: s["id"] for s in listing}
    page.wait_for_function(  # thumbnails come with the cookie too
        "() => [...document.querySelectorAll('img.thumb')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=60_000)
    page.screenshot(path=str(artifacts_dir / "secure-browse.png"))
    page.goto(f"{server}/viewer?slide={ids['case-0042.tif']}")
    page.wait_for_function("() => window.osdViewer && window.osdViewer.world.getItemCount() > 0",
                           timeout=60_000)
    page.get_by_role("button", name="Map this slide").click()
    expect(page.locator("body[data-map-shown='true']")).to_have_count(1, timeout=180_000)
    # the slide, the QC layer and the P(IDC) overlay, and the region outlines
    assert page.evaluate("window.osdViewer.world.getItemCount()") == 3
    expect(page.locator("svg.idc-outlines")).to_have_count(1)
    expect(page.locator(".qc-swatch--pen")).to_be_visible()
    assert page.locator(".qc-swatch--pen").evaluate(
        "e => getComputedStyle(e).backgroundColor") == "rgb(0, 200, 255)"
    page.wait_for_function("() => window.osdViewer.world.getItemAt(2).getFullyLoaded()",
                           timeout=60_000)
    page.screenshot(path=str(artifacts_dir / "secure-viewer.png"))

    # a slide without a scale: the typed scale travels in the JSON body
    page.goto(f"{server}/viewer?slide={ids['no-scale.png']}")
    page.wait_for_function("() => window.osdViewer && window.osdViewer.world.getItemCount() > 0",
                           timeout=60_000)
    page.locator("#mpp-input").fill("4")
    page.get_by_role("button", name="Map this slide").click()
    expect(page.locator("body[data-map-shown='true']")).to_have_count(1, timeout=180_000)
    expect(page.locator("#map-facts")).to_contain_text("4.000 µm/px (entered)")

    # the API description, both ways
    page.goto(f"{server}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("idcscan", timeout=30_000)
    # "Try it out" calls the API from the page, signed in by the cookie
    health = page.locator(".opblock", has=page.locator(".opblock-summary-path",
                                                       has_text="/health"))
    health.locator(".opblock-summary").click()
    health.get_by_role("button", name="Try it out").click()
    health.get_by_role("button", name="Execute").click()
    expect(health.locator(".live-responses-table tbody .response-col_status")).to_have_text(
        "200", timeout=30_000)
    page.screenshot(path=str(artifacts_dir / "secure-docs.png"))
    page.goto(f"{server}/redoc")
    expect(page.get_by_text("Classify one image patch").first).to_be_visible(timeout=60_000)
    page.screenshot(path=str(artifacts_dir / "secure-redoc.png"))

    assert not problems, problems
    assert hosts <= {urlparse(server).netloc, "data"}, hosts  # nothing from elsewhere
    context.close()

    # a colleague without the address: a page that says how to get in, and nothing else
    stranger = browser.new_page()
    response = stranger.goto(f"{server}/browse")
    assert response.status == 401
    expect(stranger.locator("h1")).to_have_text("Token needed")
    assert httpx.get(f"{server}/api/slides", timeout=30).status_code == 401
    stranger.close()
