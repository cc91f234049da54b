"""Reading multipart uploads into memory, with hard byte limits, without touching the disk.

Starlette's own form parsing spools large files to temporary files (``SpooledTemporaryFile``)
and reads the whole body before a route can say no. idcscan keeps uploads in memory and
refuses oversize bodies early instead:

1. a ``Content-Length`` over the limit is refused before a byte of the body is read;
2. the body is then read from ``request.stream()`` with a running byte count, so a client that
   sends no length (chunked) or lies about it is cut off as soon as it passes the limit;
3. the bytes go through ``python_multipart``'s streaming parser, part by part, with a per-file
   limit too; nothing is written anywhere;
4. the body must arrive in time: at most ``idle_timeout_s`` without a byte, and all of it
   within ``timeout_s``, so a client that sends slowly (or stops) cannot hold a request
   open for ever.

Every refusal is an ``IdcscanError`` subclass; the app maps ``UploadTooLarge`` to 413,
``UploadTimeout`` to 408 and ``BadUpload`` to 400. The slide route reuses ``read_form`` with its own (larger) limits.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from idcscan.errors import IdcscanError

#: Room for the multipart envelope (boundaries, part headers) on top of the file limit.
ENVELOPE_BYTES = 64 * 1024
#: A whole body must arrive within this many seconds, and never pause longer than the idle one.
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_IDLE_TIMEOUT_S = 15.0
#: ... plus the time the largest allowed body takes at this slow rate.
DEFAULT_MIN_BYTES_PER_S = 256 * 1024


class UploadError(IdcscanError):
    """A request body idcscan will not read."""


class UploadTooLarge(UploadError):
    """The body or a file is over the size limit (HTTP 413)."""


class NotAPatchUpload(UploadTooLarge):
    """Too large for /predict, and a large image rather than a patch: still a 413, with
    ``"use": "/slide"`` when /slide takes it (its limits are larger)."""

    def __init__(self, message: str, use_instead: str | None) -> None:
        super().__init__(message)
        self.use_instead = use_instead


class BadUpload(UploadError):
    """Not a usable multipart/form-data body (HTTP 400)."""


class UploadTimeout(UploadError):
    """The body came too slowly or stopped coming (HTTP 408)."""


@dataclass(frozen=True)
class UploadPart:
    """One multipart part, fully in memory."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes

    @property
    def is_file(self) -> bool:
        return self.filename is not None


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.4g} MB"


class _Collector:
    """python_multipart callbacks that assemble parts in memory, under limits."""

    def __init__(self, max_file_bytes: int, max_parts: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.max_parts = max_parts
        self.parts: list[UploadPart] = []
        self.ended = False
        self._headers: dict[str, str] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._data = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
            "on_header_end": self.on_header_end,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        if len(self.parts) >= self.max_parts:
            raise BadUpload(f"Too many parts in the upload (at most {self.max_parts}).")
        self._headers = {}
        self._data = bytearray()

    def on_header_end(self) -> None:
        name = bytes(self._field).decode("latin-1").strip().lower()
        self._headers[name] = bytes(self._value).decode("latin-1").strip()
        self._field.clear()
        self._value.clear()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if len(self._data) + (end - start) > self.max_file_bytes:
            raise UploadTooLarge(
                f"An uploaded file is larger than the limit of {_megabytes(self.max_file_bytes)}."
            )
        self._data.extend(data[start:end])

    def on_part_end(self) -> None:
        disposition, options = parse_options_header(self._headers.get("content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise BadUpload("A multipart part lacks 'Content-Disposition: form-data; name=...'.")
        filename = options.get(b"filename")
        self.parts.append(
            UploadPart(
                name=options[b"name"].decode("utf-8", "replace"),
                filename=None if filename is None else filename.decode("utf-8", "replace"),
                content_type=self._headers.get("content-type"),
                data=bytes(self._data),
            )
        )
        self._data = bytearray()

    def on_end(self) -> None:
        self.ended = True


def _timeouts(request: Request, max_bytes: int) -> tuple[float, float]:
    """The app's upload deadlines (``ServerSettings``), or the defaults outside idcscan's app.

    The total grows with the size allowed (at ``upload_min_bytes_per_s``), so a large slide
    upload over a slow link is not cut off where a patch upload would be."""
    settings = getattr(getattr(request.app.state, "idcscan", None), "settings", None)
    rate = float(getattr(settings, "upload_min_bytes_per_s", DEFAULT_MIN_BYTES_PER_S))
    total = float(getattr(settings, "upload_timeout_s", DEFAULT_TIMEOUT_S)) + max_bytes / rate
    return total, float(getattr(settings, "upload_idle_timeout_s", DEFAULT_IDLE_TIMEOUT_S))


async def read_form(
    request: Request,
    max_bytes: int,
    max_file_bytes: int | None = None,
    max_parts: int = 16,
    timeout_s: float | None = None,
    idle_timeout_s: float | None = None,
) -> list[UploadPart]:
    """All parts of a multipart/form-data request, read under ``max_bytes`` for the body.

    ``max_file_bytes`` (default: ``max_bytes``) caps each part. The body must be complete
    within ``timeout_s`` and never pause for ``idle_timeout_s`` (defaults: from the app's
    settings, see ``_timeouts``). Raises ``UploadTooLarge``, ``UploadTimeout`` or ``BadUpload`` with a message
    meant for the person who sent the request.
    """
    max_file_bytes = max_bytes if max_file_bytes is None else max_file_bytes
    default_total, default_idle = _timeouts(request, max_bytes)
    timeout_s = default_total if timeout_s is None else timeout_s
    idle_timeout_s = default_idle if idle_timeout_s is None else idle_timeout_s
    length_header = request.headers.get("content-length")
    if length_header is not None:
        try:
            declared = int(length_header)
        except ValueError:
            raise BadUpload(f"Invalid Content-Length header {length_header!r}.") from None
        if declared > max_bytes:
            raise UploadTooLarge(
                f"The upload is {_megabytes(declared)}, over the limit of "
                f"{_megabytes(max_bytes)}. Send a smaller image."
            )
        if declared == 0:
            raise BadUpload(_EMPTY)

    content_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise BadUpload(
            "Send the image as multipart/form-data (an HTML form upload, or "
            "`curl -F file=@image.png`), not as "
            f"{content_type.decode('latin-1') or 'a body without Content-Type'}."
        )

    collector = _Collector(max_file_bytes, max_parts)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
    except (FormParserError, ValueError) as exc:
        raise BadUpload(f"Invalid multipart boundary: {exc}") from exc
    received = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        # One timeout scope, moved forward per chunk: the idle limit, capped by the total.
        async with asyncio.timeout_at(min(deadline, loop.time() + idle_timeout_s)) as scope:
            async for chunk in request.stream():
                scope.reschedule(min(deadline, loop.time() + idle_timeout_s))
                if not chunk:
                    continue
                received += len(chunk)
                if received > max_bytes:
                    raise UploadTooLarge(
                        f"The upload is over the limit of {_megabytes(max_bytes)}. "
                        "Send a smaller image."
                    )
                parser.write(chunk)
        if received == 0:
            raise BadUpload(_EMPTY)
        parser.finalize()
    except TimeoutError:
        raise UploadTimeout(
            f"The upload arrived too slowly (after {received:,} bytes; allowed: "
            f"{idle_timeout_s:g} s without data, {timeout_s:g} s in all). Resend it."
        ) from None
    except FormParserError as exc:
        raise BadUpload(f"The multipart body is malformed ({exc}).") from exc
    except ClientDisconnect:
        raise BadUpload("The client disconnected before the upload was complete.") from None
    if not collector.ended:
        raise BadUpload("The multipart body ended early (no closing boundary); resend it.")
    return collector.parts


_EMPTY = "The request body is empty; send an image as multipart/form-data field 'file'."


def _names(parts: list[UploadPart]) -> str:
    names = sorted({repr(p.name) for p in parts})
    return ", ".join(names) if names else "none"


def one_file(parts: list[UploadPart], field: str = "file") -> UploadPart:
    """The single upload in ``field``; a clear 400 when it is missing or empty."""
    matches = [p for p in parts if p.name == field]
    if not matches:
        raise BadUpload(
            f"No '{field}' field in the upload (fields sent: {_names(parts)}); "
            f"send the image as multipart/form-data field '{field}'."
        )
    if len(matches) > 1:
        raise BadUpload(f"Send one file in field '{field}' (got {len(matches)}).")
    if not matches[0].data:
        raise BadUpload(f"The file in field '{field}' is empty.")
    return matches[0]


def many_files(parts: list[UploadPart], field: str = "files") -> list[UploadPart]:
    """Every upload in ``field``, in the order sent (empty files are kept: each gets its error)."""
    matches = [p for p in parts if p.name == field]
    if not matches:
        raise BadUpload(
            f"No '{field}' field in the upload (fields sent: {_names(parts)}); send the "
            f"images as repeated multipart/form-data fields '{field}'."
        )
    return matches


def text_fields(parts: list[UploadPart]) -> dict[str, str]:
    """Plain (non-file) form fields as text; the last value wins."""
    return {p.name: p.data.decode("utf-8", "replace") for p in parts if not p.is_file}


def multipart_body(field: str, many: bool) -> dict[str, Any]:
    """OpenAPI description of the multipart body a handler reads itself with ``read_form``
    (FastAPI cannot see it, so /docs would show no upload field without this)."""
    binary: dict[str, Any] = {"type": "string", "format": "binary"}
    schema = {"type": "array", "items": binary} if many else binary
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [field],
                        "properties": {field: schema},
                    }
                }
            },
        }
    }
