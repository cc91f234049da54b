"""``idcscan download`` without a network: fails at once with instructions, never hangs."""

from __future__ import annotations

import socket
import time

import pytest

from idcscan.data.kaggle import _endpoint_reachable, download
from idcscan.errors import IdcscanError


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DNS and no route anywhere: what an air-gapped machine looks like to Python."""

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def no_route(self, address):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(socket.socket, "connect", no_route)


def test_offline_download_fails_fast_with_what_to_do(offline, tmp_path, monkeypatch) -> None:
    def no_waiting(seconds: float) -> None:  # "fast" = no retry loop that sleeps
        raise AssertionError(f"slept {seconds} s instead of failing at once")

    monkeypatch.setattr(time, "sleep", no_waiting)
    with pytest.raises(IdcscanError) as err:
        download(tmp_path / "kaggle")
    message = str(err.value)
    assert "paultimothymooney/breast-histopathology-images" in message
    assert "cannot reach" in message
    assert "idcscan prepare PATH" in message
    assert "KAGGLE_USERNAME" in message


def test_a_silent_network_is_given_up_on_after_the_timeout() -> None:
    """kagglehub itself sends without a timeout; the reachability probe must not hang.

    A listening socket whose accept queue is full drops further SYNs, exactly like a network
    that swallows packets.
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = [socket.create_connection(server.getsockname())]
    extra = socket.socket()
    extra.setblocking(False)
    extra.connect_ex(server.getsockname())
    fillers.append(extra)
    try:
        # Without its timeout the probe would wait minutes for the kernel to give up; with it
        # the call returns (pytest-timeout would fail a hang) and says why.
        reason = _endpoint_reachable(f"http://127.0.0.1:{server.getsockname()[1]}", timeout=1.0)
        assert reason is not None and "cannot reach" in reason
        assert "timed out" in reason
    finally:
        for f in fillers:
            f.close()
        server.close()
