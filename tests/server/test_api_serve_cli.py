"""`idcscan serve`: starts uvicorn, prints URL, disclaimer and the demo banner; clear errors."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from idcscan import DISCLAIMER
from idcscan.runtime.bundle import load_bundle, write_card
from idcscan.runtime.shipped import examples_dir

LAUNCH = [sys.executable, "-c", "from idcscan.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_prints_url_disclaimer_and_demo_banner(tiny_bundle: Path, tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    shutil.copytree(tiny_bundle, demo)
    card = load_bundle(demo).card
    write_card(card.model_copy(update={"demo": True}), demo)  # re-sealed, as `demo` does
    port = free_port()
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    log = tmp_path / "serve.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [*LAUNCH, "serve", str(demo), "--port", str(port), "--max-upload-mb", "1"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 300  # a hang guard, not a speed test
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health is not None, log.read_text()
        assert health["demo"] is True and health["limits"]["max_upload_mb"] == 1.0
        # the engine "auto" settles on, the same in every worker process
        from idcscan.runtime.engine import auto_runtime

        assert health["runtime"]["engine"] == auto_runtime(load_bundle(demo).onnx_path)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    text = " ".join(log.read_text().split())
    assert f"http://127.0.0.1:{port}/" in text
    assert " ".join(DISCLAIMER.split()) in text
    assert "DEMO MODEL" in text and "synthetic" in text


def test_serve_refuses_an_unknown_engine_before_listening(tiny_bundle: Path) -> None:
    env = {**os.environ, "IDCSCAN_RUNTIME": "tensorrt", "COLUMNS": "200"}
    run = subprocess.run([*LAUNCH, "serve", str(tiny_bundle), "--port", str(free_port())],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 2
    assert "IDCSCAN_RUNTIME must be one of auto, onnxruntime, openvino" in run.stderr


def test_serve_refuses_a_busy_port_and_a_missing_bundle(tiny_bundle: Path, tmp_path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run(
            [*LAUNCH, "serve", str(tiny_bundle), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "200"},
        )
    assert run.returncode == 2 and "already in use" in run.stderr
    missing = subprocess.run(
        [*LAUNCH, "serve", str(tmp_path / "nope")], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2 and "No model bundle" in " ".join(missing.stderr.split())


@pytest.mark.skipif(examples_dir() is None, reason="examples not installed")
def test_serve_examples_offers_the_example_section_and_maps_it(tiny_bundle: Path,
                                                                tmp_path: Path) -> None:
    """What `make demo` serves: the real section in the slide browser, its map one click away
    (written under the user's cache, never into the installed package)."""
    port = free_port()
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "XDG_CACHE_HOME": str(tmp_path)}
    log = tmp_path / "serve.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([*LAUNCH, "serve", str(tiny_bundle), "--port", str(port),
                                 "--examples", "--workers", "1"],
                                stdout=fh, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # a hang guard, not a speed test
        slides = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                slides = httpx.get(base + "/api/slides", timeout=5).json()
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert slides is not None, log.read_text()
        (section,) = slides
        browse = " ".join(httpx.get(base + "/browse", timeout=30).text.split())
        assert "Kaggle patient 9083" in browse and "training data" in browse and "CC0" in browse
        assert section["name"] == "kaggle-patient-9083" and section["mpp"] == 4.0
        started = httpx.post(f"{base}/api/slides/{section['id']}/map", timeout=30)
        assert started.status_code in (200, 202), started.text
        status = started.json()
        while time.monotonic() < deadline and status["state"] not in ("done", "failed"):
            time.sleep(0.5)
            status = httpx.get(f"{base}/api/slides/{section['id']}/map", timeout=30).json()
        assert status["state"] == "done", status
        summary = httpx.get(f"{base}/api/slides/{section['id']}", timeout=30).json()
        assert summary["map"]["summary"]["mpp"] == 4.0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert "The example section: browse it at" in " ".join(log.read_text().split())
    assert not any(p.name == "maps" for p in examples_dir().rglob("*"))  # the package untouched
    assert any((tmp_path / "idcscan").rglob("summary.json"))
