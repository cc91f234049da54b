"""Writing output files so that a finished-looking file is always a finished file.

A full disk, a read-only folder or a kill can stop a write half-way. Every output idcscan
names as finished is therefore written under a temporary name in the same folder, flushed
to disk, then renamed over the target (``os.replace`` is atomic on one filesystem), and the
temporary file is removed when anything fails. A reader sees the old file or the new one,
never half of one.

Failures a user can fix (no space, read-only, no permission) become ``OutputError``: one line
that names the file and says what to do, which the CLI prints without a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from idcscan.errors import IdcscanError

#: errno values that mean "this place cannot take the output", not "idcscan has a bug".
WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on the device; free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is exhausted; free some space or write elsewhere",
    errno.EROFS: "the folder is on a read-only filesystem; choose a writable output folder",
    errno.EACCES: "permission denied; check its permissions or choose another folder",
    errno.EPERM: "operation not permitted; check its permissions or choose another folder",
    errno.EFBIG: "the file is too large for this filesystem; write elsewhere",
}


class OutputError(IdcscanError):
    """An output could not be written (full disk, read-only or forbidden folder)."""


def output_error(
    exc: OSError, path: str | Path | None = None, writing: bool = False
) -> OutputError | None:
    """The one-line ``OutputError`` for a failure a user can fix, else ``None``.

    ``writing`` is known at the write layer; the CLI's catch-all cannot tell a read from a
    write, so its wording stays neutral."""
    advice = WRITE_ERRNOS.get(exc.errno or -1)
    if advice is None:
        return None
    where = path if path is not None else exc.filename
    target = f" {where}" if where else ""
    return OutputError(f"Cannot {'write' if writing else 'use'}{target}: {advice}.")


def _temporary(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_open(target: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """``open`` for writing ``target`` all-or-nothing: yields the handle of a temporary file
    that becomes ``target`` only when the block ends without an error."""
    if mode not in ("w", "wb"):
        raise ValueError("atomic_open writes whole files: mode 'w' or 'wb'")
    target = Path(target)
    tmp = _temporary(target)
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            friendly = output_error(exc, target, writing=True)
            if friendly is not None:
                raise friendly from exc
        raise


def atomic_write_bytes(target: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``target`` all-or-nothing (see ``atomic_open``)."""
    with atomic_open(target, "wb") as fh:
        fh.write(data)
    return Path(target)


def atomic_write_text(target: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``target`` all-or-nothing (see ``atomic_open``)."""
    with atomic_open(target, "w", encoding=encoding, newline="") as fh:
        fh.write(text)
    return Path(target)


def reserve_space(path: str | Path) -> None:
    """Allocate every block of an existing (sparse) file now.

    A memory-mapped output is created sparse; on a full disk, touching one of its pages later
    kills the process with SIGBUS instead of raising. Reserving the blocks up front turns that
    into an ordinary "no space" error before any work is done.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0 or not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, size)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                return  # the filesystem cannot reserve; nothing better to do
            friendly = output_error(exc, path, writing=True)
            if friendly is not None:
                raise friendly from exc
            raise
