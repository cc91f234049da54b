"""The dashboard in a real headless Chromium against the real app served by uvicorn.

Covers what a person does: open the page, read the disclaimer and the model card, pick images
with the file input, read each verdict, flip the explanation overlay, and see why a bad file was
refused (the server's own words). It also checks the page is self-contained: every request the
browser makes goes to the local server (no CDN, no web fonts). A screenshot is saved to
test-artifacts/dashboard.png for a human to look at.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from idcscan import DISCLAIMER
from idcscan.runtime.shipped import examples_dir

pytestmark = pytest.mark.browser

@pytest.fixture(scope="module")
def server(tiny_bundle: Path, live_server) -> Iterator[str]:
    """The real app (demo flag on) on a free loopback port; yields its base URL."""
    from idcscan.server.app import create_app

    with live_server(create_app(tiny_bundle, demo=True)) as url:
        yield url


def _png(seed: int) -> bytes:
    """An H&E-like 50x50 patch as PNG bytes (synthetic, never a real patient)."""
    from idcscan.data.synthetic import render_patient

    patient = render_patient(seed=seed, index=0, n_patches=16)
    full = [p for p in patient.patches() if p.shape[:2] == (50, 50)]
    patch = np.ascontiguousarray(full[len(full) // 2])
    buf = io.BytesIO()
    Image.fromarray(patch).save(buf, format="PNG")
    return buf.getvalue()


def test_dashboard_classifies_explains_and_rejects(
    server: str, browser, tiny_bundle: Path, artifacts_dir: Path
):
    import httpx
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1360, "height": 1000})
    hosts: set[str] = set()
    page.on("request", lambda req: hosts.add(urlparse(req.url).netloc or urlparse(req.url).scheme))
    console_errors: list[str] = []
    page.on("console", lambda msg: msg.type == "error" and console_errors.append(msg.text))
    page.on("pageerror", lambda exc: console_errors.append(str(exc)))

    page.goto(server + "/")

    # The disclaimer is on the page from the first paint and matches the package's wording.
    disclaimer = page.get_by_test_id("disclaimer")
    expect(disclaimer).to_be_visible()
    expect(disclaimer).to_have_text(DISCLAIMER)
    expect(page.locator("footer")).to_contain_text("Research use only")
    # The footer names the engine that scores (bf16 and fp32 differ in the third decimal).
    engine = httpx.get(server + "/health", timeout=30).json()["runtime"]
    expect(page.locator("footer")).to_contain_text(
        f"scored by {engine['engine']} ")
    expect(page.locator("footer")).to_contain_text(f"({engine['precision']})")

    # Model card from /health, with the demo banner for a demo model.
    expect(page.locator("#model-status-text")).to_contain_text("ready", timeout=15_000)
    panel = page.locator("#model-panel")
    expect(panel).to_contain_text("tf_efficientnet_lite0")
    expect(panel).to_contain_text("32 × 32 px")
    expect(panel).to_contain_text("P(IDC) ≥ 50.00%")
    expect(panel).to_contain_text("random weights (test fixture)")
    expect(page.locator("#demo-banner")).to_be_visible()
    expect(page.locator("#demo-banner")).to_contain_text("synthetic data")
    expect(page.get_by_role("link", name="Large image")).to_have_attribute(
        "href", "/static/slide.html"
    )

    # The file picker is reachable from the keyboard.
    page.locator("#file-input").focus()
    assert page.evaluate("document.activeElement.id") == "file-input"

    # One patch: verdict, probability in percent, threshold on the bar.
    page.locator("#file-input").set_input_files(
        [{"name": "patch-a.png", "mimeType": "image/png", "buffer": _png(1)}]
    )
    card = page.locator("#results > li").first
    verdict = card.get_by_test_id("verdict")
    expect(verdict).to_have_text(re.compile(r"^IDC (Positive|Negative)$"), timeout=20_000)
    expect(card.get_by_test_id("probability")).to_have_text(re.compile(r"^\d{1,3}\.\d\d%$"))
    expect(card.get_by_test_id("confidence")).to_have_text(re.compile(r"^\d{1,3}\.\d\d%$"))
    meter_text = card.get_by_role("meter").get_attribute("aria-valuetext")
    assert "IDC Positive from 50.00%" in meter_text and meter_text.endswith("from 50.00%")
    # A review threshold at the call is said once: one tick, one rule in the caption, which
    # describes this card (never "IDC Positive" under an IDC Negative verdict), and no
    # "Review" badge repeating the call.
    positive = verdict.inner_text() == "IDC Positive"
    expect(card.get_by_test_id("thresholds")).to_have_text(
        "P(IDC) at or above 50.00% (the tick): IDC Positive, and so flagged for review"
        if positive else
        "P(IDC) below 50.00% (the tick): IDC Negative, not flagged for review")
    assert card.locator(".meter__threshold").count() == 1
    assert card.get_by_test_id("review-flag").count() == 0
    # the full file name, on hover too
    expect(card.locator(".result__name")).to_have_text("patch-a.png")
    expect(card.locator(".result__name")).to_have_attribute("title", "patch-a.png")

    # The same bytes through the API give the same numbers the card shows.
    api = httpx.post(
        server + "/predict", files={"file": ("patch-a.png", _png(1), "image/png")}, timeout=30
    ).json()
    expect(verdict).to_have_text(api["class_name"])
    expect(card.get_by_test_id("probability")).to_have_text(f"{api['probability_positive']:.2f}%")

    # The explanation toggles on and off: an overlay under an "Explanation" tag, or, for an
    # empty map, the plain patch with "Nothing here raised the IDC score" and no tag.
    image = card.locator("img")
    plain_src = image.get_attribute("src")
    toggle = card.get_by_test_id("explain-toggle")
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    explained_src = image.get_attribute("src")
    explained = httpx.post(server + "/predict?explain=true",
                           files={"file": ("patch-a.png", _png(1), "image/png")}, timeout=30).json()
    if "explanation" in explained:
        assert explained_src.startswith("data:image/png;base64,") and explained_src != plain_src
        expect(card.locator(".result__figure-tag")).to_be_visible()
    else:
        assert explained_src == plain_src
        expect(card.locator(".result__figure-tag")).to_be_hidden()
        expect(card.locator(".result__figure-note")).to_contain_text(
            "Nothing here raised the IDC score")
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "false")
    assert image.get_attribute("src") == plain_src

    # Several files at once, one of them not an image: it gets the server's own message.
    bad = b"this is a text file, not an H&E patch"
    page.locator("#file-input").set_input_files(
        [
            {"name": "patch-b.png", "mimeType": "image/png", "buffer": _png(2)},
            {"name": "notes.txt", "mimeType": "text/plain", "buffer": bad},
            {"name": "patch-c.png", "mimeType": "image/png", "buffer": _png(3)},
        ]
    )
    expect(page.locator("#results > li")).to_have_count(4)
    expect(page.locator("#results [data-testid=verdict]")).to_have_count(3, timeout=20_000)
    rejected = page.locator("#results > li").nth(2)
    expect(rejected.locator(".result__name")).to_have_text("notes.txt")
    server_error = httpx.post(
        server + "/predict", files={"file": ("notes.txt", bad, "text/plain")}, timeout=30
    ).json()["error"]
    expect(rejected.get_by_test_id("error")).to_have_text(server_error)
    expect(page.locator("#summary")).to_contain_text("3 analysed")
    expect(page.locator("#summary")).to_contain_text("1 rejected")

    toggle.click()  # leave one explanation showing for the screenshot
    expect(toggle).to_have_attribute("aria-pressed", "true")
    page.screenshot(path=str(artifacts_dir / "dashboard.png"), full_page=True)

    # The global switch shows every explanation.
    page.locator("#explain-all").check()
    expect(page.locator("#results [data-testid=explain-toggle][aria-pressed=true]")).to_have_count(
        3
    )
    expect(disclaimer).to_be_visible()

    local = urlparse(server).netloc
    assert hosts <= {local, "data", "blob"}, f"the page fetched from elsewhere: {hosts - {local}}"
    # The browser logs the refused upload's 4xx itself; anything else is a page bug.
    unexpected = [e for e in console_errors if "responded with a status of 4" not in e]
    assert not unexpected, unexpected
    page.close()


def test_dashboard_narrow_screen_keeps_disclaimer(server: str, browser, artifacts_dir: Path):
    """On a phone-sized screen the layout stacks and the disclaimer is still in view."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 390, "height": 800})
    page.goto(server + "/")
    expect(page.get_by_test_id("disclaimer")).to_be_visible()
    expect(page.get_by_test_id("disclaimer")).to_be_in_viewport()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.screenshot(path=str(artifacts_dir / "dashboard-narrow.png"), full_page=True)
    page.close()


@pytest.mark.skipif(examples_dir() is None, reason="examples not installed")
def test_an_example_patch_is_one_click_away_and_says_what_it_is(server: str, browser) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1360, "height": 1000})
    page.goto(server + "/")
    examples = page.get_by_test_id("example")
    expect(examples).to_have_count(6)
    expect(page.locator("#examples-note")).to_contain_text("CC0")
    expect(page.locator("#examples-note")).to_contain_text("training data")
    examples.first.click()
    verdict = page.get_by_test_id("verdict")
    expect(verdict).to_have_count(1, timeout=30_000)
    expect(verdict).to_have_text(re.compile(r"^IDC (Positive|Negative)$"))
    expect(page.get_by_test_id("example-label")).to_contain_text("Example: labelled IDC")
    page.close()
