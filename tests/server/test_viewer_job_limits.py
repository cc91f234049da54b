"""Map jobs a client cannot abuse: a finite scale in the scale field's range, in a JSON body;
a cap on tiles; one job per client and a bounded queue (429); re-map and cancel; unknown ids
answered from the scan's table without walking the folder; map files only their owner reads,
and no answer or file that names where the server keeps anything."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from idcscan.server.map_jobs import JOB_FILE, LOCK_FILE
from idcscan.server.map_queue import JobQueue, client_key
from idcscan.server.state import MAX_MPP, MIN_MPP, ServerSettings

LOCAL = "http://127.0.0.1:5000"


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from idcscan.data.synthetic_slide import write_synthetic_wsi

    root = tmp_path_factory.mktemp("job-slides")
    write_synthetic_wsi(root / "scaled.tif", 1200, 800, mpp=2.0, min_level_side=400)
    write_synthetic_wsi(root / "other.tif", 1000, 700, mpp=2.0, min_level_side=350)
    # no scale in the file: only mapped with one given
    Image.new("RGB", (40, 40), (200, 120, 170)).save(root / "tiny-no-scale.png")
    # big enough that a map of it is still running when the next request arrives
    write_synthetic_wsi(root / "large.tif", 8000, 8000, mpp=0.5)
    return root


@pytest.fixture()
def serve(tiny_bundle: Path, slides: Path, tmp_path: Path):
    """``with serve(settings) as (client, viewer)``: a fresh maps folder each time."""
    from contextlib import contextmanager

    from idcscan.server.app import create_app
    from idcscan.server.routes.viewer import configure_viewer
    from idcscan.server.security import SecurityPolicy

    @contextmanager
    def make(settings: ServerSettings | None = None, client_address: str = "10.0.0.7"):
        app = create_app(tiny_bundle, settings=settings, security=SecurityPolicy())
        viewer = configure_viewer(app, slides, tmp_path / "maps")
        with TestClient(app, base_url=LOCAL, client=(client_address, 50000)) as client:
            yield client, viewer

    return make


def ids(client: TestClient) -> dict[str, str]:
    return {s["path"]: s["id"] for s in client.get("/api/slides").json()}


def wait(client: TestClient, sid: str, states=("done", "failed", "cancelled")) -> dict:
    deadline = time.monotonic() + 300  # a hang guard, not a timing assertion
    while (status := client.get(f"/api/slides/{sid}/map").json())["state"] not in states:
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    return status


def test_the_scale_is_a_finite_number_in_the_fields_range(serve) -> None:
    with serve() as (client, _):
        sid = ids(client)["tiny-no-scale.png"]
        url = f"/api/slides/{sid}/map"
        for body in ({"mpp": 1e6}, {"mpp": -1}, {"mpp": 0}, {"mpp": MIN_MPP / 2},
                     {"mpp": MAX_MPP * 1.01}, {"mpp": "inf"}, {"mpp": "nan"},
                     {"mpp": 4, "stride": 1}, {"mpp": True}, {"mpp": "4"}, {"mpp": [4]}):
            r = client.post(url, json=body)
            assert r.status_code == 400, body
            assert r.json()["error"].startswith("Invalid request (body"), body
        for raw in (b'{"mpp": Infinity}', b'{"mpp": NaN}', b'{"mpp": -Infinity}'):
            r = client.post(url, content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 400, raw
        r = client.post(f"{url}?mpp=4")  # the old way: refused, not silently ignored
        assert r.status_code == 400 and '{"mpp": 0.25}' in r.json()["error"]
        assert client.get(url).json()["state"] == "none"  # nothing was started
        # the large-image upload takes the same range
        upload = {"file": ("p.png", open(Path(client.app.state.idcscan_viewer.library.root)
                                         / "tiny-no-scale.png", "rb").read(), "image/png")}
        for value in ("1e6", "inf", "nan", "-1", "0"):
            assert client.post(f"/slide?mpp={value}", files=upload).status_code == 400, value
        assert client.post("/slide?mpp=4", files=upload).status_code == 200

        r = client.post(url, json={"mpp": 4})
        assert r.status_code == 202
        done = wait(client, sid)
        assert done["state"] == "done", done
        assert done["summary"]["mpp"] == 4.0 and done["summary"]["mpp_source"] == "option"
        # another scale for a finished map needs a re-map: never a map at the first scale
        r = client.post(url, json={"mpp": 2})
        assert r.status_code == 409 and "/map/remap" in r.json()["error"]


def test_a_slide_that_records_its_scale_takes_no_other(serve) -> None:
    with serve() as (client, _):
        sid = ids(client)["scaled.tif"]
        r = client.post(f"/api/slides/{sid}/map", json={"mpp": 4})
        assert r.status_code == 400 and "records its own scale (2 µm/px)" in r.json()["error"]


def test_a_scale_other_than_the_one_being_mapped_at_is_409(tiny_bundle: Path,
                                                              tmp_path: Path) -> None:
    """A map under way at one scale answers a request at another with 409, never with its own
    202 (that request's map would come out at the other scale); the same scale joins it."""
    from slide_helpers import texture

    from idcscan.server.app import create_app
    from idcscan.server.routes.viewer import configure_viewer
    from idcscan.server.security import SecurityPolicy

    root = tmp_path / "slides"
    root.mkdir()
    # no scale in the file; at 20 µm/px, 40,000 ten-pixel tiles: still running at the next call
    tissue = texture(np.random.default_rng(0), 2000, 2000, "idc")
    Image.fromarray(tissue).save(root / "section.png")
    app = create_app(tiny_bundle, security=SecurityPolicy())
    configure_viewer(app, root, tmp_path / "maps")
    with TestClient(app, base_url=LOCAL) as client:
        sid = ids(client)["section.png"]
        assert client.post(f"/api/slides/{sid}/map", json={"mpp": 20}).status_code == 202
        other = client.post(f"/api/slides/{sid}/map", json={"mpp": 10})
        assert other.status_code == 409, other.json()
        assert "20 µm/px" in other.json()["error"] and "re-map" in other.json()["error"]
        same = client.post(f"/api/slides/{sid}/map", json={"mpp": 20})
        assert same.status_code in (200, 202)
        if same.status_code == 202:
            assert set(same.json()) == {"state", "done", "total", "error", "warnings"}
            client.post(f"/api/slides/{sid}/map/cancel")
        wait(client, sid)


def test_a_map_of_too_many_tiles_is_refused_before_it_is_queued(serve, slides: Path) -> None:
    with serve(ServerSettings(max_map_tiles=50)) as (client, _):
        sid = ids(client)["scaled.tif"]  # 1200 x 800 px at 2 µm/px: 100 px tiles, 12 x 8
        r = client.post(f"/api/slides/{sid}/map")
        assert r.status_code == 422
        assert "grid of 12 x 8 = 96 tiles" in r.json()["error"]
        assert "at most 50" in r.json()["error"]
        assert client.get(f"/api/slides/{sid}/map").json()["state"] == "none"
        picture = (slides / "tiny-no-scale.png").read_bytes()
        r = client.post("/slide?mpp=20", files={"file": ("p.png", picture, "image/png")})
        assert r.status_code == 200  # 40 x 40 px at 20 µm/px: 4 x 4 tiles
        r = client.post("/slide?mpp=20&stride=1", files={"file": ("p.png", picture, "image/png")})
        assert r.status_code == 422 and "tiles" in r.json()["error"]


def _another_worker_maps(viewer, sid: str, client: str) -> int:
    """Stand in for another server process mapping ``sid`` for ``client``, as it leaves it
    on disk: the slide's job lock held, its progress written, its ticket in the queue."""
    store = viewer.maps
    base = store.root / sid
    base.mkdir(parents=True, exist_ok=True)
    fd = os.open(base / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    (base / JOB_FILE).write_text(json.dumps({"state": "running", "done": 1, "total": 9}))
    JobQueue(store.root, lambda _: True).add(sid, client_key(client))
    return fd


def test_one_map_per_client_and_a_bounded_queue(serve) -> None:
    with serve(ServerSettings(max_map_jobs=2), client_address="10.0.0.7") as (client, viewer):
        listed = ids(client)
        first, second, third = listed["scaled.tif"], listed["other.tif"], listed["large.tif"]
        fd = _another_worker_maps(viewer, first, "10.0.0.7")  # this client's first map
        try:
            r = client.post(f"/api/slides/{second}/map")
            assert r.status_code == 429 and r.headers["Retry-After"] == "10"
            assert f"POST /api/slides/{first}/map/cancel" in r.json()["error"]
            assert client.get(f"/api/slides/{second}/map").json()["state"] == "none"
            # asking again for the map it has under way is no second job
            assert client.post(f"/api/slides/{first}/map").json()["state"] == "running"
            # cancel reaches the process that runs it: a request it reads at its next batch
            r = client.post(f"/api/slides/{first}/map/cancel")
            assert r.status_code == 202 and (viewer.maps.root / first / ".cancel").exists()
            # the queue is shared: with another client's job it is full, for everyone
            fd2 = _another_worker_maps(viewer, second, "10.0.0.8")
            newcomer = TestClient(client.app, base_url=LOCAL, client=("10.0.0.9", 50000))
            try:
                r = newcomer.post(f"/api/slides/{third}/map")
                assert r.status_code == 429 and "as many as this server takes" in r.json()["error"]
            finally:
                os.close(fd2)
        finally:
            os.close(fd)  # those processes die: their tickets go stale and are dropped
        r = client.post(f"/api/slides/{second}/map")
        assert r.status_code == 202
        assert wait(client, second)["state"] == "done"
        # done, the client may map the next one
        r = client.post(f"/api/slides/{first}/map")
        assert r.status_code == 202
        assert wait(client, first)["state"] == "done"


def test_a_running_map_is_cancelled_and_a_finished_one_remapped(serve) -> None:
    with serve() as (client, viewer):
        listed = ids(client)
        large, small = listed["large.tif"], listed["scaled.tif"]
        assert client.post(f"/api/slides/{large}/map/cancel").status_code == 409  # nothing yet
        assert client.post(f"/api/slides/{large}/map").status_code == 202
        r = client.post(f"/api/slides/{large}/map/cancel")
        assert r.status_code in (200, 202)
        status = wait(client, large)
        assert status["state"] == "cancelled", status
        assert status["done"] < status["total"] or status["total"] == 0
        assert viewer.maps.folder(viewer.library.get(large)) is None  # nothing half-made
        assert not (viewer.maps.root / ".queue" / f"{large}.json").exists()

        assert client.post(f"/api/slides/{small}/map").status_code == 202
        first = wait(client, small)
        assert first["state"] == "done"
        again = client.post(f"/api/slides/{small}/map")
        assert again.status_code == 200 and again.json()["state"] == "done"  # kept
        r = client.post(f"/api/slides/{small}/map/remap")
        assert r.status_code == 202 and r.json()["state"] in ("queued", "running")
        second = wait(client, small)
        assert second["state"] == "done"
        assert second["summary"]["n_tiles"] == first["summary"]["n_tiles"]


def test_an_unknown_id_costs_no_folder_walk(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    import idcscan.server.slide_library as slide_library

    walks = []
    real_walk = os.walk

    def counting_walk(*args, **kwargs):
        walks.append(args[0])
        return real_walk(*args, **kwargs)

    monkeypatch.setattr(slide_library.os, "walk", counting_walk)
    with serve() as (client, viewer):
        now = [1000.0]
        viewer.library.clock = lambda: now[0]  # time moves only when the test says
        known = ids(client)["scaled.tif"]
        assert len(walks) == 1
        for n in range(40):
            fake = f"{n:016x}"
            for path in (f"/api/slides/{fake}", f"/slides/{fake}.dzi",
                         f"/slides/{fake}_files/9/0_0.jpeg", f"/slides/{fake}/map/grid.json"):
                assert client.get(path).status_code == 404
            assert client.post(f"/api/slides/{fake}/map").status_code == 404
        assert len(walks) == 1  # 200 unknown ids, no walk
        assert client.get(f"/api/slides/{known}").status_code == 200
        now[0] += viewer.library.rescan_interval_s  # later, an unknown id may rescan, once
        assert client.get("/api/slides/ffffffffffffffff").status_code == 404
        assert client.get("/api/slides/fffffffffffffffe").status_code == 404
        assert len(walks) == 2
        ids(client)  # the listing always looks again
        assert len(walks) == 3


def test_map_files_are_private_and_name_no_server_path(serve, slides: Path,
                                                       tmp_path: Path) -> None:
    with serve() as (client, viewer):
        sid = ids(client)["scaled.tif"]
        assert client.post(f"/api/slides/{sid}/map").status_code == 202
        status = wait(client, sid)
        assert status["state"] == "done"
        folder = viewer.maps.folder(viewer.library.get(sid))
        for path in [viewer.maps.root, folder.parent, *folder.parent.rglob("*")]:
            mode = path.stat().st_mode & 0o777
            assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["path"] == "scaled.tif"
        places = (str(slides), str(slides.resolve()), str(tmp_path), str(tmp_path.resolve()))
        for path in folder.rglob("*"):
            if path.suffix in (".json", ".csv", ".geojson"):
                text = path.read_text()
                assert not any(place in text for place in places), path
        answers = [client.get(p) for p in (
            "/api/slides", f"/api/slides/{sid}", f"/api/slides/{sid}/map",
            f"/slides/{sid}/map/grid.json", f"/slides/{sid}/map/regions.geojson", "/health",
            "/model-card", "/api/slides/nope", f"/slides/{sid}_files/99/0_0.jpeg")]
        for r in answers:
            assert not any(place in r.text for place in places), r.url


def test_a_maps_folder_it_cannot_write_is_named_without_its_path(
        tiny_bundle: Path, slides: Path, tmp_path: Path) -> None:
    from idcscan.server.app import create_app
    from idcscan.server.routes.viewer import configure_viewer
    from idcscan.server.security import SecurityPolicy

    maps = tmp_path / "where-maps-live"
    maps.write_text("a file, not a folder")
    app = create_app(tiny_bundle, security=SecurityPolicy())
    configure_viewer(app, slides, maps)
    with TestClient(app, base_url=LOCAL) as client:
        sid = ids(client)["scaled.tif"]
        r = client.post(f"/api/slides/{sid}/map")
    assert r.status_code == 503 and "Cannot write maps" in r.json()["error"]
    assert str(tmp_path) not in r.text and "where-maps-live" not in r.text


def test_the_pages_scale_fields_take_the_servers_range() -> None:
    import re

    templates = Path(__file__).resolve().parents[2] / "src/idcscan/server/templates"
    for page in ("viewer.html", "slide.html"):
        field = re.search(r'<input type="number" id="mpp-input"[^>]*>',
                          (templates / page).read_text()).group(0)
        assert f'min="{MIN_MPP:g}"' in field and f'max="{MAX_MPP:g}"' in field, page


def test_the_map_body_is_documented_in_the_api_description(serve) -> None:
    with serve() as (client, _):
        spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for route in ("/api/slides/{slide_id}/map", "/api/slides/{slide_id}/map/remap"):
        post = paths[route]["post"]
        assert "requestBody" in post and {"409", "422", "429"} <= set(post["responses"])
    assert "post" in paths["/api/slides/{slide_id}/map/cancel"]
    assert not any(p["name"] == "mpp" for p in paths["/api/slides/{slide_id}/map"]["post"]
                   .get("parameters", []))

