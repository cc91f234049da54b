"""Which map jobs the server takes: a bounded queue, and at most one job per client.

A map holds every core for seconds to minutes, so the viewer's "map this slide" is the one
request that can load the server at will. ``JobQueue`` admits a job only while fewer than
``max_jobs`` are queued or running server-wide and the client has none of its own under way
(``per_client``); otherwise the route answers 429.

The queue is shared by every ``idcscan serve`` worker process through the maps folder, as the
jobs are (``server.map_jobs``): a job holds a ticket, ``<root>/.queue/<slide id>.json``, for as
long as it holds its slide's job lock. Admission runs under an exclusive ``flock`` on
``<root>/.queue.lock``, so two processes cannot both take the last place. A ticket whose slide
lock is free belongs to a process that died: it is dropped at the next admission, never left
to block the queue. Clients are kept as a hash of their address, not the address.

The file locks and modes every process's jobs share live here too: a job's lock (held for as
long as the job is queued or running), folders only the server's user can open (0700) and
files only it can read (0600).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from idcscan.errors import IdcscanError

QUEUE_DIR = ".queue"
ADMISSION_LOCK = ".queue.lock"
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
#: How often ``take_lock`` retries a lock it found taken: a status probe in another process
#: holds a shared lock for microseconds, and a click must not be lost to it.
LOCK_TRIES = 5


def lock_is_free(path: Path) -> bool:
    """True when no process holds the job lock (its job, if any, is not running)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops the shared lock we may have taken
    return True


def take_lock(path: Path) -> int | None:
    """The job lock's descriptor, held exclusively; None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    for attempt in range(LOCK_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if attempt + 1 < LOCK_TRIES:
                time.sleep(0.01)
    os.close(fd)
    return None


def private_dir(path: Path, ours: bool = True) -> None:
    """``path`` as a folder only its owner can enter: made so, or set so if it is ``ours``
    (the folder given to --maps is the user's, and keeps the mode they gave it)."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if ours and path.stat().st_mode & 0o777 != PRIVATE_DIR:
        path.chmod(PRIVATE_DIR)


def make_private(folder: Path) -> None:
    """A finished map folder: 0700 folders, 0600 files (analyse_slide writes with the umask)."""
    folder.chmod(PRIVATE_DIR)
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), PRIVATE_DIR)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), PRIVATE_FILE)


class QueueFull(IdcscanError):
    """No room for another map now (answered 429)."""


def client_key(address: str | None) -> str:
    return hashlib.sha256((address or "unknown").encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Ticket:
    slide_id: str
    client: str


class JobQueue:
    """``is_active(slide_id)``: whether that slide's job still holds its lock (in any process)."""

    def __init__(self, root: Path, is_active: Callable[[str], bool], max_jobs: int = 8,
                 per_client: int = 1) -> None:
        self.root = root
        self.is_active = is_active
        self.max_jobs = max(1, max_jobs)
        self.per_client = max(1, per_client)

    @contextmanager
    def admission(self) -> Iterator[None]:
        """Held while a job is checked and entered: one process at a time."""
        fd = os.open(self.root / ADMISSION_LOCK, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held for a few file reads; released on close
            yield
        finally:
            os.close(fd)

    def tickets(self) -> list[Ticket]:
        """The jobs queued or running server-wide; stale tickets are removed on the way."""
        found = []
        for path in sorted((self.root / QUEUE_DIR).glob("*.json")):
            slide_id = path.stem
            try:
                client = str(json.loads(path.read_text()).get("client", ""))
            except (OSError, ValueError, AttributeError):
                client = ""
            if self.is_active(slide_id):
                found.append(Ticket(slide_id, client))
            else:
                path.unlink(missing_ok=True)
        return found

    def check(self, slide_id: str, client: str) -> None:
        """Raise ``QueueFull`` unless a job for ``slide_id`` from ``client`` may enter now
        (call inside ``admission``; a ticket of the same slide is the one being replaced)."""
        others = [t for t in self.tickets() if t.slide_id != slide_id]
        mine = [t for t in others if t.client == client]
        if len(mine) >= self.per_client:
            raise QueueFull(
                f"You have a map queued or running already (slide {mine[0].slide_id}); wait "
                f"until it is done, or cancel it: POST /api/slides/{mine[0].slide_id}/map/cancel."
            )
        if len(others) >= self.max_jobs:
            raise QueueFull(
                f"{len(others)} maps are queued or running, as many as this server takes at "
                "once; try again when one is done."
            )

    def add(self, slide_id: str, client: str) -> None:
        folder = self.root / QUEUE_DIR
        folder.mkdir(mode=0o700, exist_ok=True)
        tmp = folder / f".{slide_id}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
        with os.fdopen(fd, "w") as fh:
            json.dump({"client": client}, fh)
        os.replace(tmp, folder / f"{slide_id}.json")

    def remove(self, slide_id: str) -> None:
        (self.root / QUEUE_DIR / f"{slide_id}.json").unlink(missing_ok=True)
