"""IDC maps of browsed slides, made in the background and kept per slide and model.

``MapStore`` runs ``idcscan.maps.run.analyse_slide`` (the function behind
``idcscan slide``) in one worker thread, one slide at a time, so mapping never starves the
tile server, and reports progress. Outputs land in
``<maps>/<model sha256[:12]>/<slide id>/<slide name>/``: the very files ``idcscan slide``
writes, built aside and renamed into place, so a folder with ``summary.json`` is complete
and a second visit opens it at once. The slide id already changes when the file does; the
model's hash keeps maps of different models apart. Folders are made 0700 and files 0600
(a map describes a patient's slide); summary.json names the slide by its path under the
slide folder.

``idcscan serve --slides`` runs one process per core, and a browser's progress requests may
reach any of them, so a job lives on disk beside its outputs: ``.job.lock`` is held
(``flock``) by the one process mapping the slide for as long as it does, and ``.job.json``
says how far it is. The kernel drops the lock when that process dies, so a job whose file
says "running" but whose lock is free was cut off, and is reported as failed (start it
again), never as forever running. Which jobs are taken at all is ``server.map_queue``'s
call; a cancel request leaves ``.cancel`` beside the job, which the process running it
reads at its next batch of tiles, whichever process that is.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idcscan.errors import IdcscanError
from idcscan.maps.mapper import ScaleWarning, SlideOptions
from idcscan.maps.slide_map import SUMMARY_JSON
from idcscan.maps.run import analyse_slide
from idcscan.runtime.predictor import Predictor
from idcscan.server.map_queue import (
    PRIVATE_FILE, JobQueue, QueueFull, client_key, lock_is_free, make_private, private_dir,
    take_lock,
)
from idcscan.server.slide_library import SlideEntry, one_line

log = logging.getLogger(__name__)
ACTIVE = ("queued", "running")


@dataclass
class MapJob:
    state: str = "queued"  # queued, running, done, failed, cancelled
    done: int = 0
    total: int = 0
    error: str | None = None
    warnings: tuple[str, ...] = ()
    mpp: float | None = None  # the scale the request gave (kept in the job file, not answered)

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "error": self.error,
            "warnings": list(self.warnings),
        }


class MapBusy(IdcscanError):
    """A re-map of a slide whose map is under way, or a cancel with nothing to cancel (409)."""


class MapCancelled(Exception):
    """Raised from the progress callback to stop a job that was asked to stop."""


JOB_FILE = ".job.json"
LOCK_FILE = ".job.lock"
CANCEL_FILE = ".cancel"


def _write_job(path: Path, job: MapJob) -> None:
    # progress is advisory, read by other processes: whole-file replace, no fsync
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps({**job.as_dict(), "mpp": job.mpp}))
    os.replace(tmp, path)


def _read_job(path: Path) -> MapJob | None:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    try:
        mpp = raw.get("mpp")
        return MapJob(state=str(raw.get("state", "none")), done=int(raw.get("done", 0)),
                      total=int(raw.get("total", 0)), error=raw.get("error"),
                      warnings=tuple(str(w) for w in raw.get("warnings", ())),
                      mpp=None if mpp is None else float(mpp))
    except (TypeError, ValueError):
        return None


class MapStore:
    """``max_jobs``: maps queued or running server-wide; ``max_tiles``: the largest grid one
    job may map (``SlideOptions.max_tiles``)."""

    def __init__(self, root: str | Path, predictor: Predictor, max_jobs: int = 8,
                 max_tiles: int | None = None) -> None:
        self.predictor = predictor
        self.maps_root = Path(root)
        self.root = self.maps_root / (predictor.card.onnx_sha256 or "model")[:12]
        self.max_tiles = max_tiles
        self.queue = JobQueue(self.root, self._holds_lock, max_jobs=max_jobs)
        self._jobs: dict[str, MapJob] = {}  # the jobs this process runs or ran
        self._locks: dict[str, int] = {}  # lock descriptors of those not finished
        self._futures: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="idcscan-map")
        self._mapper: Predictor | None = None

    def _holds_lock(self, slide_id: str) -> bool:
        return not lock_is_free(self.root / slide_id / LOCK_FILE)

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

    def redact(self, entry: SlideEntry, text: str) -> str:
        """A message as a client may read it: no slide folder, no maps folder."""
        text = entry.redact(text)
        for place in sorted({str(self.maps_root), str(self.maps_root.resolve())},
                            key=len, reverse=True):
            text = text.replace(place, "<maps>")
        return one_line(text)

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
        if job is not None and job.state in ACTIVE and lock_is_free(base / LOCK_FILE):
            job = _read_job(base / JOB_FILE)  # it may have ended between the two reads
            if job is not None and job.state in ACTIVE:
                job.state = "failed"
                job.error = ("The process that was mapping this slide stopped before it "
                             "finished; start the map again.")
        return job

    def _current(self, entry: SlideEntry) -> MapJob | None:
        """This process's job while it runs; otherwise what the folder says (a retry, or a
        later map, may have been made by another process since)."""
        with self._lock:
            job = self._jobs.get(entry.id)
        if job is not None and job.state in ACTIVE:
            return job
        return self._on_disk(entry) or job

    def status(self, entry: SlideEntry) -> dict[str, Any]:
        """``state``: none, queued, running, done (a finished folder exists), failed or
        cancelled (and no earlier map to show)."""
        job = self._current(entry)
        if job is not None and job.state in ACTIVE:
            return job.as_dict()
        if self.folder(entry) is not None:
            return MapJob(state="done", warnings=job.warnings if job else ()).as_dict()
        if job is not None and job.state in ("failed", "cancelled"):
            return job.as_dict()
        return MapJob(state="none").as_dict()

    def start(self, entry: SlideEntry, mpp: float | None = None, client: str | None = None,
              replace: bool = False) -> dict[str, Any]:
        """Queue a map of ``entry`` unless one exists or is under way (in this process or
        another); returns its status. ``replace``: map again even if a map exists (it is
        swapped for the new one when that is done). Raises ``QueueFull`` when the queue, or
        the client's share of it, is full, and ``MapBusy`` for a re-map of a slide being
        mapped."""
        with self._lock:
            job = self._jobs.get(entry.id)
            if job is not None and job.state in ACTIVE:
                return self._already(entry, job, replace, mpp)
        if not replace and self.folder(entry) is not None:
            return MapJob(state="done").as_dict()
        base = self.root / entry.id
        try:
            private_dir(self.maps_root, ours=False)
            private_dir(self.root)
            private_dir(base)
            with self.queue.admission():
                return self._enter(entry, base, mpp, client_key(client), replace)
        except OSError as exc:
            log.warning("Cannot start a map of %s under %s: %s", entry.relpath, self.root, exc)
            return MapJob(state="failed", error=self.redact(entry, (
                "Cannot write maps in the maps folder (--maps): "
                f"{exc.strerror or exc}; the server's log says where it is."))).as_dict()

    def _already(self, entry: SlideEntry, job: MapJob | None, replace: bool,
                 mpp: float | None) -> dict[str, Any]:
        """The status of the slide's map under way, for a request that would start another:
        MapBusy for a re-map, and for a scale other than the one it is being made at (that
        request's map would silently be another scale's)."""
        status = job.as_dict() if job is not None else self.status(entry)
        if replace:
            raise MapBusy(f"A map of {entry.relpath} is {status['state']} already; wait for it "
                          "or cancel it before mapping the slide again.")
        if job is not None and mpp is not None and job.mpp is not None and job.mpp != mpp:
            raise MapBusy(f"{entry.relpath} is being mapped at {job.mpp:g} µm/px; to map it at "
                          f"{mpp:g}, cancel that map or wait for it, then ask for a re-map "
                          f"(POST /api/slides/{entry.id}/map/remap).")
        return status

    def _enter(self, entry: SlideEntry, base: Path, mpp: float | None, client: str,
               replace: bool) -> dict[str, Any]:
        fd = take_lock(base / LOCK_FILE)
        if fd is None:  # another server process is mapping it
            return self._already(entry, self._current(entry), replace, mpp)
        try:
            if not replace and self.folder(entry) is not None:  # finished meanwhile
                os.close(fd)
                return MapJob(state="done").as_dict()
            self.queue.check(entry.id, client)
            (base / CANCEL_FILE).unlink(missing_ok=True)  # a request for an earlier job
            job = MapJob(mpp=mpp)
            _write_job(base / JOB_FILE, job)
            with self._lock:
                current = self._jobs.get(entry.id)
                if current is not None and current.state in ACTIVE:
                    os.close(fd)  # a thread of this process got there first
                    return self._already(entry, current, replace, mpp)
                self.queue.add(entry.id, client)
                self._jobs[entry.id] = job
                self._locks[entry.id] = fd
                self._futures[entry.id] = self._pool.submit(self._run, entry, job, mpp)
        except QueueFull:
            os.close(fd)
            raise
        except (OSError, RuntimeError) as exc:  # a read-only folder; a server shutting down
            with self._lock:
                if self._locks.get(entry.id) == fd:
                    del self._locks[entry.id]
                    self._jobs.pop(entry.id, None)
                    self._futures.pop(entry.id, None)
            self.queue.remove(entry.id)
            os.close(fd)
            log.warning("Cannot start a map of %s: %s", entry.relpath, exc)
            return MapJob(state="failed", error=self.redact(entry, (
                f"Cannot start the map: {getattr(exc, 'strerror', None) or exc}."))).as_dict()
        return job.as_dict()

    def cancel(self, entry: SlideEntry) -> dict[str, Any]:
        """Stop the slide's queued or running map, in whichever process has it: a queued job
        of this process at once, a running one at its next batch of tiles. Raises
        ``MapBusy`` when no map of the slide is under way."""
        with self._lock:
            job, future = self._jobs.get(entry.id), self._futures.get(entry.id)
            fd = None
            if job is not None and job.state == "queued" and future is not None \
                    and future.cancel():
                job.state = "cancelled"
                fd = self._locks.pop(entry.id, None)
                self._futures.pop(entry.id, None)
        if fd is not None:
            self._finish(entry, job, fd)
            return job.as_dict()
        status = self.status(entry)
        if status["state"] not in ACTIVE:
            raise MapBusy(f"No map of {entry.relpath} is queued or running; nothing to cancel.")
        fd = os.open(self.root / entry.id / CANCEL_FILE, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE)
        os.close(fd)
        return status

    def _finish(self, entry: SlideEntry, job: MapJob, fd: int | None) -> None:
        """Record how the job ended, leave the queue, and let the other processes in."""
        try:
            _write_job(self.root / entry.id / JOB_FILE, job)
        except OSError:
            pass  # progress is advisory; the outputs say how the map ended
        self.queue.remove(entry.id)
        (self.root / entry.id / CANCEL_FILE).unlink(missing_ok=True)
        if fd is not None:
            os.close(fd)  # releases the lock for the other processes

    def _run(self, entry: SlideEntry, job: MapJob, mpp: float | None) -> None:
        base = self.root / entry.id
        shown = [-1]

        def record() -> None:
            try:
                _write_job(base / JOB_FILE, job)
            except OSError:
                pass

        def progress(done: int, total: int) -> None:
            if (base / CANCEL_FILE).exists():
                raise MapCancelled
            job.done, job.total = done, total
            percent = done * 100 // max(total, 1)
            if percent != shown[0]:  # at most ~100 writes a job
                shown[0] = percent
                record()

        job.state = "running"
        try:
            if (base / CANCEL_FILE).exists():
                raise MapCancelled
            record()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ScaleWarning)
                analyse_slide(
                    self._map_predictor(), entry.path, base,
                    SlideOptions(mpp=mpp, max_tiles=self.max_tiles), on_progress=progress,
                    recorded_path=entry.relpath,
                )  # fmt: skip
            made = self.folder(entry)
            if made is not None:
                make_private(made)
            # the recorder sees every thread's warnings: keep the ones about this map's scale
            job.warnings = tuple(self.redact(entry, str(w.message)) for w in caught
                                 if issubclass(w.category, ScaleWarning))  # fmt: skip
            job.state = "done"
        except MapCancelled:
            job.state = "cancelled"
            job.error = "The map was cancelled before it was done."
        except IdcscanError as exc:
            job.error = self.redact(entry, str(exc))
            job.state = "failed"
        except Exception as exc:  # a bug: reported on the page rather than lost in a thread
            log.exception("Mapping %s failed", entry.relpath)
            job.error = self.redact(entry, (
                f"Internal error while mapping (a bug): {type(exc).__name__}: {exc}"))
            job.state = "failed"
        finally:
            with self._lock:
                fd = self._locks.pop(entry.id, None)
                self._futures.pop(entry.id, None)
            self._finish(entry, job, fd)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:  # jobs cancelled before they began give their slides back
            ended = []
            for slide_id, future in list(self._futures.items()):
                fd = self._locks.get(slide_id)
                if future.cancelled() and fd is not None:
                    del self._locks[slide_id], self._futures[slide_id]
                    ended.append((slide_id, fd))
        for slide_id, fd in ended:
            self.queue.remove(slide_id)
            os.close(fd)
