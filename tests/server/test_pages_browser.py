"""Every page at a desktop width (1400 px) and a phone width (390 px), in headless Chromium.

For each page: it renders what it is for (cards, a map with its outlines, the slide list, the
viewer, the model card and the evaluation report as pages, not raw JSON or Markdown), nothing
is wider than the screen, and a screenshot is kept in test-artifacts/pages-<page>-<width>.png
for a person to look at. The viewer is also shot zoomed in on the IDC area of a painted slide
with glands (viewer-zoom-glands.png), and the tissue's contrast under the map is measured
against the same view with outlines only: the map must tint the glands, not hide them.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slide_glands import write_glands
from slide_helpers import texture

pytestmark = pytest.mark.browser

WIDTHS = (1400, 390)
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture(scope="module")
def site(trained_bundle: Path, prepared_data: Path, live_server, tmp_path_factory
         ) -> Iterator[dict]:
    """The app over the texture model, its evaluation report, and a slide folder holding the
    painted glands slide and a picture that records no scale."""
    from idcscan.evaluation.evaluate import evaluate
    from idcscan.server.app import create_app
    from idcscan.server.routes.viewer import configure_viewer

    root = tmp_path_factory.mktemp("pages")
    shutil.copytree(trained_bundle, root / "bundle")
    evaluate(root / "bundle", prepared_data, split="test", out=root / "report", n_boot=50,
             progress=False)
    (root / "slides").mkdir()
    box = write_glands(root / "slides" / "glands.png")
    rng = np.random.default_rng(4)
    Image.fromarray(texture(rng, 300, 400, "normal")).save(root / "slides" / "snapshot.png")
    patches = root / "patches"
    patches.mkdir()
    for i, (kind, label) in enumerate((("idc", 1), ("normal", 0), ("idc", 1), ("normal", 0))):
        name = f"9126_idx5_x{1001 + 50 * i}_y2051_class{label}.png"
        Image.fromarray(texture(rng, 50, 50, kind)).save(patches / name)
    app = create_app(root / "bundle", report=root / "report")
    configure_viewer(app, root / "slides", root / "maps")
    with live_server(app) as url:
        yield {"url": url, "root": root, "box": box, "patches": sorted(patches.glob("*.png"))}


@pytest.fixture
def page_at(browser):
    """``page_at(width)``: a page of that width; page errors fail the test."""
    pages, errors = [], []

    def make(width: int):
        page = browser.new_page(viewport={"width": width, "height": 900 if width > 600 else 800})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.close()
    assert not errors, errors


def fits(page) -> bool:
    """Nothing on the page is wider than the screen (no sideways scrolling)."""
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def shoot(page, artifacts_dir: Path, name: str, width: int) -> None:
    page.screenshot(path=str(artifacts_dir / f"pages-{name}-{width}.png"), full_page=True)


@pytest.mark.parametrize("width", WIDTHS)
def test_dashboard_cards_say_what_they_show(site, page_at, artifacts_dir: Path,
                                            width: int) -> None:
    from playwright.sync_api import expect

    page = page_at(width)
    page.goto(site["url"] + "/")
    expect(page.locator("#model-status-text")).to_contain_text("ready", timeout=20_000)
    page.set_input_files("#file-input", [str(p) for p in site["patches"]])
    cards = page.locator(".result--positive, .result--negative")
    expect(cards).to_have_count(4, timeout=60_000)
    for card in cards.all():
        verdict = card.get_by_test_id("verdict").inner_text()
        caption = card.get_by_test_id("thresholds").inner_text()
        other = "IDC Negative" if verdict == "IDC Positive" else "IDC Positive"
        assert verdict in caption and other not in caption, (verdict, caption)
        assert card.get_by_test_id("review-flag").count() == 0  # review threshold = the call
        name = card.locator(".result__name")
        assert name.inner_text().endswith(".png") and "_class" in name.inner_text()
        assert name.get_attribute("title") == name.inner_text()
    assert fits(page)
    shoot(page, artifacts_dir, "dashboard", width)


@pytest.mark.parametrize("width", WIDTHS)
def test_large_image_page_draws_outlines_and_an_outline_only_mode(
    site, page_at, artifacts_dir: Path, width: int
) -> None:
    from playwright.sync_api import expect

    page = page_at(width)
    page.goto(site["url"] + "/static/slide.html")
    expect(page.locator("#model-status-text")).to_contain_text("idcscan", timeout=20_000)
    page.set_input_files("#file-input", str(site["root"] / "slides" / "glands.png"))
    expect(page.locator("#summary")).to_be_visible(timeout=60_000)
    outlines = page.locator("#outline-layer polygon")
    assert outlines.count() >= 1  # "Outlined regions are IDC": drawn, as promised
    overlay = page.locator("#heatmap-image")
    assert overlay.evaluate("i => getComputedStyle(i).mixBlendMode") == "multiply"
    assert overlay.evaluate("i => getComputedStyle(i).opacity") == "0.7"
    expect(page.locator("#scale")).to_contain_text("from the file")
    page.get_by_label("Outlines only").check()
    expect(overlay).to_be_hidden()
    expect(page.locator("#outline-layer")).to_be_visible()
    page.get_by_label("Colours only").check()
    expect(overlay).to_be_visible()
    expect(page.locator("#outline-layer")).to_be_hidden()
    page.get_by_label("Colours and outlines").check()
    assert fits(page)
    shoot(page, artifacts_dir, "slide", width)


def test_the_large_image_page_asks_for_a_missing_scale(site, page_at) -> None:
    from playwright.sync_api import expect

    page = page_at(1400)
    page.goto(site["url"] + "/static/slide.html")
    page.set_input_files("#file-input", str(site["root"] / "slides" / "snapshot.png"))
    expect(page.locator("#error-banner")).to_contain_text("records no scale", timeout=30_000)
    expect(page.locator("#error-banner")).to_contain_text("Scale field")
    expect(page.locator("#mpp-input")).to_be_focused()
    page.locator("#mpp-input").fill("4")
    page.locator("#mpp-input").press("Enter")  # the refused file is mapped at the scale typed
    expect(page.locator("#scale")).to_contain_text("4.00 µm/px (as given)", timeout=30_000)
    expect(page.locator("#error-banner")).to_be_hidden()


@pytest.mark.parametrize("width", WIDTHS)
def test_browse_fits_a_phone_and_says_how_to_give_a_scale(
    site, page_at, artifacts_dir: Path, width: int
) -> None:
    from playwright.sync_api import expect

    page = page_at(width)
    page.goto(site["url"] + "/browse")
    expect(page.locator("#slide-count")).to_have_text("2 slide(s)", timeout=30_000)
    snapshot = page.locator("tr.slide-row", has_text="snapshot")
    expect(snapshot).to_contain_text("enter it in the viewer")
    assert "--mpp" not in page.locator("#slide-table").inner_text()
    page.wait_for_function(
        "() => [...document.querySelectorAll('img.thumb')]"
        ".every(i => i.complete && i.naturalWidth)", timeout=30_000)
    assert fits(page), page.evaluate("document.documentElement.scrollWidth")
    shoot(page, artifacts_dir, "browse", width)


def _map_glands(page, site) -> None:
    from playwright.sync_api import expect

    import httpx

    slides = httpx.get(site["url"] + "/api/slides").json()
    glands = next(s for s in slides if s["name"] == "glands")
    page.goto(f"{site['url']}/viewer?slide={glands['id']}")
    page.wait_for_function("() => window.osdViewer && window.osdViewer.world.getItemCount() > 0",
                           timeout=60_000)
    if not glands["has_map"]:  # the first test to open it maps it; later ones find the map
        page.get_by_role("button", name="Map this slide").click()
    expect(page.locator("body[data-map-shown='true']")).to_have_count(1, timeout=120_000)


def _settle(page) -> None:
    page.wait_for_function(
        "() => { const w = window.osdViewer.world; for (let i = 0; i < w.getItemCount(); i++)"
        " { if (!w.getItemAt(i).getFullyLoaded()) return false; }"
        " const v = window.osdViewer.viewport; return Math.abs(v.getZoom(true) - v.getZoom(false))"
        " < 1e-6; }", timeout=60_000)
    page.wait_for_timeout(300)  # one more frame drawn after the last tile arrived


@pytest.mark.parametrize("width", WIDTHS)
def test_viewer_pages(site, page_at, artifacts_dir: Path, width: int) -> None:
    page = page_at(width)
    _map_glands(page, site)
    _settle(page)
    layer = "window.osdViewer.world.getItemAt(2)"
    assert page.evaluate(f"{layer}.compositeOperation") == "multiply"
    assert page.evaluate(f"{layer}.getOpacity()") == pytest.approx(0.7)
    assert page.locator("svg.idc-outlines polygon").count() >= 1
    page.get_by_label("Outlines only").check()
    assert page.evaluate(f"{layer}.getOpacity()") == 0
    assert page.locator("svg.idc-outlines").is_visible()
    page.get_by_label("Colours only").check()
    assert not page.locator("svg.idc-outlines").is_visible()
    page.get_by_label("Colours and outlines").check()
    assert fits(page)
    shoot(page, artifacts_dir, "viewer", width)


def _luminance(png: bytes) -> np.ndarray:
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)
    return rgb @ np.array([0.2126, 0.7152, 0.0722]), rgb


def test_zoomed_in_the_glands_show_through_the_map(site, page_at, artifacts_dir: Path) -> None:
    """At the slide's full resolution, over its most IDC-like tile: the glands' contrast under
    the default map, against the same view with outlines only (the tissue untouched)."""
    import httpx

    page = page_at(1400)
    _map_glands(page, site)
    sid = page.evaluate("new URLSearchParams(location.search).get('slide')")
    grid = httpx.get(f"{site['url']}/slides/{sid}/map/grid.json").json()
    probs = np.array([[np.nan if v is None else v for v in row] for row in grid["probabilities"]])
    r, c = np.unravel_index(np.nanargmax(probs), probs.shape)
    assert probs[r, c] >= grid["threshold"]  # a tile of the IDC area
    x = (c + 0.5) * grid["stride"]
    y = (r + 0.5) * grid["stride"]
    page.evaluate(
        f"""() => {{
          const v = window.osdViewer, item = v.world.getItemAt(0);
          const p = item.imageToViewportCoordinates({x}, {y});
          v.viewport.zoomTo(item.imageToViewportZoom(2), p, true);
          v.viewport.panTo(p, true);
        }}""")
    _settle(page)
    stage = page.locator("#osd")
    page.get_by_label("Outlines only").check()
    _settle(page)
    plain, plain_rgb = _luminance(stage.screenshot())
    page.get_by_label("Colours and outlines").check()
    _settle(page)
    shot = stage.screenshot(path=str(artifacts_dir / "viewer-zoom-glands.png"))
    tinted, tinted_rgb = _luminance(shot)
    h, w = plain.shape
    crop = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))  # the tile, not the edges
    kept = tinted[crop].std() / plain[crop].std()
    shift = np.abs(tinted_rgb[crop] - plain_rgb[crop]).mean()
    assert kept >= 0.7, kept  # nuclei and lumens keep most of their contrast
    assert shift >= 10, shift  # and the map is there to see
    page.get_by_label("Outlines only").check()
    _settle(page)
    stage.screenshot(path=str(artifacts_dir / "viewer-zoom-glands-outlines-only.png"))


@pytest.mark.parametrize("width", WIDTHS)
def test_model_card_and_report_are_pages_for_people(
    site, page_at, artifacts_dir: Path, width: int
) -> None:
    from playwright.sync_api import expect

    from idcscan import DISCLAIMER

    page = page_at(width)
    page.goto(site["url"] + "/model-card")
    expect(page.locator("h1")).to_contain_text("Model card: ")
    expect(page.get_by_test_id("disclaimer")).to_have_text(DISCLAIMER)
    expect(page.get_by_test_id("confusion-matrix").first).to_be_visible()
    assert '"sections"' not in page.content()  # not JSON
    assert fits(page)
    shoot(page, artifacts_dir, "model-card", width)

    page.get_by_role("link", name="Full evaluation report").click()
    expect(page.locator("h1")).to_contain_text("idcscan evaluation report")
    figures = page.locator("article img")
    assert figures.count() == 4
    page.wait_for_function("() => [...document.querySelectorAll('article img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=30_000)
    assert "![ROC curve]" not in page.content() and page.locator("article table").count() >= 3
    assert fits(page)
    shoot(page, artifacts_dir, "report", width)
