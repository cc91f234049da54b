"""Slide mode on disk: one slide into ``OUT/<slide name>/`` (atomically), or many with resume
and sharding.

``analyse_slide`` maps a slide (``mapper.map_slide``) and writes the outputs other tools open
(``outputs.write_outputs``) beside its siblings; ``run_slides`` walks a list of slides, skips
the ones already mapped from the same file (``identity``: a folder's name alone never counts),
records failures and keeps going, then writes ``summary.csv`` for the whole folder.
``idcscan slide``, the Dask cohort runner and the viewer's "map this slide" action all end in
``analyse_slide``, so their folders are the same files.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idcscan.errors import IdcscanError
from idcscan.runtime.predictor import Predictor
from idcscan.maps.mapper import ProgressFn, SlideOptions, map_slide
from idcscan.maps.slide_map import SUMMARY_JSON, SlideSummary
from idcscan.maps.failures import clear_failure, read_failures, record_failure
from idcscan.maps.identity import fingerprint, plan_run
from idcscan.maps.outputs import write_outputs
from idcscan.slides.formats import open_slide
from idcscan.slides.reader import SUPPORTED_SUFFIXES
from idcscan.progress import progress_bar

SUMMARY_CSV = "summary.csv"


def slide_name(path: str | Path) -> str:
    """Output folder name of a slide: its file name without the (double) extension."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_finished(out_dir: Path, name: str) -> bool:
    """A complete folder of that name exists (of whichever file: see ``maps.identity``)."""
    return (out_dir / name / SUMMARY_JSON).is_file()


def analyse_slide(
    predictor: Predictor,
    path: str | Path,
    out_dir: str | Path,
    options: SlideOptions = SlideOptions(),
    on_progress: ProgressFn | None = None,
    *,
    recorded_path: str | None = None,
    content: str | None = None,
) -> SlideSummary:
    """Map one slide and write ``out_dir/<slide name>/`` (built aside, then renamed into place).

    A folder with ``summary.json`` is therefore always complete; an interrupted run leaves
    only a hidden ``.<name>.partial-<pid>`` folder, removed when the slide is done again.
    ``recorded_path``: the slide's path as summary.json gives it (default ``path``; the
    server gives its path under the slide folder, never where that folder lives).
    ``content``: the file's fingerprint if already taken (``maps.identity``).
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    name = slide_name(path)
    content = content or fingerprint(path)
    with open_slide(path) as reader:
        slide = map_slide(predictor, reader, options, name=name, on_progress=on_progress)
    slide.path = str(path) if recorded_path is None else recorded_path
    slide.fingerprint = content

    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    for pattern in (f".{name}.partial-*", f".{name}.old-*"):
        for stale in out_dir.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out_dir / f".{name}.partial-{os.getpid()}"
    tmp.mkdir()
    try:
        summary = write_outputs(slide, tmp, timings_start=(t_start, t0))
        final = out_dir / name
        old = out_dir / f".{name}.old-{os.getpid()}"
        if final.exists():  # moved aside whole (one rename), never half-deleted in place
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    clear_failure(out_dir, name)
    return summary


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``"i/n"`` (1-based, e.g. ``$SLURM_ARRAY_TASK_ID/4``) -> (i, n); None -> (1, 1)."""
    if shard is None:
        return 1, 1
    try:
        i_text, n_text = shard.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise IdcscanError(f"--shard must look like i/n (e.g. 1/4), got {shard!r}.") from None
    if n < 1 or not 1 <= i <= n:
        raise IdcscanError(f"--shard {shard}: need 1 <= i <= n (i is 1-based).")
    return i, n


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to the supported images directly inside them; sorted."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = [
                f for f in p.iterdir() if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES
            ]
            if not found:
                kinds = ", ".join(sorted(SUPPORTED_SUFFIXES))
                raise IdcscanError(f"{p} holds no supported image ({kinds}).")
            paths.extend(found)
        elif p.exists():
            paths.append(p)
        else:
            raise IdcscanError(f"{p} does not exist.")
    paths = sorted(set(paths), key=lambda q: str(q))
    names: dict[str, Path] = {}
    for p in paths:
        other = names.setdefault(slide_name(p), p)
        if other != p:
            raise IdcscanError(
                f"{other} and {p} would both write {slide_name(p)}/; rename one of them or "
                "run them into different --out folders."
            )
    return paths


def select_shard(paths: Sequence[Path], shard: tuple[int, int]) -> list[Path]:
    """Shard i of n takes every n-th slide of the sorted list, starting at the i-th."""
    i, n = shard
    return list(paths[i - 1 :: n])


@dataclass
class RunReport:
    done: list[SlideSummary] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    summary_csv: Path | None = None


#: after the summary columns: ``ok`` or ``failed``, and why it failed
STATUS_COLUMNS = ("status", "error")


def write_summary_csv(out_dir: Path) -> Path | None:
    """``summary.csv``: one row per finished slide folder in ``out_dir`` (all shards), and one
    per slide that failed (``status`` failed, ``error``) and has not been mapped since."""
    rows = []
    for summary_path in sorted(out_dir.glob(f"*/{SUMMARY_JSON}")):
        try:
            data = json.loads(summary_path.read_text())
            fields = SlideSummary.__dataclass_fields__
            summary = SlideSummary(**{k: data[k] for k in fields if k in data})
        except (json.JSONDecodeError, TypeError, KeyError):
            continue
        rows.append({**summary.csv_row(), "status": "ok", "error": ""})
    finished = {row["slide"] for row in rows}
    for failure in read_failures(out_dir):
        if failure["slide"] not in finished:
            rows.append(
                {"slide": failure["slide"], "path": failure.get("path", ""), "status": "failed",
                 "error": failure.get("error", "")}
            )  # fmt: skip
    if not rows:
        return None
    rows.sort(key=lambda row: str(row["slide"]))
    target = out_dir / SUMMARY_CSV
    tmp = out_dir / f".{SUMMARY_CSV}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as fh:
        columns = [*SlideSummary.CSV_COLUMNS, *STATUS_COLUMNS]
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(target)
    return target


def run_slides(
    predictor: Predictor,
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    options: SlideOptions = SlideOptions(),
    shard: str | tuple[int, int] | None = None,
    progress: bool = True,
    console: Any = None,
) -> RunReport:
    """Map many slides into ``out_dir``; slides already mapped from the same file unchanged
    are skipped, failures reported, and a name shared with a different file already mapped
    there refuses the run (``maps.identity``).

    One slide failing (unreadable file) does not stop the others; the report lists it.
    """

    out_dir = Path(out_dir)
    shard_t = shard if isinstance(shard, tuple) else parse_shard(shard)
    paths = select_shard(expand_inputs(inputs), shard_t)
    plan = plan_run(paths, out_dir, slide_name, options.regions_key,
                    options.settings(predictor.card))  # a clash stops here
    report = RunReport(skipped=plan.skipped)
    with progress_bar(progress, unit="tiles", console=console) as bar:
        for path, content in plan.todo:
            name = slide_name(path)
            task = bar.add_task(name, total=None)

            def update(done: int, total: int, task: Any = task) -> None:
                bar.update(task, completed=done, total=total)

            try:
                report.done.append(
                    analyse_slide(predictor, path, out_dir, options, update, content=content)
                )
            except IdcscanError as exc:
                report.failed.append((path, str(exc)))
                record_failure(out_dir, name, path, str(exc))
                bar.remove_task(task)  # the caller reports the failure in words
    out_dir.mkdir(parents=True, exist_ok=True)
    report.summary_csv = write_summary_csv(out_dir)
    return report
