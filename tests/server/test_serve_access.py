"""`idcscan serve` beyond loopback: it makes a token, prints the address people can really open
(with the token), refuses requests without it in every worker process, keeps it out of the
access log, serves TLS when given a certificate, and warns where it should (no token, running
as root)."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from idcscan.server.access import running_as_root

LAUNCH = [sys.executable, "-c", "from idcscan.cli import main; main()"]
ENV = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def patch_png() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((50, 50, 3), 180, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class Served:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with open(log, "w") as fh:
            self.proc = subprocess.Popen([*LAUNCH, "serve", *args], stdout=fh,
                                         stderr=subprocess.STDOUT, env=ENV)

    def text(self) -> str:
        return " ".join(self.log.read_text().split())

    def wait_until(self, probe) -> None:
        deadline = time.monotonic() + 300  # a hang guard, not a speed test
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                probe()
                return
            except (httpx.TransportError, ssl.SSLError):
                time.sleep(0.2)
        raise AssertionError(self.log.read_text())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from idcscan.data.synthetic_slide import write_synthetic_wsi

    root = tmp_path_factory.mktemp("served-slides")
    write_synthetic_wsi(root / "case.tif", 1200, 800, mpp=2.0, min_level_side=400)
    return root


def test_beyond_loopback_serve_makes_a_token_and_prints_the_real_address(
        tiny_bundle: Path, slides: Path, tmp_path: Path) -> None:
    port = free_port()
    served = Served([str(tiny_bundle), "--host", "0.0.0.0", "--port", str(port), "--workers",
                     "2", "--slides", str(slides), "--maps", str(tmp_path / "maps"),
                     "--access-log"], tmp_path / "serve.log")
    local = f"http://127.0.0.1:{port}"
    try:
        served.wait_until(lambda: httpx.get(f"{local}/static/style.css", timeout=5))
        text = served.text()
        url = re.search(r"serving .*? at (\S+/\?token=\S+)", text).group(1)
        parts = urlsplit(url)
        assert parts.hostname == socket.gethostname() and parts.port == port
        assert "127.0.0.1" not in text.split("Research use only")[0]  # no misleading line
        token = parts.query.removeprefix("token=")
        assert len(token) >= 32
        assert f"browse them at {parts.scheme}://{parts.netloc}/browse?token={token}" in text
        from idcscan.server.access import interface_addresses

        for address in interface_addresses():  # what colleagues type when the name fails
            if ":" in address:
                assert address not in text  # bound to 0.0.0.0: IPv6 leads nowhere
                continue
            shown = f"[{address}]" if ":" in address else address
            assert f"also at http://{shown}:{port}/?token={token}" in text
        assert "A token was generated" in text and "unencrypted" in text
        assert ("Running as root" in text) == running_as_root()
        # requests as the printed address makes them (the machine's name in Host)
        host = {"host": parts.netloc}
        bearer = {**host, "authorization": f"Bearer {token}"}
        with httpx.Client(base_url=local, timeout=60) as http:
            for _ in range(4):  # both worker processes, whichever answers
                assert http.get("/api/slides", headers=host).status_code == 401
                listing = http.get("/api/slides", headers=bearer)
                assert listing.status_code == 200
            sid = listing.json()[0]["id"]
            tile = f"/slides/{sid}_files/9/0_0.jpeg"
            assert http.get(tile, headers=host).status_code == 401
            assert http.get(tile, headers=bearer).status_code == 200
            files = {"file": ("p.png", patch_png(), "image/png")}
            assert http.post("/predict", files=files, headers=host).status_code == 401
            answer = http.post("/predict", files=files, headers=bearer)
            assert answer.status_code == 200 and answer.json()["class_name"] in (
                "IDC Positive", "IDC Negative")
            # the browser's way in: the printed address, then a cookie
            first = http.get(f"/?token={token}", headers={**host, "sec-fetch-mode": "navigate"})
            assert first.status_code == 303 and "HttpOnly" in first.headers["set-cookie"]
            assert http.get("/api/slides", headers={"host": "evil.example"}).status_code == 400
    finally:
        served.stop()
    # the access log has the request, not the token (printed once, at start-up)
    log = served.text()
    assert '"GET /?token=[redacted] HTTP/1.1" 303' in log
    startup, _, served_lines = log.partition("Research use only")
    assert token in startup and token not in served_lines  # printed at start-up only


def test_no_token_beyond_loopback_is_warned_and_a_clash_refused(
        tiny_bundle: Path, tmp_path: Path) -> None:
    clash = subprocess.run([*LAUNCH, "serve", str(tiny_bundle), "--token", "abc",
                            "--no-token", "--port", str(free_port())],
                           capture_output=True, text=True, timeout=120, env=ENV)
    assert clash.returncode == 2 and "choose one" in clash.stderr
    port = free_port()
    served = Served([str(tiny_bundle), "--host", "0.0.0.0", "--port", str(port),
                     "--workers", "1", "--no-token"], tmp_path / "open.log")
    try:
        served.wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
                          .raise_for_status())
        assert f"--no-token on 0.0.0.0: anyone who can reach port {port}" in served.text()
        assert "The slides cross the network unencrypted" in served.text()
        assert "?token=" not in served.text()
    finally:
        served.stop()


def _certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=120)
    return cert, key


def test_serve_speaks_tls_with_a_certificate_and_refuses_a_bad_one(
        tiny_bundle: Path, tmp_path: Path) -> None:
    if not any((Path(p) / "openssl").exists() for p in os.environ["PATH"].split(os.pathsep)):
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = _certificate(tmp_path)
    bad = subprocess.run([*LAUNCH, "serve", str(tiny_bundle), "--certfile", str(key),
                          "--keyfile", str(cert), "--port", str(free_port())],
                         capture_output=True, text=True, timeout=120, env=ENV)
    assert bad.returncode == 2 and "Cannot use" in bad.stderr
    port = free_port()
    token = "a-token-chosen-by-the-lab-0123"
    served = Served([str(tiny_bundle), "--port", str(port), "--workers", "1", "--certfile",
                     str(cert), "--keyfile", str(key), "--token", token], tmp_path / "tls.log")
    context = ssl.create_default_context(cafile=str(cert))
    base = f"https://127.0.0.1:{port}"
    try:
        served.wait_until(lambda: httpx.get(f"{base}/static/style.css", verify=context,
                                            timeout=5))
        assert f"at {base}/?token={token}" in served.text()
        assert "unencrypted" not in served.text()
        with httpx.Client(base_url=base, verify=context, timeout=60) as http:
            assert http.get("/health").status_code == 401
            assert http.get("/health", headers={"authorization": f"Bearer {token}"}
                            ).status_code == 200
            swap = http.get(f"/?token={token}", headers={"sec-fetch-mode": "navigate"})
            assert swap.status_code == 303 and "Secure" in swap.headers["set-cookie"]
        with pytest.raises(httpx.TransportError):  # plain HTTP on the TLS port
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
    finally:
        served.stop()
