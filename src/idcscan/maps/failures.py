"""Failed slides, recorded beside the outputs so summary.csv and the cohort report list them.

A slide that could not be mapped leaves ``OUT/.failed/<slide>.json`` (slide, path, error,
time), written atomically; it is removed when the slide is mapped successfully later. Keeping
one small file per slide (not one shared list) lets shards on different nodes and Dask
workers record failures into the same output folder without racing each other. The slide's
own folder is never created for a failure, so a failed slide is never taken as finished.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

FAILED_DIR = ".failed"


def record_failure(out_dir: str | Path, name: str, path: str | Path, error: str) -> Path:
    """Write (or replace) the failure record of slide ``name``."""
    folder = Path(out_dir) / FAILED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.json"
    tmp = folder / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    record = {
        "slide": name,
        "path": str(path),
        "error": error,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, target)
    return target


def clear_failure(out_dir: str | Path, name: str) -> None:
    """Forget an earlier failure of ``name`` (it has now been mapped)."""
    (Path(out_dir) / FAILED_DIR / f"{name}.json").unlink(missing_ok=True)


def read_failures(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every failure record in ``out_dir``, sorted by slide name; unreadable ones skipped."""
    records = []
    for path in sorted((Path(out_dir) / FAILED_DIR).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and "slide" in record:
            records.append(record)
    return records
