"""IDC maps of browsed slides, made in the background and kept per slide and model.

``MapStore`` runs ``idcscan.inference.slide_run.analyse_slide`` (the function behind
``idcscan slide``) in one worker thread, one slide at a time, so mapping never starves the
tile server, and reports progress. Outputs land in
``<maps>/<model sha256[:12]>/<slide id>/<slide name>/``: the very files ``idcscan slide``
writes, built aside and renamed into place, so a folder with ``summary.json`` is complete
and a second visit opens it at once. The slide id already changes when the file does; the
model's hash keeps maps of different models apart.
"""

from __future__ import annotations

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idcscan.errors import IdcscanError
from idcscan.inference.predictor import Predictor
from idcscan.inference.slide import SUMMARY_JSON, ScaleWarning, SlideOptions
from idcscan.inference.slide_run import analyse_slide
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


class MapStore:
    def __init__(self, root: str | Path, predictor: Predictor) -> None:
        self.predictor = predictor
        self.root = Path(root) / (predictor.card.onnx_sha256 or "model")[:12]
        self._jobs: dict[str, MapJob] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="idcscan-map")

    def folder(self, entry: SlideEntry) -> Path | None:
        """The finished map folder of a slide, or None."""
        base = self.root / entry.id
        if not base.is_dir():
            return None
        found = sorted(p.parent for p in base.glob(f"*/{SUMMARY_JSON}"))
        return found[0] if found else None

    def status(self, entry: SlideEntry) -> dict[str, Any]:
        """``state``: none, queued, running, done (a finished folder exists) or failed."""
        with self._lock:
            job = self._jobs.get(entry.id)
        if job is not None and job.state != "done":
            return job.as_dict()
        if self.folder(entry) is not None:
            return MapJob(state="done", warnings=job.warnings if job else ()).as_dict()
        return MapJob(state="none").as_dict()

    def start(self, entry: SlideEntry, mpp: float | None = None) -> dict[str, Any]:
        """Queue a map of ``entry`` unless one exists or is under way; returns its status."""
        with self._lock:
            job = self._jobs.get(entry.id)
            if job is not None and job.state in ("queued", "running"):
                return job.as_dict()
            if self.folder(entry) is not None:
                return MapJob(state="done").as_dict()
            job = MapJob()
            self._jobs[entry.id] = job
        self._pool.submit(self._run, entry, job, mpp)
        return job.as_dict()

    def _run(self, entry: SlideEntry, job: MapJob, mpp: float | None) -> None:
        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        job.state = "running"
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ScaleWarning)
                analyse_slide(
                    self.predictor, entry.path, self.root / entry.id, SlideOptions(mpp=mpp),
                    on_progress=progress,
                )  # fmt: skip
            job.warnings = tuple(str(w.message) for w in caught)
            job.state = "done"
        except IdcscanError as exc:
            job.error = one_line(str(exc).replace(str(entry.path), entry.relpath))
            job.state = "failed"
        except Exception as exc:  # a bug: reported on the page rather than lost in a thread
            job.error = f"Internal error while mapping (a bug): {type(exc).__name__}: {exc}"
            job.state = "failed"

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
