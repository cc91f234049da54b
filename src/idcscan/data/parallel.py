"""Ordered parallel map over a process pool, with a rich progress bar.

Decoding PNGs (prepare) and rendering patients (synth) are CPU-bound and independent per item,
so they scale with cores. Results come back in task order whatever the timing, which keeps
outputs byte-identical across runs and machines.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_all_start_methods, get_context
from typing import Any, TypeVar


from idcscan.progress import progress_bar
from idcscan.errors import IdcscanError

T = TypeVar("T")


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None) -> int:
    if workers is None:
        return available_cores()
    if workers < 1:
        raise IdcscanError("--workers must be at least 1.")
    return int(workers)


def map_ordered(
    fn: Callable[[Any], T],
    tasks: Sequence[Any],
    *,
    workers: int,
    description: str,
    weights: Sequence[int] | None = None,
    progress: bool = True,
    on_result: Callable[[int, T], None] | None = None,
) -> list[T]:
    """``[fn(t) for t in tasks]``, in parallel when ``workers`` > 1 and there is > 1 task.

    With ``on_result(i, result)`` each result is handed over as it arrives and not kept (for
    large outputs), and the returned list is empty. ``weights`` (e.g. files per chunk) drive
    the progress bar. Workers are forked where the OS
    allows (cheap, and a user's script needs no ``__main__`` guard); every task is submitted
    before the progress bar starts its refresh thread, so no thread exists at fork time.
    """
    weights = list(weights) if weights is not None else [1] * len(tasks)
    total = sum(weights)
    results: list[Any] = [None] * len(tasks)

    def take(i: int, result: T) -> None:
        if on_result is None:
            results[i] = result
        else:
            on_result(i, result)

    if workers <= 1 or len(tasks) <= 1:
        with progress_bar(progress) as bar:
            task = bar.add_task(description, total=total)
            for i, t in enumerate(tasks):
                take(i, fn(t))
                bar.advance(task, weights[i])
        return results if on_result is None else []
    method = "fork" if "fork" in get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)), mp_context=get_context(method)
    ) as pool:
        futures = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
        with progress_bar(progress) as bar:
            task = bar.add_task(description, total=total)
            for fut in as_completed(futures):
                i = futures[fut]
                take(i, fut.result())
                bar.advance(task, weights[i])
    return results if on_result is None else []
