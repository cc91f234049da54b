"""Every number a person reads, in a real headless Chromium with the network cut off.

All requests that do not go to the local server are aborted (and recorded), so the pages and
/docs must work offline. Checked as a person would read them: an IDC Positive card never
shows a confidence below 50%; the call's threshold reads the same on both pages; a large
image dropped on the Patches page lands in the large-image view; an image smaller than one
tile says so; /docs and /redoc render their operations. Screenshots of every page go to
test-artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(two_class_demo: Path, live_server) -> Iterator[str]:
    from idcscan.server.app import create_app

    with live_server(create_app(two_class_demo / "bundle")) as url:
        yield url


@pytest.fixture
def page(browser, server: str):
    """A page whose every non-local request is aborted and remembered in ``page.outside``."""
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    outside: list[str] = []

    def gate(route) -> None:
        url = route.request.url
        if url.startswith(server) or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    context.route("**/*", gate)
    p = context.new_page()
    p.outside = outside
    yield p
    context.close()


def _large_image(path: Path, side: int = 600) -> Path:
    rng = np.random.default_rng(2)
    tissue = np.full((side, side, 3), (205, 120, 170), np.uint8)
    tissue = np.clip(tissue + rng.integers(-25, 25, tissue.shape), 0, 255).astype(np.uint8)
    Image.fromarray(tissue).save(path, dpi=(6350, 6350))  # 4 µm/px, recorded in the file
    return path


def _percent(text: str) -> float:
    return float(re.search(r"([\d.]+)%", text).group(1))


def test_patches_page_reads_one_convention(page, server, two_class_demo, artifacts_dir):
    from playwright.sync_api import expect

    page.goto(server + "/")
    expect(page.locator("#model-status-text")).to_contain_text("ready", timeout=20_000)
    patches = sorted(str(p) for p in (two_class_demo / "patches").glob("*.png"))
    page.set_input_files("#file-input", patches)
    expect(page.locator(".result--positive, .result--negative")).to_have_count(8, timeout=60_000)
    page.check("#explain-all")

    verdicts = page.get_by_test_id("verdict").all_inner_texts()
    confidences = [_percent(t) for t in page.get_by_test_id("confidence").all_inner_texts()]
    probabilities = [_percent(t) for t in page.get_by_test_id("probability").all_inner_texts()]
    assert set(verdicts) == {"IDC Positive", "IDC Negative"}  # both calls are on the page
    for verdict, conf, prob in zip(verdicts, confidences, probabilities):
        assert conf >= 50.0, (verdict, conf)
        assert (verdict == "IDC Positive") == (prob >= 50.0)
    # The review flag (threshold 30%) marks exactly the patches with P(IDC) >= 30%.
    flags = page.locator(".result").evaluate_all(
        "cards => cards.map(c => Boolean(c.querySelector('[data-testid=review-flag]')))"
    )
    assert flags == [p >= 30.0 for p in probabilities]

    # The thresholds read the same everywhere on the page.
    expect(page.get_by_test_id("call-threshold")).to_have_text("50.00%")
    expect(page.get_by_test_id("review-threshold")).to_have_text("30.00%")
    # Each card's caption describes that card: its side of each tick and what follows.
    captions = page.get_by_test_id("thresholds").all_inner_texts()
    for caption, verdict, prob in zip(captions, verdicts, probabilities):
        assert "50.00%" in caption and "30.00%" in caption
        assert caption.count(verdict) == 1 and ("IDC Positive" if verdict == "IDC Negative"
                                                else "IDC Negative") not in caption
        assert ("at or above 50.00%" in caption) == (prob >= 50.0)
        assert ("flagged for review" in caption and "not flagged" not in caption) == (prob >= 30)
    card = page.locator("#model-panel")
    expect(card).to_contain_text("IDC Positive when P(IDC) ≥ 50.00%")
    expect(card).to_contain_text("P(IDC) ≥ 30.00%")
    expect(card).to_contain_text("1 = IDC Positive, 0 = IDC Negative")
    expect(card.get_by_test_id("confusion-matrix")).to_be_visible()
    assert "/somewhere" not in card.inner_text()  # no absolute paths on the card

    # An explanation tag only ever sits over an overlay; an empty map says so in words.
    for figure in page.locator(".result__figure").all():
        tag_shown = figure.locator(".result__figure-tag").is_visible()
        note_shown = figure.locator(".result__figure-note").is_visible()
        assert not (tag_shown and note_shown)
        if note_shown:
            assert "Nothing here raised the IDC score" in figure.inner_text()
    page.screenshot(path=str(artifacts_dir / "patches-page.png"), full_page=True)
    assert page.outside == []


def test_a_large_image_goes_to_the_large_image_view(page, server, tmp_path, artifacts_dir):
    from playwright.sync_api import expect

    page.goto(server + "/")
    expect(page.locator("#model-status-text")).to_contain_text("ready", timeout=20_000)
    page.set_input_files("#file-input", str(_large_image(tmp_path / "section.png")))
    note = page.get_by_test_id("large-image")
    expect(note).to_contain_text("600 × 600 px is a large image", timeout=30_000)
    expect(page.get_by_test_id("verdict")).to_have_count(0)  # never squeezed into one patch
    page.screenshot(path=str(artifacts_dir / "patches-large-image.png"), full_page=True)

    page.get_by_test_id("open-large").click()
    page.wait_for_url(re.compile(r"/static/slide\.html\?from=patches$"))
    expect(page.locator("#viewer-stack")).to_be_visible(timeout=120_000)
    expect(page.locator("#tiles")).to_contain_text("(")  # "N (k IDC)"
    expect(page.locator("#image-size")).to_have_text("600 × 600 px")
    # The same call threshold as the Patches page, written the same way.
    expect(page.get_by_test_id("call-threshold")).to_have_text("50.00%")
    expect(page.locator("#threshold")).to_have_text("50.00%")
    expect(page.locator("#result-demo")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "large-image-page.png"), full_page=True)
    assert page.outside == []


def test_large_image_page_states(page, server, tmp_path, artifacts_dir):
    from playwright.sync_api import expect

    page.goto(server + "/static/slide.html")
    expect(page.get_by_test_id("viewer-state")).to_contain_text("No image yet")
    # Nothing broken or spinning on an empty page.
    assert not page.locator("#viewer-stack").is_visible()
    assert not page.locator("#viewer-busy").is_visible()
    page.screenshot(path=str(artifacts_dir / "large-image-empty.png"), full_page=True)

    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.full((30, 40, 3), 180, np.uint8)).save(tiny, dpi=(6350, 6350))
    page.set_input_files("#file-input", str(tiny))
    expect(page.locator("#error-title")).to_have_text("The image is smaller than one tile",
                                                      timeout=30_000)
    expect(page.locator("#error-text")).to_contain_text("40 × 30 px")
    assert not page.locator("#viewer-stack").is_visible()
    assert not page.locator("#viewer-busy").is_visible()
    page.screenshot(path=str(artifacts_dir / "large-image-too-small.png"), full_page=True)

    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    page.set_input_files("#file-input", str(notes))
    expect(page.locator("#error-banner")).to_be_visible()
    expect(page.get_by_test_id("viewer-state")).to_contain_text("could not be mapped",
                                                                timeout=30_000)
    assert not page.locator("#viewer-busy").is_visible()
    page.screenshot(path=str(artifacts_dir / "large-image-error.png"), full_page=True)
    assert page.outside == []


@pytest.mark.parametrize("route, marker", [("/docs", ".opblock"), ("/redoc", "[data-section-id]")])
def test_api_docs_render_offline(page, server, route, marker, artifacts_dir):
    from playwright.sync_api import expect

    page.goto(server + route)
    expect(page.locator(marker).first).to_be_visible(timeout=30_000)
    text = page.locator("body").inner_text()
    for operation in ("/predict", "/predict/batch", "/slide", "/health"):
        assert operation in text or operation.strip("/") in text.lower()
    assert "at least 50%" in text  # the decision convention is in the API description
    page.screenshot(path=str(artifacts_dir / f"api{route.replace('/', '-')}.png"))
    assert page.outside == []
