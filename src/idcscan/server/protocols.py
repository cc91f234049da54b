"""uvicorn's httptools protocol with a deadline on reading a request's headers.

uvicorn bounds the wait between keep-alive requests, but not how long a client may take to
send a request line and headers: a connection that opens and says nothing, or drips one header
byte every few seconds (slowloris), is held for ever and each costs a socket. Here every
request, the first on a connection included, must deliver its complete headers within
``header_timeout_s`` of its first byte (of the connection, for the first request); otherwise
the server answers ``408 {"error": ...}`` and closes the connection. The body is bounded
separately, where it is read (``idcscan.server.uploads.read_form``).

The class is named to uvicorn as an import string (``http="idcscan.server.protocols:
GuardedHttpToolsProtocol"``), so ``--workers`` processes use it too; the timeout travels on
the uvicorn ``Config`` as attribute ``header_timeout_s``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Seconds a client has to send a request line and all headers.
DEFAULT_HEADER_TIMEOUT_S = 10.0

IMPORT_STRING = "idcscan.server.protocols:GuardedHttpToolsProtocol"


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps(
        {"error": f"The request headers did not arrive within {seconds:g} s; resend it."}
    ).encode()
    return (
        b"HTTP/1.1 408 Request Timeout\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that closes connections whose headers come too slowly."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.header_timeout_s = float(
            getattr(config, "header_timeout_s", None) or DEFAULT_HEADER_TIMEOUT_S
        )
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        self.logger.debug("Closing a connection whose request headers did not arrive in time.")
        self.transport.write(_timeout_response(self.header_timeout_s))
        self.transport.close()

    # A new connection: its first request's headers are due.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    # The first byte of a (next) request on a kept-alive connection.
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # Between requests uvicorn's keep-alive timeout applies, not ours.
        self._cancel_header_timer()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)
