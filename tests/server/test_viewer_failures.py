"""The slide browser when a file lets it down: no scale, a damaged tile, a picture too big to
decode whole. Each gives a one-line answer that names the slide by its path under the slide
folder (never where that folder lives), and the browser goes on serving the others."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image


@pytest.fixture(scope="module")
def slides_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import tifffile

    from idcscan.data.synthetic_slide import write_synthetic_wsi

    root = tmp_path_factory.mktemp("failing-slides")
    # a plain picture with no scale in it (no dpi)
    Image.new("RGB", (600, 400), (200, 120, 170)).save(root / "no-scale.png")
    (root / "cases").mkdir()
    Image.new("RGB", (300, 200), (200, 120, 170)).save(root / "cases" / 'Präparat "7".png')
    # a pyramid whose first full-resolution tile is zeroed on disk; its overview is intact
    damaged = write_synthetic_wsi(root / "damaged-tile.tif", 3000, 2000, mpp=2.0,
                                  min_level_side=700)  # fmt: skip
    with tifffile.TiffFile(damaged) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    with open(damaged, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x00" * count)
    write_synthetic_wsi(root / "fine.tif", 1200, 800, mpp=2.0, min_level_side=300)
    return root


@pytest.fixture(scope="module")
def client(viewer_client, slides_dir: Path) -> Iterator[TestClient]:
    with viewer_client(slides_dir) as c:
        yield c


def ids(client: TestClient) -> dict[str, str]:
    return {s["path"]: s["id"] for s in client.get("/api/slides").json()}


def wait_for_map(client: TestClient, sid: str) -> dict:
    deadline = time.monotonic() + 300  # a hang guard, not a timing assertion
    while (status := client.get(f"/api/slides/{sid}/map").json())["state"] not in (
        "done", "failed",
    ) and time.monotonic() < deadline:  # fmt: skip
        time.sleep(0.1)
    return status


def test_a_picture_without_scale_is_never_mapped_at_a_guessed_one(
    client: TestClient, slides_dir: Path
) -> None:
    sid = ids(client)["no-scale.png"]
    assert client.get(f"/api/slides/{sid}").json()["mpp"] is None
    r = client.post(f"/api/slides/{sid}/map")
    assert r.status_code == 400
    error = r.json()["error"]
    assert "no-scale.png records no scale" in error and "\n" not in error
    assert str(slides_dir.resolve()) not in error
    assert client.get(f"/api/slides/{sid}/map").json()["state"] == "none"  # nothing started

    r = client.post(f"/api/slides/{sid}/map", json={"mpp": 4})
    assert r.status_code == 202
    status = wait_for_map(client, sid)
    assert status["state"] == "done", status
    summary = status["summary"]
    assert summary["mpp"] == 4.0 and summary["mpp_source"] == "option"
    assert status["warnings"] == []
    # the summary names the slide by its path under the folder, not the server's disk
    assert summary["path"] == "no-scale.png"
    assert str(slides_dir.resolve()) not in json.dumps(status)


def test_answers_never_show_where_the_slide_folder_lives(
    client: TestClient, slides_dir: Path
) -> None:
    relpath = 'cases/Präparat "7".png'
    sid = ids(client)[relpath]
    assert client.post(f"/api/slides/{sid}/map", json={"mpp": 4}).status_code == 202
    status = wait_for_map(client, sid)
    assert status["state"] == "done", status
    assert status["summary"]["path"] == relpath
    for answer in (status, client.get(f"/api/slides/{sid}").json(), client.get("/api/slides").json()):
        assert str(slides_dir.resolve()) not in json.dumps(answer, ensure_ascii=False)


def test_a_damaged_tile_is_a_one_line_500_and_the_rest_still_serves(
    client: TestClient, slides_dir: Path
) -> None:
    listed = ids(client)
    sid = listed["damaged-tile.tif"]
    dzi = client.get(f"/slides/{sid}.dzi")
    assert dzi.status_code == 200  # the overview level reads
    r = client.get(f"/slides/{sid}_files/12/0_0.jpeg")  # full resolution, the zeroed tile
    assert r.status_code == 500
    error = r.json()["error"]
    assert "Could not read pixels of damaged-tile.tif" in error and "\n" not in error
    assert str(slides_dir.resolve()) not in error
    # a coarse tile of the same slide, and another slide, are still served
    assert client.get(f"/slides/{sid}_files/8/0_0.jpeg").status_code == 200
    fine = client.get(f"/slides/{listed['fine.tif']}_files/11/0_0.jpeg")
    assert fine.status_code == 200 and fine.headers["content-type"] == "image/jpeg"


def test_a_plain_picture_too_big_to_decode_whole_is_listed_with_the_way_out(
    tmp_path: Path,
) -> None:
    from idcscan.server.slide_library import SlideLibrary

    Image.new("RGB", (200, 200), (200, 120, 170)).save(tmp_path / "big.jpg")
    Image.new("RGB", (50, 50), (200, 120, 170)).save(tmp_path / "small.jpg")
    library = SlideLibrary(tmp_path, max_plain_pixels=10_000)
    entries = {e.relpath: e for e in library.entries()}
    big = entries["big.jpg"]
    assert not big.readable
    assert "200 x 200" in big.error and "pyramidal TIFF" in big.error
    assert "\n" not in big.error and str(tmp_path.resolve()) not in big.error
    assert entries["small.jpg"].readable
