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

from idcscan import DISCLAIMER
from idcscan.runtime.bundle import load_bundle, write_card

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
