"""The slide browser's API: listing, Deep Zoom, opaque ids, escapes refused, maps in the background.

Runs on real vendor files (OpenSlide Python's fixtures: an Aperio SVS, a generic 4-level
TIFF, a DICOM WSI, damaged files) plus a generated pyramidal TIFF.
"""

from __future__ import annotations

import io
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "openslide"


@pytest.fixture(scope="module")
def slides_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from idcscan.data.synthetic_slide import write_synthetic_wsi

    root = tmp_path_factory.mktemp("slides")
    (root / "vendor").mkdir()
    for name in ("small.svs", "boxes.tiff", "unreadable.svs", "unopenable.tiff"):
        shutil.copy(FIXTURES / name, root / "vendor" / name)
    (root / "vendor" / "dicom-boxes").mkdir()
    for name in ("boxes_0.dcm", "boxes_1.dcm"):
        shutil.copy(FIXTURES / name, root / "vendor" / "dicom-boxes" / name)
    write_synthetic_wsi(root / "synthetic.tif", 3000, 2000, mpp=2.0, min_level_side=700)
    (root / "notes.txt").write_text("not a slide")
    # escapes: a link to a slide outside the folder, and a linked folder outside it
    outside = tmp_path_factory.mktemp("outside")
    shutil.copy(FIXTURES / "small.svs", outside / "secret.svs")
    (root / "escape.svs").symlink_to(outside / "secret.svs")
    (root / "linked-dir").symlink_to(outside, target_is_directory=True)
    (root / "inside-link.svs").symlink_to(root / "vendor" / "small.svs")
    return root


@pytest.fixture(scope="module")
def client(viewer_client, slides_dir: Path) -> Iterator[TestClient]:
    with viewer_client(slides_dir) as c:
        yield c


def by_name(client: TestClient) -> dict[str, dict]:
    r = client.get("/api/slides")
    assert r.status_code == 200
    return {s["path"]: s for s in r.json()}


def test_lists_every_slide_with_the_contract_fields(client: TestClient) -> None:
    slides = by_name(client)
    assert set(slides) == {
        "synthetic.tif", "inside-link.svs", "vendor/small.svs", "vendor/boxes.tiff",
        "vendor/unreadable.svs", "vendor/unopenable.tiff", "vendor/dicom-boxes/boxes_0.dcm",
    }  # fmt: skip  (escape.svs and linked-dir/ point outside: never listed)
    for s in slides.values():
        assert {"id", "name", "width", "height", "mpp", "format", "has_map"} <= set(s)
        assert len(s["id"]) == 16 and "/" not in s["id"] and "." not in s["id"]
    svs = slides["vendor/small.svs"]
    assert (svs["width"], svs["height"], svs["mpp"], svs["format"]) == (16, 16, 0.499, "aperio")
    assert svs["has_map"] is False and svs["error"] is None
    dicom = slides["vendor/dicom-boxes/boxes_0.dcm"]  # one series, listed once, named by folder
    assert dicom["name"] == "dicom-boxes" and dicom["format"] == "dicom"
    assert (dicom["width"], dicom["height"], dicom["mpp"]) == (16, 16, 0.499)
    boxes = slides["vendor/boxes.tiff"]
    assert (boxes["width"], boxes["height"], boxes["levels"]) == (300, 250, 4)
    assert boxes["mpp"] is None  # 72 dpi is no microscope's scale
    synth = slides["synthetic.tif"]
    assert (synth["width"], synth["height"], synth["mpp"]) == (3000, 2000, 2.0)


def test_damaged_files_are_listed_with_a_one_line_error(client: TestClient) -> None:
    slides = by_name(client)
    for path in ("vendor/unreadable.svs", "vendor/unopenable.tiff"):
        error = slides[path]["error"]
        assert error and "\n" not in error and len(error) < 400
        assert path in error and "/tmp" not in error  # the path as the user knows it
    bad = slides["vendor/unreadable.svs"]["id"]
    assert client.get(f"/slides/{bad}.dzi").status_code == 404
    # and the other slides are still served
    good = slides["vendor/small.svs"]["id"]
    assert client.get(f"/slides/{good}.dzi").status_code == 200


def test_dzi_and_tiles(client: TestClient) -> None:
    sid = by_name(client)["synthetic.tif"]["id"]
    r = client.get(f"/slides/{sid}.dzi")
    assert r.status_code == 200 and "xml" in r.headers["content-type"]
    root = ET.fromstring(r.text)
    ns = "{http://schemas.microsoft.com/deepzoom/2008}"
    assert root.tag == f"{ns}Image" and root.attrib["TileSize"] == "254"
    assert root.attrib["Overlap"] == "1" and root.attrib["Format"] == "jpeg"
    size = root.find(f"{ns}Size")
    assert (size.attrib["Width"], size.attrib["Height"]) == ("3000", "2000")

    top = 12  # ceil(log2(3000)) = 12: level 12 is full size
    r = client.get(f"/slides/{sid}_files/{top}/1_1.jpeg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.size == (256, 256)  # 254 + one pixel of overlap on each side
    with Image.open(io.BytesIO(client.get(f"/slides/{sid}_files/{top}/11_7.jpeg").content)) as im:
        assert im.size == (3000 - 11 * 254 + 1, 2000 - 7 * 254 + 1)  # the last, clipped tile
    with Image.open(io.BytesIO(client.get(f"/slides/{sid}_files/0/0_0.jpeg").content)) as im:
        assert im.size == (1, 1)
    # tiles at every level agree with the slide: the coarse level-8 tile is the thumbnail
    with Image.open(io.BytesIO(client.get(f"/slides/{sid}_files/8/0_0.jpeg").content)) as im:
        coarse = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert coarse.shape == (125, 188, 3)
    assert 200 < coarse.mean() < 250  # mostly glass, some tissue
    assert client.get(f"/slides/{sid}_files/{top}/12_0.jpeg").status_code == 404
    assert client.get(f"/slides/{sid}_files/{top + 1}/0_0.jpeg").status_code == 404
    thumb = client.get(f"/slides/{sid}/thumbnail.jpeg")
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"


def test_dicom_and_svs_tiles_come_through_their_readers(client: TestClient) -> None:
    slides = by_name(client)
    for path in ("vendor/small.svs", "vendor/dicom-boxes/boxes_0.dcm"):
        sid = slides[path]["id"]
        r = client.get(f"/slides/{sid}_files/4/0_0.jpeg")  # 16 px: level 4 is full size
        assert r.status_code == 200, r.text
        with Image.open(io.BytesIO(r.content)) as im:
            assert im.size == (16, 16)


@pytest.mark.parametrize(
    "url",
    [
        "/slides/..%2F..%2Fetc%2Fpasswd.dzi",
        "/slides/%2Fetc%2Fpasswd.dzi",
        "/slides/../../etc/passwd.dzi",
        "/slides/vendor%2Fsmall.svs.dzi",
        "/slides/small.svs_files/0/0_0.jpeg",
        "/slides/..%2Fvendor%2Fsmall.svs/thumbnail.jpeg",
        "/api/slides/..%2F..%2Fetc%2Fpasswd",
        "/slides/0000000000000000.dzi",
    ],
)
def test_paths_never_reach_files(client: TestClient, url: str) -> None:
    r = client.get(url)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")


def test_symlinks_out_of_the_folder_are_refused(client: TestClient, slides_dir: Path) -> None:
    import hashlib

    names = by_name(client)
    assert "escape.svs" not in names and not any(p.startswith("linked-dir") for p in names)
    # even knowing how ids are made, the escaped file has none
    st = (slides_dir / "escape.svs").stat()
    guess = hashlib.sha256(f"escape.svs\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
    assert client.get(f"/slides/{guess[:16]}.dzi").status_code == 404
    # a link swapped in after the listing is caught when the slide is opened
    sid = names["inside-link.svs"]["id"]
    link = slides_dir / "inside-link.svs"
    link.unlink()
    link.symlink_to(slides_dir.parent / "nowhere.svs")
    try:
        assert client.get(f"/slides/{sid}.dzi").status_code == 404
    finally:
        link.unlink()
        link.symlink_to(slides_dir / "vendor" / "small.svs")


def test_map_runs_in_the_background_and_is_cached(client: TestClient) -> None:
    sid = by_name(client)["synthetic.tif"]["id"]
    assert client.get(f"/slides/{sid}/map/overlay.png").status_code == 404
    r = client.post(f"/api/slides/{sid}/map")
    assert r.status_code == 202 and r.json()["state"] in ("queued", "running", "done")
    deadline = time.monotonic() + 300
    while True:
        status = client.get(f"/api/slides/{sid}/map").json()
        if status["state"] in ("done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status["state"] == "done", status
    summary = status["summary"]
    assert summary["n_tiles"] > 0 and "qc_excluded_mm2" in summary
    assert summary["path"] == "synthetic.tif"  # never where the slide folder lives
    assert set(summary["qc_tiles"]) == {"pen", "blur", "fold", "bubble"}
    assert by_name(client)["synthetic.tif"]["has_map"] is True
    # a second request is answered from the cache
    again = client.post(f"/api/slides/{sid}/map")
    assert again.status_code == 200 and again.json()["state"] == "done"

    grid = client.get(f"/slides/{sid}/map/grid.json").json()
    assert grid["tile"] == 100 and grid["stride"] == 100  # 50 px at 4 µm = 100 px at 2 µm
    assert (grid["cols"], grid["rows"]) == (30, 20)
    scored = [v for row in grid["probabilities"] for v in row if v is not None]
    assert len(scored) == summary["n_tiles"] and all(0.0 <= v <= 1.0 for v in scored)
    with Image.open(io.BytesIO(client.get(f"/slides/{sid}/map/overlay.png").content)) as im:
        assert im.mode == "RGBA" and im.size == (30, 20)
        alpha = np.asarray(im)[..., 3]
    probs = np.array([[np.nan if v is None else v for v in row] for row in grid["probabilities"]])
    assert (alpha[np.isnan(probs)] == 0).all()  # nothing drawn where nothing was scored
    assert (alpha[np.nan_to_num(probs, nan=1) < 0.2] == 0).all()  # low P(IDC): transparent
    with Image.open(io.BytesIO(client.get(f"/slides/{sid}/map/qc.png").content)) as im:
        assert im.mode == "P" and im.info.get("transparency") == 0
    regions = client.get(f"/slides/{sid}/map/regions.geojson").json()
    assert regions["type"] == "FeatureCollection"


def test_a_slide_without_scale_needs_mpp(client: TestClient) -> None:
    sid = by_name(client)["vendor/boxes.tiff"]["id"]
    r = client.post(f"/api/slides/{sid}/map")
    assert r.status_code == 400
    error = r.json()["error"]
    assert "vendor/boxes.tiff records no scale" in error and '{"mpp": ...} in the JSON body' in error
    assert "\n" not in error
    assert client.get(f"/api/slides/{sid}/map").json()["state"] == "none"


def test_serve_cli_browses_a_folder_and_refuses_a_missing_one(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    import os
    import signal
    import socket
    import subprocess
    import sys

    import httpx

    launch = [sys.executable, "-c", "from idcscan.cli import main; main()"]
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    missing = subprocess.run(
        [*launch, "serve", str(tiny_bundle), "--slides", str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert missing.returncode == 2 and "is not a folder" in missing.stderr

    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(FIXTURES / "small.svs", slides / "small.svs")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "serve.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [*launch, "serve", str(tiny_bundle), "--port", str(port), "--slides", str(slides),
             "--maps", str(tmp_path / "maps")],
            stdout=fh, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        listing = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                listing = httpx.get(f"http://127.0.0.1:{port}/api/slides", timeout=5).json()
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert listing is not None, log.read_text()
        assert [s["name"] for s in listing] == ["small"]
        page = httpx.get(f"http://127.0.0.1:{port}/browse", timeout=5)
        assert page.status_code == 200 and "Research use only" in page.text
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert f"http://127.0.0.1:{port}/browse" in " ".join(log.read_text().split())


def test_serve_slides_builds_its_viewer_with_the_app_before_any_request(
    tiny_bundle: Path, slides_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each `serve --slides` process builds one viewer at start-up: concurrent first
    requests cannot race to build two (with two map stores and two slide caches)."""
    from idcscan.server.app import create_app_from_env
    from idcscan.server.routes.viewer import ENV_MAPS, ENV_SLIDES

    monkeypatch.setenv("IDCSCAN_SERVE_BUNDLE", str(tiny_bundle))
    monkeypatch.setenv(ENV_SLIDES, str(slides_dir))
    monkeypatch.setenv(ENV_MAPS, str(tmp_path / "maps"))
    app = create_app_from_env()
    viewer = app.state.idcscan_viewer  # there before the first request
    with TestClient(app) as c:
        assert c.get("/api/slides").status_code == 200
        assert app.state.idcscan_viewer is viewer
    monkeypatch.delenv(ENV_SLIDES)
    plain = create_app_from_env()  # without --slides: no viewer, its routes are 404s
    with TestClient(plain) as c:
        assert c.get("/api/slides").status_code == 404
