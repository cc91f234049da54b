"""The slides under one folder, as the viewer sees them: opaque ids, metadata, open readers.

``SlideLibrary(root)`` walks ``root`` recursively for every format the slide readers take
(``slide_reader.SUPPORTED_SUFFIXES``). Every file is opened once to learn its size, scale and
format, and a tiny region is decoded, so a damaged file is listed with a one-line error
rather than breaking the browser later. A DICOM WSI is one series spread over several
``.dcm`` files in one folder: it is listed once (OpenSlide finds the other files itself).

Ids are a hash of the path relative to ``root`` (and the file's size and time, so a replaced
file is a new slide): they are looked up in the table made by the scan and never turned back
into a path, so no request can name a file. Symbolic links are followed only when their
target is inside ``root``, checked again each time a slide is opened.

The table is the answer to every id: an id it does not hold is looked up again only after a
rescan, and a lookup may rescan at most once every ``rescan_interval_s`` (a walk of a
3,000-file folder costs about a third of a second; random ids must not buy one each). The
listing rescans, but requests that arrive while a walk is under way share its result.

Readers are kept open in a small LRU cache shared by all requests (``max_open``); a reader
evicted while a request still uses it is closed when that request lets go. Whole-slide
formats are read region by region; a plain picture (PNG, JPEG, a TIFF without tiles) is
decoded whole, so those above ``max_plain_pixels`` are listed as unreadable with the way
out, and the cache holds at most ``max_open`` of them.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idcscan.errors import IdcscanError
from idcscan.slides.deepzoom import DeepZoom
from idcscan.maps.run import slide_name
from idcscan.slides.formats import open_slide
from idcscan.slides.reader import SUPPORTED_SUFFIXES, SlideReader

DICOM_SUFFIX = ".dcm"
#: the largest plain picture the browser decodes (25 Mpx: 75 MB held while it is open)
PLAIN_MAX_PIXELS = 25_000_000
#: an unknown id rescans the folder at most this often (seconds)
RESCAN_INTERVAL_S = 30.0


def one_line(message: str) -> str:
    """A message on one line (decoders put newlines and long dumps into their errors)."""
    text = " ".join(str(message).split())
    return text if len(text) <= 400 else text[:397] + "..."


@dataclass
class SlideEntry:
    """What the browser lists about one slide file."""

    id: str
    path: Path  # resolved, inside the root: the only path ever opened
    source: Path  # as found under the root (maybe a link), checked again at each open
    relpath: str
    name: str
    stamp: tuple[int, int]  # (size, mtime_ns) when scanned
    width: int | None = None
    height: int | None = None
    mpp: float | None = None
    format: str | None = None
    levels: int | None = None
    error: str | None = None
    root: str = ""  # the slide folder, resolved: never shown

    @property
    def readable(self) -> bool:
        return self.error is None

    def redact(self, text: str) -> str:
        """``text`` with the slide's place on the server's disk replaced by its path under
        the slide folder (and any other file under it, e.g. a DICOM series' companions, by
        theirs): what the server answers never shows where that folder lives."""
        for full in sorted({str(self.path), str(self.source)}, key=len, reverse=True):
            text = text.replace(full, self.relpath)
        if self.root:
            text = text.replace(self.root + os.sep, "")
        return text

    def redact_all(self, value: Any) -> Any:
        """``redact`` on every string in a parsed JSON value."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list):
            return [self.redact_all(v) for v in value]
        if isinstance(value, dict):
            return {k: self.redact_all(v) for k, v in value.items()}
        return value

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "path": self.relpath,
            "width": self.width,
            "height": self.height,
            "mpp": self.mpp,
            "format": self.format,
            "levels": self.levels,
            "error": self.error,
        }


@dataclass
class _Open:
    reader: SlideReader
    zoom: DeepZoom
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0
    evicted: bool = False


class SlideLibrary:
    """Thread-safe catalogue of the slides under ``root`` with a bounded reader cache."""

    def __init__(
        self, root: str | Path, max_open: int = 16, max_plain_pixels: int = PLAIN_MAX_PIXELS,
        rescan_interval_s: float = RESCAN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        root_path = Path(root)
        if not root_path.is_dir():
            raise IdcscanError(f"--slides {root} is not a folder; give the folder of your slides.")
        self.root = root_path.resolve()
        self.max_open = max(1, max_open)
        self.max_plain_pixels = max_plain_pixels
        self._entries: dict[str, SlideEntry] = {}
        self._by_key: dict[tuple[str, tuple[int, int]], SlideEntry] = {}
        self._scan_lock = threading.Lock()
        self.rescan_interval_s = rescan_interval_s
        self.clock = clock
        self._scanned_at: float | None = None  # when the last walk began
        self._scans = 0  # walks begun; a request that waited on one began later than it
        self._cache: OrderedDict[str, _Open] = OrderedDict()
        self._cache_lock = threading.Lock()

    # -- scanning ---------------------------------------------------------------------
    def inside(self, path: Path) -> Path | None:
        """``path`` resolved (links followed) if it lies inside the root, else None."""
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        return real if real == self.root or self.root in real.parents else None

    def _candidates(self) -> Iterator[Path]:
        dicom_dirs: set[Path] = set()
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fname in sorted(filenames):
                if fname.startswith("."):
                    continue
                path = Path(dirpath) / fname
                suffix = path.suffix.lower()
                if suffix not in SUPPORTED_SUFFIXES:
                    continue
                if suffix == DICOM_SUFFIX:
                    if path.parent in dicom_dirs:
                        continue  # one series per folder: OpenSlide opens the rest itself
                    dicom_dirs.add(path.parent)
                yield path

    def scan(self) -> list[SlideEntry]:
        """Walk the root again; files seen before (same size and time) are not reopened.
        A call that waited while another walked takes the result of a walk that began after
        it arrived, if one did: that is as fresh as its own would be."""
        arrived_after = self._scans  # walks begun before this call (one may be running)
        with self._scan_lock:
            if self._scans > arrived_after:  # one began after we arrived, and has finished
                return list(self._entries.values())
            self._scans += 1
            self._scanned_at = self.clock()
            entries: dict[str, SlideEntry] = {}
            for path in self._candidates():
                real = self.inside(path)
                if real is None or not real.is_file():
                    continue  # a link out of the root, or a dangling one
                st = real.stat()
                stamp = (st.st_size, st.st_mtime_ns)
                relpath = path.relative_to(self.root).as_posix()
                entry = self._by_key.get((relpath, stamp))
                if entry is None:
                    entry = self._probe(path, real, relpath, stamp)
                    self._by_key[(relpath, stamp)] = entry
                entries[entry.id] = entry
            self._entries = entries
            return list(entries.values())

    def _probe(self, path: Path, real: Path, relpath: str, stamp: tuple[int, int]) -> SlideEntry:
        digest = hashlib.sha256(f"{relpath}\0{stamp[0]}\0{stamp[1]}".encode()).hexdigest()[:16]
        name = path.parent.name if path.suffix.lower() == DICOM_SUFFIX else slide_name(path)
        entry = SlideEntry(
            id=digest, path=real, source=path, relpath=relpath, name=name, stamp=stamp,
            root=str(self.root),
        )
        try:
            with open_slide(real, self.max_plain_pixels) as reader:
                entry.width, entry.height = reader.dimensions
                entry.mpp = reader.mpp
                entry.format = str(getattr(reader, "format", reader.backend))
                entry.levels = reader.level_count
                coarsest = reader.level_count - 1
                lw, lh = reader.level_dimensions[coarsest]
                reader.read_level(coarsest, lw // 2, lh // 2, 1, 1)  # can pixels be decoded?
        except IdcscanError as exc:
            entry.error = one_line(entry.redact(str(exc)))
        return entry

    def entries(self) -> list[SlideEntry]:
        return self.scan()

    def entries_known(self) -> list[SlideEntry]:
        """The table as the last scan left it (the first call scans)."""
        if self._scanned_at is None:
            return self.scan()
        return list(self._entries.values())

    def get(self, slide_id: str) -> SlideEntry:
        """The readable slide with this id; unknown, unreadable or escaped ids are 404s.
        An id not in the table rescans only if the last scan is ``rescan_interval_s`` old."""
        entry = self._entries.get(slide_id)
        if entry is None and self._rescan_due():
            self.scan()
            entry = self._entries.get(slide_id)
        # the name found at scan time must still lead to the same file inside the root
        if entry is None or not entry.readable or self.inside(entry.source) != entry.path:
            raise SlideNotFound(f"There is no readable slide {slide_id!r}; see /api/slides.")
        return entry

    def _rescan_due(self) -> bool:
        last = self._scanned_at
        return last is None or self.clock() - last >= self.rescan_interval_s

    # -- open readers -----------------------------------------------------------------
    @contextmanager
    def open(self, slide_id: str) -> Iterator[_Open]:
        """An open reader and its Deep Zoom pyramid, shared with other requests."""
        entry = self.get(slide_id)
        with self._cache_lock:
            handle = self._cache.get(slide_id)
            if handle is not None:
                self._cache.move_to_end(slide_id)
                handle.users += 1
        if handle is None:
            # outside the lock: opening may take a while
            reader = open_slide(entry.path, self.max_plain_pixels)
            fresh = _Open(reader=reader, zoom=DeepZoom(reader), users=1)
            with self._cache_lock:
                handle = self._cache.get(slide_id)
                if handle is None:
                    handle = fresh
                    self._cache[slide_id] = handle
                    while len(self._cache) > self.max_open:
                        _, old = self._cache.popitem(last=False)
                        old.evicted = True
                        if old.users == 0:
                            old.reader.close()
                else:  # another request opened it meanwhile
                    handle.users += 1
                    reader.close()
        try:
            yield handle
        finally:
            with self._cache_lock:
                handle.users -= 1
                if handle.evicted and handle.users == 0:
                    handle.reader.close()

    @property
    def open_count(self) -> int:
        with self._cache_lock:
            return len(self._cache)

    def close(self) -> None:
        with self._cache_lock:
            for handle in self._cache.values():
                handle.evicted = True
                if handle.users == 0:
                    handle.reader.close()
            self._cache.clear()


class SlideNotFound(IdcscanError):
    """A slide id that names no readable slide under the root (answered with 404)."""
