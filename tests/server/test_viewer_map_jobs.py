"""Map jobs shared by every `serve --slides` worker process: one process maps a slide, any
process answers its progress, and a job whose process died is reported, not left "running".

Two ``MapStore`` objects over one maps folder stand for two worker processes: ``flock``
locks belong to open files, so they exclude each other within one process just as across
processes. The killed-worker case uses a real process and SIGKILL.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from idcscan.runtime.predictor import Predictor
from idcscan.server.map_jobs import JOB_FILE, LOCK_FILE, MapStore
from idcscan.server.slide_library import SlideEntry, SlideLibrary


@pytest.fixture()
def slide(tmp_path: Path) -> SlideEntry:
    from idcscan.data.synthetic_slide import write_synthetic_wsi

    root = tmp_path / "slides"
    root.mkdir()
    write_synthetic_wsi(root / "one.tif", 1200, 800, mpp=2.0, min_level_side=400)
    (entry,) = SlideLibrary(root).entries()
    return entry


def _wait_for(store: MapStore, entry: SlideEntry, states: tuple[str, ...]) -> dict:
    deadline = time.monotonic() + 300  # a hang guard, not a timing assertion
    while (status := store.status(entry))["state"] not in states:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    return status


def test_a_job_running_in_another_process_is_seen_and_not_started_twice(
        tiny_bundle: Path, slide: SlideEntry, tmp_path: Path) -> None:
    predictor = Predictor(tiny_bundle, threads=1)
    a, b = MapStore(tmp_path / "maps", predictor), MapStore(tmp_path / "maps", predictor)
    base = a.root / slide.id
    base.mkdir(parents=True)
    # "process A" holds the slide's lock and has written its progress
    fd = os.open(base / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    (base / JOB_FILE).write_text(json.dumps({"state": "running", "done": 3, "total": 10,
                                             "error": None, "warnings": []}))
    try:
        assert b.status(slide) == {"state": "running", "done": 3, "total": 10, "error": None,
                                   "warnings": []}
        assert b.start(slide)["state"] == "running"  # answered from A's job ...
        assert b._jobs == {}                           # ... and no second job started
    finally:
        os.close(fd)  # A stops without finishing
    stale = b.status(slide)
    assert stale["state"] == "failed" and "start the map again" in stale["error"]

    assert b.start(slide)["state"] in ("queued", "running", "done")
    done = _wait_for(b, slide, ("done", "failed"))
    assert done["state"] == "done", done
    assert a.status(slide)["state"] == "done"  # the other process sees the finished folder
    assert a.start(slide) == {"state": "done", "done": 0, "total": 0, "error": None,
                              "warnings": []}
    on_disk = json.loads((base / JOB_FILE).read_text())
    assert on_disk["state"] == "done" and on_disk["done"] == on_disk["total"] > 0
    a.close(), b.close()


def test_a_worker_killed_mid_map_is_reported_as_failed_and_the_map_can_restart(
        tiny_bundle: Path, slide: SlideEntry, tmp_path: Path) -> None:
    store = MapStore(tmp_path / "maps", Predictor(tiny_bundle, threads=1))
    base = store.root / slide.id
    base.mkdir(parents=True)
    (base / JOB_FILE).write_text(json.dumps({"state": "running", "done": 1, "total": 9}))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(base / LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert store.status(slide)["state"] == "running"
        assert store.start(slide)["state"] == "running" and store._jobs == {}
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    status = store.status(slide)
    assert status["state"] == "failed" and "stopped before it finished" in status["error"]
    store.start(slide)
    assert _wait_for(store, slide, ("done", "failed"))["state"] == "done"
    store.close()


def test_mapping_gets_every_core_even_when_a_worker_serves_with_one(
        tiny_bundle: Path, tmp_path: Path) -> None:
    serving = Predictor(tiny_bundle, threads=1)
    mapper = MapStore(tmp_path, serving)._map_predictor()
    cores = os.cpu_count() or 1
    assert mapper.engine.info.threads == cores
    assert (mapper is serving) == (cores == 1)


def test_an_earlier_failure_here_does_not_hide_a_map_made_by_another_worker(
        tiny_bundle: Path, slide: SlideEntry, tmp_path: Path) -> None:
    predictor = Predictor(tiny_bundle, threads=1)
    a, b = MapStore(tmp_path / "maps", predictor), MapStore(tmp_path / "maps", predictor)
    hidden = slide.path.with_name("away.bin")
    slide.path.rename(hidden)  # the file is gone for a moment: this worker's job fails
    a.start(slide)
    assert _wait_for(a, slide, ("done", "failed"))["state"] == "failed"
    hidden.rename(slide.path)
    b.start(slide)  # the retry lands on another worker
    assert _wait_for(b, slide, ("done", "failed"))["state"] == "done"
    assert a.status(slide)["state"] == "done"  # not its own stale failure
    a.close(), b.close()


def test_an_unwritable_maps_folder_is_a_one_line_failure_not_a_stuck_job(
        tiny_bundle: Path, slide: SlideEntry, tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text("a file where the maps folder should be")  # unwritable, even for root
    store = MapStore(maps, Predictor(tiny_bundle, threads=1))
    started = store.start(slide)
    assert started["state"] == "failed" and "Cannot write maps" in started["error"]
    assert "\n" not in started["error"] and store._locks == {}
    assert store.status(slide)["state"] == "none"  # nothing left queued


def test_the_map_route_answers_503_with_the_reason_when_a_map_cannot_start(
        tiny_bundle: Path, slide: SlideEntry, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from idcscan.server.app import create_app
    from idcscan.server.routes.viewer import configure_viewer

    maps = tmp_path / "maps"
    maps.write_text("not a folder")
    app = create_app(tiny_bundle)
    configure_viewer(app, slide.path.parent, maps)
    with TestClient(app) as client:
        r = client.post(f"/api/slides/{slide.id}/map")
    assert r.status_code == 503
    assert r.json()["state"] == "failed" and "Cannot write maps" in r.json()["error"]
