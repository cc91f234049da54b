"""IDC maps of browsed slides, made in the background and kept per slide and model.

``MapStore`` runs ``idcscan.maps.run.analyse_slide`` (the function behind
``idcscan slide``) in one worker thread, one slide at a time, so mapping never starves the
tile server, and reports progress. Outputs land in
``<maps>/<model sha256[:12]>/<slide id>/<slide name>/``: the very files ``idcscan slide``
writes, built aside and renamed into place, so a folder with ``summary.json`` is complete
and a second visit opens it at once. The slide id already changes when the file does; the
model's hash keeps maps of different models apart.

``idcscan serve --slides`` runs one process per core, and a browser's progress requests may
reach any of them, so a job lives on disk beside its outputs: ``.job.lock`` is held
(``flock``) by the one process mapping the slide for as long as it does, and ``.job.json``
says how far it is. The kernel drops the lock when that process dies, so a job whose file
says "running" but whose lock is free was cut off, and is reported as failed (start it
again), never as forever running.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idcscan.errors import IdcscanError
from idcscan.runtime.predictor import Predictor
from idcscan.maps.mapper import SUMMARY_JSON, ScaleWarning, SlideOptions
from idcscan.maps.run import analyse_slide
from idcscan.server.slide_library import SlideEntry, one_line


@dataclass
class MapJob:
    state: str = "queued"  # queued, running, done, failed
    done: int = 0
    total: int = 0
    error: str | None = None
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "error": self.error,
            "warnings": list(self.warnings),
        }


JOB_FILE = ".job.json"
LOCK_FILE = ".job.lock"
#: How often ``start`` retries a lock it found taken: a status probe in another process holds
#: a shared lock for microseconds, and a click must not be lost to it.
LOCK_TRIES = 5


def _write_job(path: Path, job: MapJob) -> None:
    # progress is advisory, read by other processes: whole-file replace, no fsync
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(job.as_dict()))
    os.replace(tmp, path)


def _read_job(path: Path) -> MapJob | None:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    try:
        return MapJob(state=str(raw.get("state", "none")), done=int(raw.get("done", 0)),
                      total=int(raw.get("total", 0)), error=raw.get("error"),
                      warnings=tuple(str(w) for w in raw.get("warnings", ())))
    except (TypeError, ValueError):
        return None


def _lock_is_free(path: Path) -> bool:
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


def _take_lock(path: Path) -> int | None:
    """The job lock's descriptor, held exclusively; None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    for attempt in range(LOCK_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if attempt + 1 < LOCK_TRIES:
                time.sleep(0.01)
    os.close(fd)
    return None


class MapStore:
    def __init__(self, root: str | Path, predictor: Predictor) -> None:
        self.predictor = predictor
        self.root = Path(root) / (predictor.card.onnx_sha256 or "model")[:12]
        self._jobs: dict[str, MapJob] = {}  # the jobs this process runs or ran
        self._locks: dict[str, int] = {}  # lock descriptors of those not finished
        self._futures: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="idcscan-map")
        self._mapper: Predictor | None = None

    def _map_predictor(self) -> Predictor:
        """A predictor with every core for mapping: the serving one of a worker process has
        only its share of them (one per worker), and a map is one long batch job."""
        if self._mapper is None:
            cores = os.cpu_count() or 1
            serving = self.predictor.engine.info.threads
            self._mapper = self.predictor if serving >= cores else \
                Predictor(self.predictor.bundle, threads=cores,
                          runtime=self.predictor.engine.info.engine)
        return self._mapper

    def folder(self, entry: SlideEntry) -> Path | None:
        """The finished map folder of a slide, or None (hidden folders are maps being
        written or replaced)."""
        base = self.root / entry.id
        if not base.is_dir():
            return None
        found = sorted(p.parent for p in base.glob(f"*/{SUMMARY_JSON}")
                       if not p.parent.name.startswith("."))
        return found[0] if found else None

    def _on_disk(self, entry: SlideEntry) -> MapJob | None:
        """The job the processes sharing this folder recorded for the slide."""
        base = self.root / entry.id
        job = _read_job(base / JOB_FILE)
        if job is not None and job.state in ("queued", "running") and \
                _lock_is_free(base / LOCK_FILE):
            job = _read_job(base / JOB_FILE)  # it may have ended between the two reads
            if job is not None and job.state in ("queued", "running"):
                job.state = "failed"
                job.error = ("The process that was mapping this slide stopped before it "
                             "finished; start the map again.")
        return job

    def _current(self, entry: SlideEntry) -> MapJob | None:
        """This process's job while it runs; otherwise what the folder says (a retry, or a
        later map, may have been made by another process since)."""
        with self._lock:
            job = self._jobs.get(entry.id)
        if job is not None and job.state in ("queued", "running"):
            return job
        return self._on_disk(entry) or job

    def status(self, entry: SlideEntry) -> dict[str, Any]:
        """``state``: none, queued, running, done (a finished folder exists) or failed."""
        job = self._current(entry)
        if job is not None and job.state in ("queued", "running"):
            return job.as_dict()
        if self.folder(entry) is not None:
            return MapJob(state="done", warnings=job.warnings if job else ()).as_dict()
        if job is not None and job.state == "failed":
            return job.as_dict()
        return MapJob(state="none").as_dict()

    def start(self, entry: SlideEntry, mpp: float | None = None) -> dict[str, Any]:
        """Queue a map of ``entry`` unless one exists or is under way (in this process or
        another); returns its status."""
        with self._lock:
            job = self._jobs.get(entry.id)
            if job is not None and job.state in ("queued", "running"):
                return job.as_dict()
        if self.folder(entry) is not None:
            return MapJob(state="done").as_dict()
        base = self.root / entry.id
        try:
            base.mkdir(parents=True, exist_ok=True)
            fd = _take_lock(base / LOCK_FILE)
        except OSError as exc:
            return MapJob(state="failed", error=one_line(
                f"Cannot write maps under {self.root}: {exc.strerror or exc}.")).as_dict()
        if fd is None:  # another server process is mapping it
            return self.status(entry)
        job = MapJob()
        try:
            if self.folder(entry) is not None:  # finished while we took the lock
                os.close(fd)
                return MapJob(state="done").as_dict()
            _write_job(base / JOB_FILE, job)
            with self._lock:
                if self._jobs.get(entry.id) is not None and \
                        self._jobs[entry.id].state in ("queued", "running"):
                    os.close(fd)  # a thread of this process got there first
                    return self._jobs[entry.id].as_dict()
                self._jobs[entry.id] = job
                self._locks[entry.id] = fd
                self._futures[entry.id] = self._pool.submit(self._run, entry, job, mpp)
        except (OSError, RuntimeError) as exc:  # a read-only folder; a server shutting down
            with self._lock:
                if self._locks.get(entry.id) == fd:
                    del self._locks[entry.id]
                    self._jobs.pop(entry.id, None)
            os.close(fd)
            return MapJob(state="failed", error=one_line(
                f"Cannot start the map: {getattr(exc, 'strerror', None) or exc}.")).as_dict()
        return job.as_dict()

    def _run(self, entry: SlideEntry, job: MapJob, mpp: float | None) -> None:
        path = self.root / entry.id / JOB_FILE
        shown = [-1]

        def record() -> None:
            try:
                _write_job(path, job)
            except OSError:
                pass  # progress is advisory; the outputs say how the map ended

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total
            percent = done * 100 // max(total, 1)
            if percent != shown[0]:  # at most ~100 writes a job
                shown[0] = percent
                record()

        job.state = "running"
        try:
            record()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ScaleWarning)
                analyse_slide(
                    self._map_predictor(), entry.path, self.root / entry.id,
                    SlideOptions(mpp=mpp), on_progress=progress,
                )  # fmt: skip
            # the recorder sees every thread's warnings: keep the ones about this map's scale
            job.warnings = tuple(entry.redact(str(w.message)) for w in caught
                                 if issubclass(w.category, ScaleWarning))  # fmt: skip
            job.state = "done"
        except IdcscanError as exc:
            job.error = one_line(entry.redact(str(exc)))
            job.state = "failed"
        except Exception as exc:  # a bug: reported on the page rather than lost in a thread
            job.error = one_line(entry.redact(
                f"Internal error while mapping (a bug): {type(exc).__name__}: {exc}"))
            job.state = "failed"
        finally:
            record()
            with self._lock:
                fd = self._locks.pop(entry.id, None)
                self._futures.pop(entry.id, None)
            if fd is not None:
                os.close(fd)  # releases the lock for the other processes

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:  # jobs cancelled before they began give their slides back
            for slide_id, future in list(self._futures.items()):
                fd = self._locks.get(slide_id)
                if future.cancelled() and fd is not None:
                    del self._locks[slide_id], self._futures[slide_id]
                    os.close(fd)
