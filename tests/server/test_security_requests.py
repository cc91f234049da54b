"""Who may talk to the server: real requests against the app, as a hospital IT reviewer sends
them. A foreign Host is a 400 (DNS rebinding), a change from another site a 403 (CSRF),
a server bound beyond loopback answers nothing without its token (401), and every answer
carries the security headers; patient data is never cached by anyone but the browser.
FastAPI's own OpenTelemetry is off: nothing leaves the machine."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from idcscan.server.access import plan_access
from idcscan.server.security import RedactTokens, SecurityPolicy

LOCAL = "http://127.0.0.1:5000"


def patch_png() -> bytes:
    buf = io.BytesIO()
    rgb = np.random.default_rng(0).integers(0, 255, (50, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from idcscan.data.synthetic_slide import write_synthetic_wsi

    root = tmp_path_factory.mktemp("guarded-slides")
    write_synthetic_wsi(root / "case-17.tif", 1200, 800, mpp=2.0, min_level_side=400)
    return root


@pytest.fixture(scope="module")
def make_client(tiny_bundle: Path, slides: Path, tmp_path_factory: pytest.TempPathFactory):
    """``make_client(policy, base_url)``: the app with its viewer, as served with ``policy``."""
    from idcscan.server.app import create_app
    from idcscan.server.routes.viewer import configure_viewer

    def make(policy: SecurityPolicy, base_url: str = LOCAL) -> TestClient:
        app = create_app(tiny_bundle, security=policy)
        configure_viewer(app, slides, tmp_path_factory.mktemp("maps"))
        return TestClient(app, base_url=base_url, follow_redirects=False)

    return make


@pytest.fixture(scope="module")
def local(make_client) -> Iterator[TestClient]:
    """Loopback, no token: ``idcscan serve`` with its defaults."""
    with make_client(SecurityPolicy()) as client:
        yield client


def slide_id(client: TestClient, **headers: str) -> str:
    (slide,) = client.get("/api/slides", headers=headers).json()
    return slide["id"]


def test_a_foreign_host_is_refused_on_every_route(local: TestClient) -> None:
    sid = slide_id(local)
    evil = {"host": "evil.example:5000"}
    for method, path in (("GET", "/api/slides"), ("GET", f"/slides/{sid}_files/9/0_0.jpeg"),
                         ("GET", "/health"), ("GET", "/"), ("GET", "/docs"),
                         ("GET", "/static/style.css"), ("POST", "/predict")):
        r = local.request(method, path, headers=evil)
        assert r.status_code == 400, (method, path)
        assert "does not answer to the host name 'evil.example'" in r.json()["error"]
        assert "--allowed-host evil.example" in r.json()["error"]
    for host in ("localhost:5000", "127.0.0.1:5000", "[::1]:5000", "127.0.0.2", "LOCALHOST",
                 "viewer.localhost:5000"):
        assert local.get("/api/slides", headers={"host": host}).status_code == 200, host


def test_allowed_hosts_take_names_and_domain_wildcards(make_client) -> None:
    from idcscan.errors import IdcscanError

    policy = SecurityPolicy(allowed_hosts=("lab.example", "*.hospital.org"))
    with make_client(policy) as client:
        for host, status in (("lab.example:5000", 200), ("Lab.Example", 200),
                             ("ward.hospital.org", 200), ("a.b.hospital.org:443", 200),
                             ("hospital.org.evil.com", 400), ("evil-lab.example", 400),
                             ("hospital.org", 400)):
            assert client.get("/health", headers={"host": host}).status_code == status, host
    with pytest.raises(IdcscanError, match="--allowed-host"):
        SecurityPolicy(allowed_hosts=("lab*.example",))


def test_a_cross_origin_change_is_refused_and_scripts_are_not(local: TestClient) -> None:
    sid = slide_id(local)
    upload = {"file": ("patch.png", patch_png(), "image/png")}
    script = local.post("/predict", files=upload)  # curl, the seed's clients: no Origin
    assert script.status_code == 200
    for headers in ({"origin": "http://evil.example"}, {"origin": "null"},
                    {"referer": "http://evil.example/page.html"},
                    {"origin": "http://127.0.0.1:5001"}, {"origin": "http://localhost:5000"}):
        r = local.post("/predict", files=upload, headers=headers)
        assert r.status_code == 403, headers
        assert "from another site" in r.json()["error"]
    # the form a hostile page can send without asking the browser first
    r = local.post(f"/api/slides/{sid}/map", data={"mpp": "4"},
                   headers={"origin": "http://evil.example"})
    assert r.status_code == 403
    assert local.get(f"/api/slides/{sid}/map").json()["state"] == "none"  # nothing started
    # the server's own pages: the same requests succeed, answers unchanged
    own = local.post("/predict", files=upload, headers={"origin": LOCAL})
    assert own.status_code == 200 and own.json() == script.json()
    assert local.post("/predict", files=upload,
                      headers={"referer": f"{LOCAL}/"}).status_code == 200
    # reads are not changes (and the browser keeps their answers from the other site)
    assert local.get("/health", headers={"origin": "http://evil.example"}).status_code == 200


def test_beyond_loopback_nothing_answers_without_the_token(make_client) -> None:
    access = plan_access("0.0.0.0", 5000)  # serve --host 0.0.0.0, no --token
    token = access.policy.token
    assert access.generated and token and len(token) >= 32
    assert not any("127.0.0.1" in url for url in access.urls)
    with make_client(access.policy, base_url=access.bases[0]) as client:
        bearer = {"authorization": f"Bearer {token}"}
        sid = slide_id(client, **bearer)
        upload = {"file": ("patch.png", patch_png(), "image/png")}
        routes = (("POST", "/predict"), ("GET", "/api/slides"),
                  ("GET", f"/slides/{sid}_files/9/0_0.jpeg"), ("GET", "/health"),
                  ("GET", "/docs"), ("GET", "/openapi.json"))
        for method, path in routes:
            files = upload if method == "POST" else None
            r = client.request(method, path, files=files)
            assert r.status_code == 401, path
            assert "needs its token" in r.json()["error"]
            assert r.headers["www-authenticate"].startswith("Bearer")
            wrong = client.request(method, path, files=files,
                                   headers={"authorization": "Bearer not-the-token"})
            assert wrong.status_code == 401
            assert client.request(method, path, files=files, headers=bearer).status_code == 200
        tile = client.get(f"/slides/{sid}_files/9/0_0.jpeg", headers=bearer)
        assert tile.headers["content-type"] == "image/jpeg"
        assert client.get("/static/viewer.js").status_code == 200  # assets need no token


def test_bound_to_every_interface_the_machines_own_addresses_are_answered(make_client
                                                                          ) -> None:
    """A colleague who types the server's LAN address (the host name may not resolve for
    them, and Debian maps it to 127.0.1.1) reaches it; the address is printed too."""
    import ipaddress
    import socket

    import psutil

    own = [a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs
           if a.family in (socket.AF_INET, socket.AF_INET6)]
    lan = [a for a in own if not (ipaddress.ip_address(a).is_loopback
                                  or ipaddress.ip_address(a).is_link_local)]
    if not lan:
        pytest.skip("this machine has no non-loopback interface address")
    for bind, expected in (("0.0.0.0", [a for a in lan if ":" not in a]), ("::", lan)):
        access = plan_access(bind, 5000)  # IPv4 only on 0.0.0.0; both on ::
        token = access.policy.token
        shown = [f"[{a}]" if ":" in a else a for a in expected]
        assert {f"http://{s}:5000/?token={token}" for s in shown} <= set(access.urls)
        assert all("[" not in url for url in access.urls) or bind == "::"
    with make_client(access.policy) as client:
        bearer = {"authorization": f"Bearer {token}"}
        for address in lan:
            host = f"[{address}]:5000" if ":" in address else f"{address}:5000"
            assert client.get("/api/slides", headers={**bearer, "host": host}
                              ).status_code == 200, host
        assert client.get("/api/slides", headers={**bearer, "host": "evil.example"}
                          ).status_code == 400


def test_the_browser_trades_the_token_url_for_a_strict_cookie(make_client) -> None:
    token = "correct-horse-battery-staple-42"
    navigate = {"sec-fetch-mode": "navigate", "sec-fetch-site": "none",
                "accept": "text/html,application/xhtml+xml"}
    with make_client(SecurityPolicy(token=token)) as client:
        r = client.get(f"/browse?view=all&token={token}", headers=navigate)
        assert r.status_code == 303
        assert r.headers["location"] == "/browse?view=all"  # the token leaves the address bar
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie and token not in cookie
        name, value = cookie.split(";")[0].split("=", 1)
        client.cookies.set(name, value)
        assert client.get("/api/slides").status_code == 200
        page = client.get("/browse", headers=navigate)
        assert page.status_code == 200 and "Research use only" in page.text
        # the printed address opened again by a browser signed in already: the token still
        # leaves the address bar (a page shown with it would put it on screen and in history)
        again = client.get(f"/viewer?slide=x&token={token}", headers=navigate)
        assert again.status_code == 303 and again.headers["location"] == "/viewer?slide=x"
        client.cookies.clear()
        # no token: a page that says how to get in, not a JSON blob
        page = client.get("/browse", headers=navigate)
        assert page.status_code == 401 and "text/html" in page.headers["content-type"]
        assert "?token=" in page.text
        # a link from another site: a page that reloads itself, so the cookie is sent
        r = client.get(f"/viewer?slide=x&token={token}",
                       headers={**navigate, "sec-fetch-site": "cross-site"})
        assert r.status_code == 200 and "set-cookie" in r.headers
        assert 'http-equiv="refresh" content="0; url=/viewer?slide=x"' in r.text
        # a script with ?token=: served, nothing kept; a change never takes ?token=
        client.cookies.clear()
        script = client.get(f"/api/slides?token={token}")
        assert script.status_code == 200 and "set-cookie" not in script.headers
        assert client.post(f"/predict?token={token}",
                           files={"file": ("p.png", patch_png(), "image/png")}).status_code == 401
        # never a redirect to another host
        r = client.get(f"//evil.example/?token={token}", headers=navigate)
        assert urlsplit(r.headers["location"]).netloc == ""
    with make_client(SecurityPolicy(token=token), base_url="https://127.0.0.1:5000") as tls:
        r = tls.get(f"/?token={token}", headers=navigate)
        assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]


def _wait_done(client: TestClient, sid: str) -> dict:
    deadline = time.monotonic() + 300  # a hang guard, not a timing assertion
    while (status := client.get(f"/api/slides/{sid}/map").json())["state"] not in (
            "done", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
    return status


def test_every_answer_carries_the_security_headers(local: TestClient) -> None:
    sid = slide_id(local)
    assert local.post(f"/api/slides/{sid}/map").status_code == 202
    assert _wait_done(local, sid)["state"] == "done"
    answers = {
        path: local.get(path) for path in (
            "/", "/browse", f"/viewer?slide={sid}", "/static/slide.html", "/docs", "/health",
            "/api/slides", f"/api/slides/{sid}", f"/api/slides/{sid}/map",
            f"/slides/{sid}.dzi", f"/slides/{sid}_files/9/0_0.jpeg",
            f"/slides/{sid}/thumbnail.jpeg", f"/slides/{sid}/map/overlay.png",
            f"/slides/{sid}/map/qc.png", f"/slides/{sid}/map/grid.json",
            f"/slides/{sid}/map/regions.geojson", "/static/viewer.js", "/no/such/page")
    }
    answers["POST /predict"] = local.post(
        "/predict", files={"file": ("p.png", patch_png(), "image/png")})
    for path, r in answers.items():
        assert r.status_code in (200, 404), path
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        script = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
        assert script.strip() == "script-src 'self'", path  # no inline script, no eval
        assert "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["referrer-policy"] == "no-referrer", path
        assert r.headers["x-frame-options"] == "DENY", path
    private = {f"/slides/{sid}_files/9/0_0.jpeg", f"/slides/{sid}/thumbnail.jpeg"}
    for path, r in answers.items():
        cache = r.headers.get("cache-control", "")
        if path in private:
            assert cache == "private, max-age=3600", path
        elif path.startswith("/static/"):  # assets (and the large-image page, the same for all)
            assert "no-store" not in cache
        else:
            assert cache == "no-store", path
    # the refusals carry them too
    refused = local.get("/api/slides", headers={"host": "evil.example"})
    assert refused.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in refused.headers["content-security-policy"]


def test_redoc_styles_are_admitted_by_a_fresh_nonce(local: TestClient) -> None:
    first, second = local.get("/redoc"), local.get("/redoc")
    nonces = []
    for r in (first, second):
        csp = r.headers["content-security-policy"]
        style = next(d for d in csp.split(";") if d.strip().startswith("style-src"))
        (nonce,) = [t[len("'nonce-"):-1] for t in style.split() if t.startswith("'nonce-")]
        assert f'<script src="/static/docs.js" nonce="{nonce}"></script>' in r.text
        assert "<script>" not in r.text and "<style" not in r.text
        nonces.append(nonce)
    assert nonces[0] != nonces[1]
    assert "<script>" not in local.get("/docs").text


def test_the_access_log_never_shows_a_token() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("10.0.0.7:5123", "GET", "/viewer?slide=ab&token=s3cret-token&x=1", "1.1", 303), None)
    assert RedactTokens().filter(record)
    line = record.getMessage()
    assert "s3cret-token" not in line and "token=[redacted]&x=1" in line


TELEMETRY_PROBE = textwrap.dedent("""
    import os, sys
    from opentelemetry import trace
    from opentelemetry.trace import NoOpTracer

    spans = []

    class Recording(NoOpTracer):
        def start_span(self, name, *args, **kwargs):
            spans.append(name)
            return super().start_span(name, *args, **kwargs)

    class Provider(trace.TracerProvider):
        def get_tracer(self, *args, **kwargs):
            return Recording()

    # what an OpenTelemetry agent or another library in the process would have set up
    trace.set_tracer_provider(Provider())
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    if sys.argv[1] == "plain":
        app = FastAPI()
        app.get("/health")(lambda: {"status": "ok"})
    else:
        from idcscan.server.app import create_app
        app = create_app(sys.argv[2])
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/health").status_code == 200
        client.post("/predict")  # a validation failure: its body would be recorded too
    print(len(spans))
""")


def test_fastapi_telemetry_is_off(tiny_bundle: Path) -> None:
    import fastapi

    if not (Path(fastapi.__file__).parent / "telemetry").is_dir():
        pytest.skip(f"FastAPI {fastapi.__version__} has no telemetry of its own to turn off")
    env_keys = {"FASTAPI_OTEL_AUTO_CONFIGURE": "true",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9/"}
    import os

    env = {**os.environ, **env_keys}
    runs = {}
    for kind in ("plain", "idcscan"):
        run = subprocess.run([sys.executable, "-c", TELEMETRY_PROBE, kind, str(tiny_bundle)],
                             capture_output=True, text=True, timeout=300, env=env)
        assert run.returncode == 0, run.stderr
        runs[kind] = int(run.stdout.split()[-1])
    assert runs["plain"] > 0  # FastAPI left alone records every request ...
    assert runs["idcscan"] == 0  # ... idcscan's app records none
