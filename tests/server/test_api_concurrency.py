"""Concurrent clients share model calls (micro-batching), through ASGI and a real uvicorn."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from idcscan.runtime.predictor import Predictor
from idcscan.server.app import create_app
from idcscan.server.state import ServerSettings


def png(arr: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(33)
    return [rng.integers(0, 256, (50, 50, 3), dtype=np.uint8) for _ in range(24)]


async def post_all(client: httpx.AsyncClient, images: list[np.ndarray]) -> list[dict]:
    calls = (client.post("/predict", files={"file": ("p.png", png(a))}) for a in images)
    responses = await asyncio.gather(*calls)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    return [r.json() for r in responses]


def test_concurrent_requests_are_batched_and_answers_equal_single(tiny_bundle, images) -> None:
    app = create_app(tiny_bundle, settings=ServerSettings(batch_wait_ms=5.0))
    state = app.state.idcscan

    async def main() -> tuple[list[dict], list[dict]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            together = await post_all(client, images)
            alone = [(await post_all(client, [a]))[0] for a in images[:6]]
        return together, alone

    together, alone = asyncio.run(main())
    stats = state.batcher.stats
    assert stats.largest_batch > 1, stats
    assert stats.batches < len(images) + 6
    # A batched answer equals the single one, and both equal Predictor on the patch.
    assert together[:6] == alone
    predictor = Predictor(tiny_bundle)
    direct = predictor.predict_proba(np.stack(images))
    for body, p in zip(together, direct):
        assert abs(body["probability_positive"] - float(p) * 100) <= 0.005 + 1e-9


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(tiny_bundle: Path):
    """A real uvicorn on a free localhost port, in a thread."""
    app = create_app(tiny_bundle, settings=ServerSettings(max_upload_mb=0.05, batch_wait_ms=5.0))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300  # a hang guard, not a speed test
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(timeout=10)


def test_real_server_batches_concurrent_clients(live_server, images) -> None:
    url, app = live_server

    async def main() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            await post_all(client, images)
            health = (await client.get("/health")).json()
            assert health["batching"]["largest_batch"] > 1
            assert health["batching"]["items"] >= len(images)

    asyncio.run(main())


def test_real_server_refuses_a_large_upload_by_its_length(live_server) -> None:
    """The answer comes from the headers alone: the client has not sent a byte of the body."""
    url, _ = live_server
    host, port = url.removeprefix("http://").split(":")
    head = (
        "POST /predict HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "Content-Type: multipart/form-data; boundary=abc\r\n"
        "Content-Length: 500000000\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(head.encode())
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    status_line, _, rest = raw.partition(b"\r\n")
    assert status_line.split()[1] == b"413"
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in headers.lower()
    assert "limit" in json.loads(body)["error"]
    # The server is still fine afterwards.
    assert httpx.get(f"{url}/health", timeout=30).json()["status"] == "ok"
