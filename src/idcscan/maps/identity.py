"""Which file a slide folder holds the map of: a re-run skips only the same file, unchanged.

A slide's folder is named after its file (``OUT/<slide name>/``), and two different files can
share a name: two scanners' ``slide1.svs``, two patients' pictures saved under one name. So a
folder is never taken as done because of its name alone: ``summary.json`` records a
fingerprint of the file's content (``fingerprint``), and before a run maps anything each input
is sorted out against the folder its name leads to:

``none``     no finished folder of that name: map it;
``same``     the folder holds this very content (the same file, or a copy moved elsewhere):
             skip it;
``changed``  the folder holds an earlier version of this same file (same path, other
             content): map it again, replacing the folder;
``clash``    the folder holds the map of a different file of the same name: refuse the whole
             run in one line, before anything is mapped, naming both files.
``regions``  the folder holds this file's map over other regions than the run asks for (the
             whole slide where ``--regions`` asks for some, regions where none are asked for,
             or other regions, even from an edited file of the same name): refuse in one line
             too, since skipping it would report the other map's numbers as this run's.
``settings`` the folder holds this file's map made by another model, or with another
             ``--context`` or ``--threshold`` than the run asks for: refused for the same
             reason.

The fingerprint hashes the file's size with three samples of its bytes (start, middle, end,
1 MiB each): it tells apart any two real slides or pictures and costs a few milliseconds per
whole-slide file, where hashing every byte of a 3 GB scan would cost seconds. Folders written
before fingerprints existed count as ``same`` when they name the same path and are newer than
the file, as ``changed`` when the file is newer, and as ``clash`` when they name another path.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idcscan.errors import IdcscanError
from idcscan.maps.slide_map import SUMMARY_JSON

#: bytes read at each of the three places the fingerprint samples
SAMPLE_BYTES = 1 << 20


def fingerprint(path: str | Path) -> str:
    """A content fingerprint of the file: sha256 over its size and three 1 MiB samples."""
    path = Path(path)
    try:
        size = path.stat().st_size
        digest = hashlib.sha256(f"{size}\0".encode())
        with open(path, "rb") as fh:
            for start in sorted({0, max(0, size // 2 - SAMPLE_BYTES // 2),
                                 max(0, size - SAMPLE_BYTES)}):
                fh.seek(start)
                digest.update(fh.read(SAMPLE_BYTES))
    except OSError as exc:
        raise IdcscanError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    return f"sha256-sampled:{digest.hexdigest()[:32]}"


@dataclass(frozen=True)
class Previous:
    """What ``OUT/<name>/`` holds with respect to one input file."""

    state: str  # none, same, changed, clash, regions or settings
    folder: Path
    recorded_path: str = ""
    recorded_regions: str = ""  # the regions file the folder's map was restricted to
    differs: str = ""  # for ``settings``: what the folder's map was made with, in words


def _same_path(recorded: str, path: Path) -> bool:
    try:
        return Path(recorded).resolve() == path.resolve()
    except (OSError, RuntimeError):
        return False


def regions_key(regions: dict | None) -> str:
    """What identifies a map's restriction (summary.json ``regions``): "" for the whole slide,
    the regions file's sha256 otherwise ("?" for a folder that recorded none)."""
    return (regions.get("sha256") or "?") if regions else ""


def map_settings(model_sha256: str, context: float, threshold: float | None) -> dict[str, Any]:
    """What a finished map must have been made with for a re-run to skip it: the model (its
    graph's sha256), the spatial context and, when the run gives one, the area threshold."""
    return {"model": model_sha256, "context": float(context), "threshold": threshold}


def _settings_differ(summary: dict, wanted: dict[str, Any] | None) -> str:
    if not wanted:
        return ""
    model = summary.get("model") if isinstance(summary.get("model"), dict) else {}
    recorded = {"model": model.get("sha256"), "context": summary.get("context"),
                "threshold": summary.get("threshold")}
    words = {"model": lambda v: f"model {str(v)[:12]}", "context": lambda v: f"--context {v:g}",
             "threshold": lambda v: f"--threshold {v:g}"}
    differs = []
    for key, want in wanted.items():
        have = recorded.get(key)
        if want is None or have is None:
            continue
        same = (abs(float(have) - float(want)) < 5e-6 if key != "model" else have == want)
        if not same:
            differs.append(f"{words[key](have)}, not {words[key](want)}")
    return "; ".join(differs)


def previous_map(folder: Path, path: Path, content: str, regions: str = "",
                 wanted: dict[str, Any] | None = None) -> Previous:
    """How the finished map in ``folder`` (if any) relates to ``path``, whose fingerprint is
    ``content``, mapped over ``regions`` (``regions_key``: "" for the whole slide) with the
    settings ``wanted`` (``map_settings``; None: any)."""
    summary_path = folder / SUMMARY_JSON
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return Previous("none", folder)
    if not isinstance(summary, dict):
        return Previous("none", folder)
    recorded = str(summary.get("path", ""))
    recorded_print = summary.get("fingerprint")
    if recorded_print == content:
        drawn = summary.get("regions") if isinstance(summary.get("regions"), dict) else {}
        if regions_key(drawn) != regions:
            return Previous("regions", folder, recorded, str(drawn.get("file", "")))
        differs = _settings_differ(summary, wanted)
        if differs:
            return Previous("settings", folder, recorded, differs=differs)
        return Previous("same", folder, recorded)
    if not _same_path(recorded, path):
        return Previous("clash", folder, recorded)
    if recorded_print:
        return Previous("changed", folder, recorded)
    try:  # a folder written before fingerprints: the file's time says whether it changed
        newer = os.stat(path).st_mtime_ns > summary_path.stat().st_mtime_ns
    except OSError:
        newer = True
    return Previous("changed" if newer else "same", folder, recorded)


@dataclass
class Plan:
    """The inputs of a run, sorted out against the output folder."""

    todo: list[tuple[Path, str]]  # (path, fingerprint) to map
    skipped: list[Path]


def plan_run(paths: list[Path], out_dir: Path, name_of: Callable[[Path], str],
             regions: str = "", wanted: dict[str, Any] | None = None) -> Plan:
    """Sort ``paths`` into those to map and those already mapped (``name_of``: a path's
    folder name; ``regions``: the run's ``regions_key``; ``wanted``: its ``map_settings``);
    refuse any clash."""
    plan = Plan(todo=[], skipped=[])
    clashes: list[tuple[Path, Previous]] = []
    for path in paths:
        content = fingerprint(path)
        previous = previous_map(out_dir / name_of(path), path, content, regions, wanted)
        if previous.state == "same":
            plan.skipped.append(path)
        elif previous.state == "regions":
            raise IdcscanError(regions_message(previous, bool(regions)))
        elif previous.state == "settings":
            raise IdcscanError(
                f"{previous.folder} already holds this slide's map, made with other settings "
                f"({previous.differs}); delete it or choose another --out to map it with "
                "these.")
        elif previous.state == "clash":
            clashes.append((path, previous))
        else:
            plan.todo.append((path, content))
    if clashes:
        raise IdcscanError(clash_message(clashes, out_dir))
    return plan


def regions_message(previous: Previous, restricted: bool) -> str:
    """One line: the folder holds this file's map over other regions than the run's."""
    held = (f"inside the regions {previous.recorded_regions} held when it was mapped"
            if previous.recorded_regions else "over the whole slide")
    wanted = "these regions" if restricted else "the whole slide"
    return (f"{previous.folder} is already mapped {held}; delete it or choose another --out to "
            f"map {wanted}. Nothing was mapped.")


def clash_message(clashes: list[tuple[Path, Previous]], out_dir: Path) -> str:
    """One line: which inputs share a name with a different file already mapped in out_dir."""
    what = "; ".join(
        f"{p.folder}/ holds the map of {p.recorded_path or 'another file'}, not of {path}"
        for path, p in clashes[:3]
    ) + ("; ..." if len(clashes) > 3 else "")
    count = "A slide has" if len(clashes) == 1 else f"{len(clashes)} slides have"
    return (f"{count} the name of a different file already mapped in {out_dir} ({what}). "
            "Map into another --out folder, or rename the file; nothing was mapped.")
