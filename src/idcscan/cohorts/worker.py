"""What runs on a Dask worker: map one slide, from its path, into the shared output folder.

Only paths and options travel to the worker; the slide reader is opened there, and each
worker process keeps one ONNX Runtime session per bundle (built on its first slide), with its
intra-op threads set to the cores Dask gave that worker (its ``nthreads``), so N workers on a
machine never start more inference threads than it has cores.

The task is idempotent: outputs are built in a hidden folder and renamed into place
(``analyse_slide``), and a slide already mapped from this very file is not redone. So when a
worker dies and Dask reruns its slides elsewhere, or a whole run is killed and started again, nothing is
mapped twice into a half-written folder, and nothing half-written is taken as finished.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from idcscan.errors import IdcscanError
from idcscan.maps.failures import record_failure
from idcscan.maps.mapper import ScaleWarning, SlideOptions
from idcscan.maps.slide_map import SUMMARY_JSON
from idcscan.maps.identity import fingerprint, previous_map
from idcscan.maps.run import analyse_slide, slide_name
from idcscan.runtime.predictor import Predictor

#: Dask event topic on which workers report tiles done (client: ``subscribe_topic``)
PROGRESS_TOPIC = "idcscan-slide-progress"
#: at most one progress event per slide per this many seconds (plus the first and last)
PROGRESS_INTERVAL_S = 0.5

_predictors: dict[tuple[str, int, int, str | None], Predictor] = {}
_lock = threading.Lock()


def worker_threads() -> int:
    """Inference threads for this worker: the cores its deployer gave it (Dask ``nthreads``)."""
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):  # not inside a Dask worker
        return max(1, len(os.sched_getaffinity(0)))


def worker_predictor(bundle: str, batch_size: int, threads: int | None = None,
                     runtime: str | None = None) -> Predictor:
    """This process's model for ``bundle``, created once and shared by its task threads.
    ``runtime``: the client's engine choice, so remote workers follow it too."""
    threads = threads or worker_threads()
    key = (str(Path(bundle).resolve()), batch_size, threads, runtime)
    with _lock:
        predictor = _predictors.get(key)
        if predictor is None:
            predictor = Predictor(bundle, threads=threads, batch_size=batch_size,
                                  runtime=runtime)
            _predictors[key] = predictor
    return predictor


def _progress_reporter(name: str):  # -> ProgressFn
    """Send (done, total) tile counts of slide ``name`` to the client, throttled."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done in (0, total) or now - last[0] >= PROGRESS_INTERVAL_S:
            last[0] = now
            worker.log_event(
                PROGRESS_TOPIC,
                {"slide": name, "done": done, "total": total, "pid": os.getpid()},
            )

    return report


def map_one(path: str, bundle: str, out_dir: str, options: SlideOptions,
            runtime: str | None = None) -> dict[str, Any]:
    """Map one slide; never raises for a bad slide (the result says ``failed`` and why).

    Returns ``{"slide", "path", "status": ok|skipped|failed, "summary", "error",
    "warnings"}``; ``summary`` is summary.json's content for ok and skipped slides.
    """
    name = slide_name(path)
    result: dict[str, Any] = {
        "slide": name, "path": path, "status": "ok", "summary": None, "error": "",
        "warnings": [],
    }  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ScaleWarning)
        try:
            content = fingerprint(path)
            folder = Path(out_dir) / name
            if previous_map(folder, Path(path), content, options.regions_key).state == "same":
                # a rerun of a task whose result was lost: this very file is mapped already
                result["status"] = "skipped"
                result["summary"] = json.loads((folder / SUMMARY_JSON).read_text())
                return result
            predictor = worker_predictor(bundle, options.batch_size, runtime=runtime)
            summary = analyse_slide(predictor, path, out_dir, options, _progress_reporter(name),
                                    content=content)
        except Exception as exc:  # one bad slide must not stop the cohort
            error = str(exc) if isinstance(exc, IdcscanError) else f"{type(exc).__name__}: {exc}"
            record_failure(out_dir, name, path, error)
            result.update(status="failed", error=error)
        else:
            result["summary"] = summary.to_dict()
    result["warnings"] = [
        str(w.message) for w in caught if issubclass(w.category, ScaleWarning)
    ]
    return result
