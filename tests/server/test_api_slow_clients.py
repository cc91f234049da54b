"""Clients that send slowly, stop, or vanish mid-upload: the server cuts them off with a 408
and keeps answering everyone else.

The server is uvicorn with ``idcscan serve``'s own configuration (``runtime.uvicorn_config``:
the guarded httptools protocol), on a loopback port in a thread, with deadlines of a second so
the test is short. Nothing here measures time: each socket waits (for at most a minute, a
hang guard) for the server to answer or close, and the assertions are on what arrives.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from idcscan.server.app import create_app
from idcscan.server.runtime import uvicorn_config
from idcscan.server.state import ServerSettings

HANG_GUARD_S = 60.0
BOUNDARY = "slowclientboundary"


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((50, 50, 3), 200, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _body(png: bytes) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="p.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode() + png + f"\r\n--{BOUNDARY}--\r\n".encode()


def _head(length: int) -> bytes:
    return (
        "POST /predict HTTP/1.1\r\nHost: test\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


@pytest.fixture(scope="module")
def server(tiny_bundle) -> Iterator[tuple[str, int]]:
    settings = ServerSettings(header_timeout_s=1.0, upload_idle_timeout_s=1.0,
                              upload_timeout_s=3.0, upload_min_bytes_per_s=1e12)
    app = create_app(tiny_bundle, settings=settings)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn_config(app, "127.0.0.1", sock.getsockname()[1], settings, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + HANG_GUARD_S
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield sock.getsockname()
    finally:
        srv.should_exit = True
        thread.join(timeout=HANG_GUARD_S)
        sock.close()


def _read_until_closed(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    conn.settimeout(HANG_GUARD_S)
    chunks = []
    while True:
        try:
            chunk = conn.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _json_answer(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def _predict_ok(address: tuple[str, int]) -> None:
    url = f"http://{address[0]}:{address[1]}"
    answer = httpx.post(f"{url}/predict", files={"file": ("p.png", _png(), "image/png")},
                        timeout=HANG_GUARD_S)
    assert answer.status_code == 200, answer.text
    assert answer.json()["class_name"] in ("IDC Positive", "IDC Negative")


def test_a_silent_connection_is_closed_with_408(server) -> None:
    with socket.create_connection(server) as conn:
        status, answer = _json_answer(_read_until_closed(conn))
    assert status == 408 and "headers did not arrive" in answer["error"]


def test_headers_that_stop_half_way_get_408(server) -> None:
    with socket.create_connection(server) as conn:
        conn.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Ty")
        status, answer = _json_answer(_read_until_closed(conn))
    assert status == 408 and "headers" in answer["error"]


def test_a_body_that_stops_coming_gets_408_json(server) -> None:
    body = _body(_png())
    with socket.create_connection(server) as conn:
        conn.sendall(_head(len(body)) + body[: len(body) // 2])  # then nothing more
        status, answer = _json_answer(_read_until_closed(conn))
    assert status == 408
    assert "too slowly" in answer["error"] and "Resend" in answer["error"]


def test_a_body_dripped_byte_by_byte_is_cut_off_by_the_total_deadline(server) -> None:
    """Each byte arrives well within the idle limit, but the whole never would."""
    body = _body(_png())
    with socket.create_connection(server) as conn:
        conn.sendall(_head(len(body)))
        conn.settimeout(0.3)
        answer = b""
        for byte in body:
            conn.sendall(bytes([byte]))
            try:
                answer = conn.recv(65536)
            except TimeoutError:
                continue
            break  # the server spoke: it gave up on us
        assert answer, "the server accepted a body dripped for minutes"
        answer += _read_until_closed(conn)
    status, payload = _json_answer(answer)
    assert status == 408 and "too slowly" in payload["error"]


def test_the_server_keeps_answering_while_slow_clients_hang_and_others_vanish(
    server, caplog
) -> None:
    body = _body(_png())
    caplog.set_level(logging.ERROR)
    hanging = [socket.create_connection(server) for _ in range(32)]  # slowloris: say nothing
    try:
        for i in range(20):  # clients that disconnect mid-upload, at different points
            with socket.create_connection(server) as conn:
                conn.sendall(_head(len(body)) + body[: (i * len(body)) // 20])
        for conn in hanging[:8]:
            conn.sendall(b"POST /predict HTTP/1.1\r\n")  # and some that started, slowly
        for _ in range(3):
            _predict_ok(server)  # everyone else is still served
    finally:
        for conn in hanging:
            conn.close()
    _predict_ok(server)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
