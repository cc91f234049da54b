"""The slide browser and deep-zoom viewer in headless Chromium, as a pathologist uses them.

A 20,000 x 20,000 pyramidal TIFF is generated for the test (mostly glass, three pieces of
tissue), next to OpenSlide's real Aperio SVS and a damaged SVS. The test lists them, opens the
big one, zooms in twice, pans, maps it from the page (progress bar, then the layers), switches
the map to outlines only and back, and reads P(IDC) under the cursor against the server's own
grid; then opens the SVS. Screenshots: test-artifacts/slides-browse.png, slides-viewer.png, slides-viewer-svs.png.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

pytestmark = pytest.mark.browser

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "openslide"
SIDE = 20_000


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from idcscan.data.synthetic_slide import write_synthetic_wsi

    root = tmp_path_factory.mktemp("browser-slides")
    write_synthetic_wsi(root / "big-synthetic.tif", SIDE, SIDE, mpp=0.5)
    shutil.copy(FIXTURES / "small.svs", root / "small.svs")
    shutil.copy(FIXTURES / "unreadable.svs", root / "damaged.svs")
    return root


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, slides: Path, live_server, tmp_path_factory) -> Iterator[str]:
    from idcscan.server.app import create_app
    from idcscan.server.routes.viewer import configure_viewer

    app = create_app(tiny_bundle, demo=True)
    configure_viewer(app, slides, tmp_path_factory.mktemp("browser-maps"))
    with live_server(app) as url:
        yield url


def _zoom(page) -> float:
    return page.evaluate("window.osdViewer.viewport.getZoom(true)")


def _settled(page) -> None:
    # functions, not expressions: Playwright polls an expression with eval(), which the
    # pages' Content-Security-Policy refuses
    page.wait_for_function(
        "() => window.osdViewer && window.osdViewer.world.getItemCount() > 0"
        " && window.osdViewer.world.getItemAt(0).getFullyLoaded()",
        timeout=60_000,
    )
    page.wait_for_function(
        "() => Math.abs(window.osdViewer.viewport.getZoom(true) - window.osdViewer.viewport.getZoom(false)) < 1e-6",
        timeout=30_000,
    )


def test_browse_open_zoom_pan_map_and_read(
    server: str, browser, artifacts_dir: Path, tiny_bundle: Path
) -> None:
    import httpx
    from playwright.sync_api import expect

    from idcscan.data.synthetic_slide import tissue_layout

    page = browser.new_page(viewport={"width": 1400, "height": 950})
    hosts: set[str] = set()
    tile_levels: set[int] = set()
    errors: list[str] = []

    def on_request(req) -> None:
        url = urlparse(req.url)
        hosts.add(url.netloc)
        if "_files/" in url.path:
            tile_levels.add(int(url.path.split("_files/")[1].split("/")[0]))

    page.on("request", on_request)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))

    # --- the list: name, thumbnail, size, scale, format, map state; the damaged file says why
    page.goto(server + "/browse")
    expect(page.get_by_test_id("disclaimer")).to_contain_text("Research use only")
    expect(page.locator("#slide-count")).to_have_text("2 slide(s), 1 unreadable", timeout=30_000)
    big = page.locator("tr.slide-row", has_text="big-synthetic")
    expect(big).to_contain_text("20,000 × 20,000")
    expect(big).to_contain_text("0.500 µm/px")
    expect(big).to_contain_text("not yet")
    expect(page.locator("tr.slide-row", has_text="small")).to_contain_text("aperio")
    damaged = page.locator("tr.slide-row--error", has_text="damaged")
    expect(damaged.locator(".slide-error")).to_contain_text("damaged.svs")
    page.wait_for_function(
        "() => [...document.querySelectorAll('img.thumb')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=30_000,
    )
    page.screenshot(path=str(artifacts_dir / "slides-browse.png"), full_page=True)

    # --- open the big slide
    big.locator("a.slide-link").click()
    expect(page).to_have_url(re.compile(r"/viewer\?slide=[0-9a-f]{16}$"))
    expect(page.locator("#slide-title")).to_have_text("big-synthetic")
    expect(page.get_by_test_id("disclaimer")).to_be_visible()
    expect(page.locator("#demo-banner")).to_be_visible()
    _settled(page)
    expect(page.locator("#scalebar")).to_be_visible()
    expect(page.locator("#scalebar-label")).to_contain_text("mm")  # whole slide: 10 mm wide

    # --- zoom in twice (mouse wheel over the slide), then pan by dragging
    stage = page.locator("#osd")
    box = stage.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    zooms = [_zoom(page)]
    for _ in range(2):
        page.mouse.move(cx, cy)
        page.mouse.wheel(0, -600)
        _settled(page)
        zooms.append(_zoom(page))
    assert zooms[0] < zooms[1] < zooms[2]
    before = page.evaluate("window.osdViewer.viewport.getCenter(true).x")
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx - 300, cy, steps=8)
    page.mouse.up()
    _settled(page)
    assert page.evaluate("window.osdViewer.viewport.getCenter(true).x") > before
    assert max(tile_levels) > 9  # deeper levels than the overview were fetched

    # --- map it from the page: a progress bar, then the layers
    page.get_by_role("button", name="Map this slide").click()
    expect(page.locator("body[data-map-shown='true']")).to_have_count(1, timeout=240_000)
    expect(page.locator("#map-progress")).to_be_hidden()
    # the bar was shown while the job ran (set when the started job was answered)
    expect(page.locator("body[data-progress-shown='true']")).to_have_count(1)
    expect(page.locator("#map-state")).to_contain_text("tissue tiles")
    expect(page.locator("#map-facts")).to_contain_text("QC left out")
    # the IDC outlines, named as on the large-image page: not QuPath regions drawn by a person
    expect(page.locator("#map-facts")).to_contain_text("IDC regions")
    # folds are the artefact QC mostly misses: the viewer says which way that errs
    expect(page.locator("#qc-fold-note")).to_be_visible()
    expect(page.locator("#qc-fold-note")).to_contain_text("lowered P(IDC) rather than raised it")
    assert page.evaluate("window.osdViewer.world.getItemCount()") == 3  # slide, QC, P(IDC)
    assert page.locator("svg.idc-outlines").count() == 1

    # --- outlines only, then colours and outlines again
    overlay = "window.osdViewer.world.getItemAt(2).getOpacity()"
    page.get_by_label("Outlines only").check()
    assert page.evaluate(overlay) == 0
    page.get_by_label("Colours and outlines").check()
    assert page.evaluate(overlay) == pytest.approx(0.7)

    # --- go to a piece of tissue and read P(IDC) under the cursor
    piece = tissue_layout(SIDE, SIDE)[0]
    page.evaluate(
        f"""() => {{
          const v = window.osdViewer;
          const item = v.world.getItemAt(0);
          const p = item.imageToViewportCoordinates({piece.cx}, {piece.cy});
          v.viewport.panTo(p, true);
          v.viewport.zoomTo(item.imageToViewportZoom(0.25), p, true);
        }}"""
    )
    _settled(page)
    page.mouse.move(cx + 3, cy + 3)
    page.mouse.move(cx, cy)
    readout = page.get_by_test_id("readout")
    expect(readout).to_contain_text("P(IDC)")
    shown = float(readout.get_attribute("data-value"))
    sid = page.evaluate("new URLSearchParams(location.search).get('slide')")
    grid = httpx.get(f"{server}/slides/{sid}/map/grid.json").json()
    image_xy = page.evaluate(
        f"""() => {{
          const item = window.osdViewer.world.getItemAt(0);
          const p = item.viewerElementToImageCoordinates(new OpenSeadragon.Point({box["width"] / 2}, {box["height"] / 2}));
          return [p.x, p.y];
        }}"""
    )
    col, row = int(image_xy[0] // grid["stride"]), int(image_xy[1] // grid["stride"])
    assert grid["probabilities"][row][col] == pytest.approx(shown)
    expect(readout).to_contain_text(f"{shown * 100:.1f}%")
    page.screenshot(path=str(artifacts_dir / "slides-viewer.png"))

    # --- a re-open shows the cached map at once (no new job)
    page.reload()
    expect(page.locator("body[data-map-shown='true']")).to_have_count(1, timeout=30_000)
    expect(page.locator("#map-button")).to_be_hidden()

    # --- the real Aperio SVS opens with its scale
    page.goto(server + "/browse")
    page.locator("tr.slide-row", has_text="small").locator("a.slide-link").click()
    expect(page.locator("#slide-facts")).to_contain_text("0.499 µm/px")
    _settled(page)
    expect(page.locator("#scalebar-label")).to_contain_text("µm")
    # 16 x 16 px: smaller than one tile, and the viewer says so rather than "0 tiles"
    page.get_by_role("button", name="Map this slide").click()
    expect(page.locator("body[data-map-shown='true']")).to_have_count(1, timeout=120_000)
    expect(page.locator("#map-state")).to_contain_text("smaller than one tile")
    expect(page.locator("#map-facts")).to_contain_text("from the file")
    page.screenshot(path=str(artifacts_dir / "slides-viewer-svs.png"))

    assert not errors, errors
    assert hosts == {urlparse(server).netloc}  # everything served locally: no CDN
    page.close()


@pytest.fixture(scope="module")
def plain_server(tiny_bundle: Path, live_server, tmp_path_factory) -> Iterator[str]:
    from PIL import Image

    from idcscan.data.synthetic_slide import tissue_layout
    from idcscan.server.app import create_app
    from idcscan.server.routes.viewer import configure_viewer

    root = tmp_path_factory.mktemp("plain-slides")
    # a plain picture with textured, tissue-coloured pieces and no scale recorded (no dpi)
    rng = np.random.default_rng(0)
    pixels = np.full((900, 1200, 3), (245, 243, 246), dtype=np.uint8)
    ys, xs = np.mgrid[:900, :1200]
    for piece in tissue_layout(1200, 900):
        inside = piece.inside(xs, ys)
        texture = rng.normal(0, 28, size=(int(inside.sum()), 1))
        pixels[inside] = np.clip(np.array([190, 110, 170]) + texture, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(root / "no-scale.png")
    app = create_app(tiny_bundle, demo=True)
    configure_viewer(app, root, tmp_path_factory.mktemp("plain-maps"))
    with live_server(app) as url:
        yield url


def test_a_picture_without_scale_asks_for_one_and_maps_at_it(
    plain_server: str, browser, artifacts_dir: Path
) -> None:
    import httpx
    from playwright.sync_api import expect

    sid = httpx.get(f"{plain_server}/api/slides").json()[0]["id"]
    page = browser.new_page(viewport={"width": 1400, "height": 950})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{plain_server}/viewer?slide={sid}")
    expect(page.locator("#slide-facts")).to_contain_text("not recorded in the file")
    _settled(page)
    expect(page.locator("#scalebar")).to_be_hidden()  # no scale, no bar
    expect(page.locator("#mpp-field")).to_be_visible()

    # no scale typed: refused on the page, nothing started
    page.get_by_role("button", name="Map this slide").click()
    expect(page.locator("#viewer-error")).to_contain_text("records no scale")
    assert httpx.get(f"{plain_server}/api/slides/{sid}/map").json()["state"] == "none"

    # with one: mapped at it, and the scale bar appears from the map's scale
    page.locator("#mpp-input").fill("4")
    page.get_by_role("button", name="Map this slide").click()
    expect(page.locator("body[data-map-shown='true']")).to_have_count(1, timeout=120_000)
    expect(page.locator("#viewer-error")).to_be_hidden()
    expect(page.locator("#map-facts")).to_contain_text("4.000 µm/px (entered)")
    expect(page.locator("#scalebar")).to_be_visible()
    # the bar's length in µm over its width in screen px is the entered scale at this zoom
    label = page.locator("#scalebar-label").inner_text()
    length_um = float(label.split()[0]) * (1000 if label.endswith(" mm") else 1)
    bar_px = page.locator("#scalebar-bar").bounding_box()["width"]
    zoom = page.evaluate("window.osdViewer.world.getItemAt(0)"
                         ".viewportToImageZoom(window.osdViewer.viewport.getZoom(true))")
    assert length_um / bar_px == pytest.approx(4.0 / zoom, rel=0.02)
    page.screenshot(path=str(artifacts_dir / "slides-viewer-no-scale.png"))
    assert not errors, errors
    page.close()
