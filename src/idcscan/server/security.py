"""Who may talk to the server, and what every answer tells the browser.

One ASGI middleware (``SecurityMiddleware``), outermost in the app, applies ``SecurityPolicy``
to every request before any route sees it:

* **Host allow-list** (DNS rebinding): a page on ``evil.example`` whose name an attacker
  points at 127.0.0.1 reaches the server with ``Host: evil.example``; only loopback names and
  addresses, and the names the operator adds (``--allowed-host``), are answered; anything
  else is a 400. Patterns follow Starlette's ``TrustedHostMiddleware`` (``name``,
  ``*.domain``, ``*``), whose plain-text answer would break the API's JSON error contract.
* **Origin check** (CSRF): a request other than GET or HEAD whose ``Origin`` (or, lacking one,
  ``Referer``) is not the server's own answers 403. Scripts and curl send neither and are
  let through: they are not a browser acting for someone.
* **Token** (when the policy has one): every route but ``/static/`` needs it, as
  ``Authorization: Bearer TOKEN``, or in a browser once as ``?token=`` on a page, which is
  swapped for an HttpOnly, SameSite=Strict cookie and taken out of the address bar.
* **Headers** on every answer: a Content-Security-Policy with no inline script,
  ``nosniff``, ``no-referrer``, no framing, and ``Cache-Control: no-store`` wherever a route
  did not choose (static assets keep their validators; tiles say ``private``).

A pure ASGI middleware rather than ``BaseHTTPMiddleware``: /predict costs about a millisecond
and the checks are a few dictionary look-ups.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import ipaddress
import json
import logging
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idcscan.errors import IdcscanError

ENV_TOKEN = "IDCSCAN_TOKEN"
ENV_ALLOWED_HOSTS = "IDCSCAN_ALLOWED_HOSTS"
#: names that resolve to this machine by definition (RFC 6761: ``*.localhost`` too)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
STATIC_PREFIX = "/static/"
SAFE_METHODS = frozenset({"GET", "HEAD"})
#: shortest token ``--token`` takes without a warning (generated ones have 32 characters)
MIN_TOKEN_CHARS = 16


#: The one ``<style>`` OpenSeadragon writes (static/openseadragon, on touch screens: no focus
#: ring on the slide). Admitted by its hash, so the viewer shows no CSP error and no other
#: inline style gets in.
OPENSEADRAGON_STYLE = ("@media (hover: none) {    .openseadragon-canvas:focus {        "
                       "outline: none !important;    }}")
#: ReDoc (/redoc) writes its scroll-bar CSS (perfect-scrollbar, 6.5 kB, fixed in the vendored
#: static/vendor/redoc/redoc.standalone.js) before it can stamp a nonce on it, and then an
#: empty ``<style>``: those two exact texts, by hash, on /redoc only.
REDOC_STYLE_HASHES = ("'sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc='",
                      "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='")


def style_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def content_security_policy(style_nonce: str | None = None, style_hashes: Iterable[str] = ()
                            ) -> str:
    """The CSP of every page. Scripts only from the server's own files (no inline script at
    all, so no nonce is needed for them); styles too, besides OpenSeadragon's one rule and
    what a page adds: ``<style>`` elements carrying ``style_nonce`` (ReDoc builds its styles
    at run time and stamps them with it), or with one of ``style_hashes``. No page uses a
    style attribute (scripts set styles through the CSSOM, which the CSP leaves alone).
    ``data:`` images: the favicon and the PNGs that /slide answers with."""
    style = " ".join(["'self'", style_hash(OPENSEADRAGON_STYLE), *style_hashes]
                     + ([f"'nonce-{style_nonce}'"] if style_nonce else []))
    return (
        "default-src 'self'; script-src 'self'; "
        f"style-src {style}; img-src 'self' data: blob:; font-src 'self' data:; "
        "connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


DEFAULT_CSP = content_security_policy()


def generate_token() -> str:
    return secrets.token_urlsafe(24)


# ----------------------------------------------------------------------------- host names


def split_host(value: str) -> tuple[str, str]:
    """``Host`` header -> (name lowercased, port or ""); ``[::1]:5000`` -> ("::1", "5000")."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else ""
    if value.count(":") == 1:
        name, _, port = value.partition(":")
        return name, port
    return value, ""  # a bare name, or an IPv6 address without brackets


def is_loopback(name: str) -> bool:
    """True for names and addresses that can only mean this machine."""
    name = name.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _check_pattern(pattern: str) -> str:
    pattern = pattern.strip().lower().strip("[]")
    if not pattern or "*" in pattern[1:] or (pattern.startswith("*") and
                                             pattern != "*" and not pattern.startswith("*.")):
        raise IdcscanError(
            f"--allowed-host {pattern!r}: give a host name or address, '*.domain' for every "
            "name under a domain, or '*' for any name."
        )
    return pattern


def host_allowed(name: str, patterns: Iterable[str]) -> bool:
    if is_loopback(name):
        return True
    for pattern in patterns:
        if pattern == "*" or name == pattern or (
                pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


# ------------------------------------------------------------------------------ the policy


@dataclass(frozen=True)
class SecurityPolicy:
    """``allowed_hosts``: names answered besides loopback ones; ``token``: required on every
    route but static assets when set (``idcscan serve`` sets one whenever it listens beyond
    loopback, unless told ``--no-token``)."""

    allowed_hosts: tuple[str, ...] = ()
    token: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_hosts",
                           tuple(dict.fromkeys(_check_pattern(p) for p in self.allowed_hosts)))
        if self.token is not None and not self.token.strip():
            object.__setattr__(self, "token", None)

    @classmethod
    def from_env(cls) -> SecurityPolicy:
        """The policy ``idcscan serve`` hands its worker processes (and any app built by
        ``create_app`` without one): ``IDCSCAN_TOKEN`` and ``IDCSCAN_ALLOWED_HOSTS``
        (names separated by spaces or commas)."""
        hosts = os.environ.get(ENV_ALLOWED_HOSTS, "").replace(",", " ").split()
        return cls(allowed_hosts=tuple(hosts), token=os.environ.get(ENV_TOKEN) or None)

    def cookie_value(self) -> str:
        """What the browser keeps instead of the token itself."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"idcscan browser cookie", hashlib.sha256).hexdigest()


# ------------------------------------------------------------------------------ answering


def _json(status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None
          ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json")] + (extra or [])
    return status, headers, body


def _page(status: int, title: str, text: str, extra: list[tuple[bytes, bytes]] | None = None,
          head: str = "") -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<title>idcscan · {html.escape(title)}</title>'
        f'<link rel="stylesheet" href="/static/style.css">{head}</head>'
        f'<body><main class="site-main"><h1>{html.escape(title)}</h1>'
        f"<p>{text}</p></main></body></html>"
    ).encode()
    return status, [(b"content-type", b"text/html; charset=utf-8")] + (extra or []), body


async def _send(send: Send, answer: tuple[int, list[tuple[bytes, bytes]], bytes]) -> None:
    status, headers, body = answer
    headers = headers + [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _same_site(value: str, host: str) -> bool:
    """Whether an ``Origin``/``Referer`` value names the server the request reached."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False  # "null" (sandboxed frames, file:// pages) and anything odd
    default = ":443" if parts.scheme == "https" else ":80"
    return parts.netloc.lower().removesuffix(default) == host.lower().removesuffix(default)


def _is_navigation(headers: Headers) -> bool:
    mode = headers.get("sec-fetch-mode")
    if mode is not None:
        return mode == "navigate"
    return "text/html" in headers.get("accept", "")


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, policy: SecurityPolicy) -> None:
        self.app = app
        self.policy = policy
        self.cookie_value = policy.cookie_value() if policy.token else ""
        self._hosts: dict[str, bool] = {}  # Host header -> allowed (a handful of values)

    def host_ok(self, host: str) -> bool:
        known = self._hosts.get(host)
        if known is None:
            if len(self._hosts) > 256:  # random Host values only cost the check itself
                self._hosts.clear()
            known = self._hosts[host] = host_allowed(split_host(host)[0],
                                                     self.policy.allowed_hosts)
        return known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan; the app has no websockets
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        send = self._decorated(scope, send)
        host = headers.get("host", "")
        if not self.host_ok(host):
            name = split_host(host)[0]
            await _send(send, _json(400, (
                f"This server does not answer to the host name {name!r}: a guard against DNS "
                "rebinding. If that is its name, start it with --allowed-host "
                f"{name or 'NAME'}."
            )))  # fmt: skip
            return
        method = scope["method"]
        if method not in SAFE_METHODS:
            source = headers.get("origin") or headers.get("referer")
            if source is not None and not _same_site(source, host):
                shown = source if headers.get("origin") else urlsplit(source).netloc
                await _send(send, _json(403, (
                    f"Refused a {method} from another site ({shown[:100]}): idcscan accepts "
                    "changes only from its own pages, or from scripts that send no Origin."
                )))  # fmt: skip
                return
        if self.policy.token and not scope["path"].startswith(STATIC_PREFIX):
            if not await self._authorised(scope, headers, send):
                return
        await self.app(scope, receive, send)

    # -- the token ----------------------------------------------------------------------
    def cookie_name(self, scope: Scope) -> str:
        # cookies are per host, not per port: two servers on one machine keep one each
        server = scope.get("server") or ("", 0)
        return f"idcscan_token_{server[1] or 0}"

    def _token_ok(self, value: str | None) -> bool:
        assert self.policy.token is not None
        return value is not None and hmac.compare_digest(
            value.encode(), self.policy.token.encode())

    async def _authorised(self, scope: Scope, headers: Headers, send: Send) -> bool:
        """True to go on; otherwise the answer (401, or the cookie swap) has been sent."""
        navigation = _is_navigation(headers)
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                          keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        by_query = scope["method"] in SAFE_METHODS and given and self._token_ok(given[-1])
        if by_query and navigation:  # swapped even when the cookie is there already: the
            await self._swap_for_cookie(scope, headers, send, query)  # token leaves the URL
            return False
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self._token_ok(credentials.strip()):
            return True
        cookie = cookie_parser(headers.get("cookie", "")).get(self.cookie_name(scope))
        if cookie is not None and hmac.compare_digest(cookie.encode(), self.cookie_value.encode()):
            return True
        if by_query:
            return True  # a script that used ?token=: served, nothing kept
        message = ("This idcscan server needs its token: open the address `idcscan serve` "
                   "printed (it ends in ?token=...), or send the header "
                   "Authorization: Bearer TOKEN.")
        challenge = [(b"www-authenticate", b'Bearer realm="idcscan"')]
        await _send(send, _page(401, "Token needed", html.escape(message), challenge)
                    if navigation else _json(401, message, challenge))
        return False

    async def _swap_for_cookie(self, scope: Scope, headers: Headers, send: Send,
                               query: list[tuple[str, str]]) -> None:
        """Keep the token in an HttpOnly cookie and show the page without it in the URL.

        A redirect normally; a page that refreshes itself when the link came from another
        site, because a SameSite=Strict cookie set in a cross-site navigation is not sent
        on the redirect that follows it."""
        rest = urlencode([(k, v) for k, v in query if k != "token"])
        path = quote("/" + scope["path"].lstrip("/"), safe="/:@!$&'()*+,;=-._~")
        target = path + (f"?{rest}" if rest else "")  # on this server, never "//elsewhere"
        cookie = (f"{self.cookie_name(scope)}={self.cookie_value}; Path=/; HttpOnly; "
                  "SameSite=Strict" + ("; Secure" if scope.get("scheme") == "https" else ""))
        set_cookie = [(b"set-cookie", cookie.encode("latin-1"))]
        if headers.get("sec-fetch-site") == "cross-site":
            shown = html.escape(target, quote=True)
            await _send(send, _page(
                200, "Signed in", f'Opening <a href="{shown}">{html.escape(target)}</a>…',
                set_cookie, head=f'<meta http-equiv="refresh" content="0; url={shown}">'))
            return
        await _send(send, (303, set_cookie + [(b"location", target.encode("ascii"))], b""))

    # -- headers ------------------------------------------------------------------------
    def _decorated(self, scope: Scope, send: Send) -> Send:
        static = scope["path"].startswith(STATIC_PREFIX)

        async def decorated(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", ()))
                present = {name.lower() for name, _ in raw}
                for name, value in _ALWAYS:
                    if name not in present:
                        raw.append((name, value))
                if not static and b"cache-control" not in present:
                    raw.append((b"cache-control", b"no-store"))
                message = {**message, "headers": raw}
            await send(message)

        return decorated


_ALWAYS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", DEFAULT_CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


# ------------------------------------------------------------------------------- the log

_TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s]*")


class RedactTokens(logging.Filter):
    """Blanks ``?token=`` values in uvicorn's access log lines (``--access-log``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_TOKEN_IN_URL.sub(r"\1[redacted]", a) if isinstance(a, str)
                                else a for a in record.args)
        return True


def redact_access_log() -> None:
    """Once per process (every worker builds its app): no token reaches the access log."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactTokens) for f in access.filters):
        access.addFilter(RedactTokens())
