"""Cohorts on Dask distributed: one task per slide, on a local cluster or an existing one.

``run_cohort`` is ``run_slides`` spread over Dask workers: the same inputs, shards, options,
outputs and resume; the client only plans, watches and summarises. ``--cluster local[:N]``
starts a ``LocalCluster`` of N worker processes; ``tcp://HOST:PORT`` or a scheduler file joins
one started elsewhere (``dask scheduler`` / ``dask worker``, dask-jobqueue on SLURM, ...),
whose workers must see the bundle, the slides and ``--out`` at the same paths.

A worker lost mid-slide has its slides rescheduled by the scheduler (up to its
``distributed.scheduler.allowed-failures``); the task (``cohort_worker.map_one``) is
idempotent, so a rerun is harmless. A slide that keeps killing workers is reported failed.
"""

from __future__ import annotations

import logging
import os
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idcscan.cohorts.report import write_model_card, write_report
from idcscan.cohorts.worker import PROGRESS_TOPIC, map_one
from idcscan.errors import IdcscanError
from idcscan.maps.failures import record_failure
from idcscan.maps.mapper import ScaleWarning, SlideOptions
from idcscan.maps.slide_map import SlideSummary
from idcscan.maps.identity import plan_run
from idcscan.maps.run import (
    RunReport,
    expand_inputs,
    parse_shard,
    select_shard,
    slide_name,
    write_summary_csv,
)
from idcscan.progress import progress_bar
from idcscan.runtime.engine import resolve_runtime

#: memory one worker may need for a large slide (slide_throughput peaks well under 2 GB)
WORKER_MEMORY_GIB = 2.0

#: (slide, tiles done, tiles total, worker pid): called on the client as workers report
ProgressCallback = Callable[[str, int, int, int], None]


@dataclass(frozen=True)
class ClusterSpec:
    """Where the cohort runs: ``local`` (n workers), an ``address`` or a ``scheduler_file``."""

    kind: str
    workers: int = 0
    address: str = ""

    def describe(self) -> str:
        if self.kind == "local":
            return f"a local Dask cluster of {self.workers} worker process(es)"
        return f"the Dask cluster at {self.address}"


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """What the machine can feed: one worker per core, fewer if memory is short."""
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gib = WORKER_MEMORY_GIB * available_cores()
    return max(1, min(available_cores(), int(memory_gib // WORKER_MEMORY_GIB)))


def parse_cluster(spec: str) -> ClusterSpec:
    """``local``, ``local:N``, ``tcp://HOST:PORT`` (or tls://, ucx://) or a scheduler file."""
    text = spec.strip()
    if text == "local" or text.startswith("local:"):
        count = text.partition(":")[2]
        if not count:
            return ClusterSpec("local", workers=default_workers())
        if not count.isdigit() or int(count) < 1:
            raise IdcscanError(f"--cluster local:N needs a whole number N >= 1, got {spec!r}.")
        return ClusterSpec("local", workers=int(count))
    if "://" in text:
        return ClusterSpec("address", address=text)
    if Path(text).is_file():
        return ClusterSpec("scheduler_file", address=str(Path(text).resolve()))
    raise IdcscanError(
        f"--cluster must be local, local:N, tcp://HOST:PORT or a Dask scheduler file; "
        f"{spec!r} is none of these (no such file)."
    )


@contextmanager
def dask_client(spec: ClusterSpec) -> Iterator[Any]:
    """A connected ``distributed.Client``; a local cluster lives as long as the block."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - a declared dependency
        raise IdcscanError(
            "--cluster needs Dask distributed: pip install 'dask[distributed]'."
        ) from None
    if spec.kind == "local":
        threads = max(1, available_cores() // spec.workers)
        with LocalCluster(
            n_workers=spec.workers,
            threads_per_worker=threads,
            processes=True,
            dashboard_address=":8787",  # the Dask default; another port if taken
            silence_logs=logging.ERROR,
        ) as cluster, Client(cluster) as client:  # fmt: skip
            yield client
        return
    try:
        if spec.kind == "scheduler_file":
            client = Client(scheduler_file=spec.address, timeout="20s")
        else:
            client = Client(spec.address, timeout="20s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise IdcscanError(
            f"Could not reach the Dask scheduler at {spec.address} ({exc}). Is it running, "
            "and reachable from here?"
        ) from None
    with client:
        yield client


def dashboard_address(client: Any) -> str | None:
    """The Dask dashboard's address when the scheduler serves one."""
    try:
        if "dashboard" not in client.scheduler_info().get("services", {}):
            return None
        return str(client.dashboard_link)
    except Exception:  # noqa: BLE001 - informative only
        return None


@dataclass
class CohortReport(RunReport):
    """``RunReport`` plus where it ran and the report page."""

    cluster: str = ""
    dashboard: str | None = None
    report_html: Path | None = None
    warnings: list[str] = field(default_factory=list)


class _CohortProgress:
    """One bar for the cohort: slides done of total, tiles mapped so far in the text."""

    def __init__(self, bar: Any, n_slides: int, on_progress: ProgressCallback | None) -> None:
        self.bar = bar
        self.task = bar.add_task("cohort", total=n_slides)
        self.tiles: dict[str, int] = {}
        self.finished: set[str] = set()
        self.on_progress = on_progress

    def event(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        if msg["slide"] not in self.finished:  # events may arrive after the result
            self.tiles[msg["slide"]] = int(msg["done"])  # a rerun restarts the slide's count
            self._refresh()
        if self.on_progress is not None:
            self.on_progress(msg["slide"], int(msg["done"]), int(msg["total"]), int(msg["pid"]))

    def slide_done(self, name: str, n_tiles: int) -> None:
        self.finished.add(name)
        self.tiles[name] = n_tiles
        self.bar.advance(self.task)
        self._refresh()

    def _refresh(self) -> None:
        self.bar.update(self.task, description=f"cohort, {sum(self.tiles.values())} tiles")


def run_cohort(
    bundle: str | Path,
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    options: SlideOptions = SlideOptions(),
    cluster: str | ClusterSpec = "local",
    shard: str | tuple[int, int] | None = None,
    progress: bool = True,
    console: Any = None,
    report: bool = True,
    on_progress: ProgressCallback | None = None,
    client: Any = None,
) -> CohortReport:
    """Map many slides on Dask, one task per slide; write summary.csv and report.html.

    Slides already mapped from the same file are skipped (resume), a name shared with a
    different file already mapped there refuses the run; a failing slide is recorded
    (summary.csv ``status`` failed, ``error``) and the others go on. ``client``: an already connected
    ``distributed.Client`` to use instead of ``cluster``. ScaleWarnings raised on the
    workers are re-issued here, once per slide.
    """
    from idcscan.runtime.bundle import load_bundle

    out_dir = Path(out_dir).resolve()
    card = load_bundle(bundle).card  # a bad bundle fails here, not on every worker
    spec = cluster if isinstance(cluster, ClusterSpec) else parse_cluster(cluster)
    shard_t = shard if isinstance(shard, tuple) else parse_shard(shard)
    paths = [p.resolve() for p in select_shard(expand_inputs(inputs), shard_t)]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_model_card(card.model_dump(mode="json"), out_dir)

    result = CohortReport(cluster=spec.describe() if client is None else str(client))
    # a clash stops here
    plan = plan_run(paths, out_dir, slide_name, options.regions_key, options.settings(card))
    result.skipped = plan.skipped
    todo = [path for path, _ in plan.todo]
    if todo:
        if client is not None:
            _run_on(client, str(Path(bundle).resolve()), todo, out_dir, options, result,
                    progress, console, on_progress)  # fmt: skip
        else:
            with dask_client(spec) as own:
                _run_on(own, str(Path(bundle).resolve()), todo, out_dir, options, result,
                        progress, console, on_progress)  # fmt: skip
    result.done.sort(key=lambda s: s.slide)  # completion order is the cluster's, not ours
    result.failed.sort(key=lambda f: str(f[0]))
    result.summary_csv = write_summary_csv(out_dir)
    if report:
        result.report_html = write_report(out_dir)
    return result


def _run_on(
    client: Any,
    bundle: str,
    paths: list[Path],
    out_dir: Path,
    options: SlideOptions,
    result: CohortReport,
    progress: bool,
    console: Any,
    on_progress: ProgressCallback | None,
) -> None:
    from distributed import as_completed

    result.dashboard = dashboard_address(client)
    if result.dashboard and console is not None:
        try:
            import bokeh  # noqa: F401  (draws the dashboard's pages)

            hint = ""
        except ImportError:
            hint = " (pip install bokeh to see it)"
        console.print(f"Dask dashboard: {result.dashboard}{hint}", highlight=False)
    run_id = uuid.uuid4().hex[:8]
    keys = [f"idcscan-slide-{slide_name(p)}-{run_id}" for p in paths]
    with progress_bar(progress, unit="slides", console=console) as bar:
        watcher = _CohortProgress(bar, len(paths), on_progress)
        client.subscribe_topic(PROGRESS_TOPIC, watcher.event)
        try:
            futures = client.map(
                map_one,
                [str(p) for p in paths],
                bundle=bundle,
                out_dir=str(out_dir),
                options=options,
                runtime=resolve_runtime(None),  # the client's choice, for remote workers too
                key=keys,
                pure=False,
            )
            path_of = {f.key: p for f, p in zip(futures, paths)}
            for future in as_completed(futures):
                _collect(future, path_of[future.key], out_dir, result, watcher)
                future.release()
        finally:
            client.unsubscribe_topic(PROGRESS_TOPIC)
    for message in result.warnings:
        warnings.warn(message, ScaleWarning, stacklevel=3)


def _collect(
    future: Any, path: Path, out_dir: Path, result: CohortReport, watcher: _CohortProgress
) -> None:
    name = slide_name(path)
    try:
        outcome = future.result()
    except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: the slide kept killing workers
        error = f"the task failed on the cluster ({type(exc).__name__}: {exc})"
        record_failure(out_dir, name, path, error)
        result.failed.append((path, error))
        watcher.slide_done(name, 0)
        return
    result.warnings.extend(outcome["warnings"])
    if outcome["status"] == "failed":
        result.failed.append((path, outcome["error"]))
        watcher.slide_done(name, 0)
        return
    data = outcome["summary"]
    summary = SlideSummary(**{k: data[k] for k in SlideSummary.__dataclass_fields__ if k in data})
    # Only slides planned to be mapped reach a worker, so one a worker finds already mapped
    # was mapped in this run, by an attempt whose result was lost with its worker: done.
    result.done.append(summary)
    watcher.slide_done(name, summary.n_tiles)
