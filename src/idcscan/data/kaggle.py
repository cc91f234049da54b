"""The Kaggle "Breast Histopathology Images" layout: finding, naming and checking patch files.

Layout: ``<pid>/<0|1>/<pid>_idx5_x<X>_y<Y>_class<C>.png``. The published archive holds every
patient twice (at the top level and again inside ``IDC_regular_ps50_idx5/``), so files are
deduplicated by name. Checks here need only the path; decoding happens in ``packing``.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from idcscan.errors import IdcscanError

KAGGLE_DATASET = "paultimothymooney/breast-histopathology-images"
NESTED_DIR = "IDC_regular_ps50_idx5"
NAME_RE = re.compile(
    r"^(?P<pid>[A-Za-z0-9-]+)_idx5_x(?P<x>\d+)_y(?P<y>\d+)_class(?P<label>[01])\.png$"
)
NAME_PATTERN = "<pid>_idx5_x<X>_y<Y>_class<0|1>.png"


@dataclass(frozen=True)
class PatchFile:
    """A patch file whose path passed every check that needs no decoding."""

    path: Path
    patient: str
    x: int
    y: int
    label: int

    @property
    def sort_key(self) -> tuple:
        return (patient_sort_key(self.patient), self.y, self.x, self.label)


@dataclass(frozen=True)
class Skipped:
    """A file left out, with the reason (``path`` relative to the source folder)."""

    path: str
    reason: str


@dataclass
class Scan:
    files: list[PatchFile]
    skipped: list[Skipped]
    duplicates: int  # files seen a second time under the same name (the archive's copy)
    roots: list[Path]


def patient_sort_key(pid: str) -> tuple:
    """Numeric ids sort as numbers (Kaggle's are), anything else after them as text."""
    return (0, int(pid), pid) if pid.isdigit() else (1, 0, pid)


def layout_roots(src: Path) -> list[Path]:
    """Folders holding ``<pid>/<class>/`` trees: SRC, and SRC/IDC_regular_ps50_idx5 if present.

    The nested copy comes first so its files win the name dedupe when both exist.
    """
    nested = src / NESTED_DIR
    return [nested, src] if nested.is_dir() else [src]


def _sorted_entries(path: Path) -> list[os.DirEntry]:
    with os.scandir(path) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def check_name(path: Path, rel: str, patient_dir: str, class_dir: str) -> PatchFile | Skipped:
    """All checks a path allows: PNG, name pattern, folder class = name class, patient match."""
    name = path.name
    if not name.lower().endswith(".png"):
        return Skipped(rel, f"not a PNG: extension {path.suffix or '(none)'}")
    m = NAME_RE.match(name)
    if m is None:
        return Skipped(rel, f"file name does not match {NAME_PATTERN}")
    if class_dir not in ("0", "1"):
        return Skipped(rel, f"class folder {class_dir!r} is not 0 or 1")
    if class_dir != m["label"]:
        return Skipped(rel, f"class mismatch: folder {class_dir} but name says class{m['label']}")
    if patient_dir != m["pid"]:
        return Skipped(rel, f"patient mismatch: folder {patient_dir} but name says {m['pid']}")
    return PatchFile(path, m["pid"], int(m["x"]), int(m["y"]), int(m["label"]))


def _walk(root: Path, src: Path) -> Iterator[tuple[Path, str, str] | Skipped]:
    """Files at ``root/<patient>/<class>/<file>`` as (path, patient dir, class dir); strays as
    Skipped. Loose files directly in SRC (archive.zip, README) are not patches and are ignored.
    """
    for pdir in _sorted_entries(root):
        path = Path(pdir.path)
        if root == src and pdir.name == NESTED_DIR:
            continue  # scanned as a root of its own
        if not pdir.is_dir():
            if root != src:
                yield Skipped(
                    path.relative_to(src).as_posix(), "not inside a <patient>/<0|1>/ folder"
                )
            continue
        for cdir in _sorted_entries(path):
            if not cdir.is_dir():
                rel = Path(cdir.path).relative_to(src).as_posix()
                yield Skipped(rel, "not inside a <0|1>/ class folder")
                continue
            for entry in _sorted_entries(Path(cdir.path)):
                if entry.is_file():
                    yield Path(entry.path), pdir.name, cdir.name
                else:
                    yield Skipped(Path(entry.path).relative_to(src).as_posix(), "not a file")


def scan(src: str | Path) -> Scan:
    """Find every patch file under SRC (the Kaggle folder or its parent), check names, dedupe.

    A bad file is recorded in ``skipped`` and never stops the scan. Returned files are sorted by
    patient, then y, then x.
    """
    src = Path(src)
    if not src.is_dir():
        raise IdcscanError(
            f"{src} is not a folder; point `idcscan prepare` at the Kaggle dataset folder "
            f"({NESTED_DIR}/ or the folder that contains it)."
        )
    roots = layout_roots(src)
    seen: set[str] = set()
    where: dict[tuple[str, int, int], str] = {}
    files: list[PatchFile] = []
    skipped: list[Skipped] = []
    duplicates = 0
    for root in roots:
        for item in _walk(root, src):
            if isinstance(item, Skipped):
                skipped.append(item)
                continue
            path, patient_dir, class_dir = item
            if path.name in seen:  # the archive's second copy of the same patch
                duplicates += 1
                continue
            seen.add(path.name)
            rel = path.relative_to(src).as_posix()
            checked = check_name(path, rel, patient_dir, class_dir)
            if isinstance(checked, Skipped):
                skipped.append(checked)
                continue
            key = (checked.patient, checked.x, checked.y)
            if key in where:
                skipped.append(Skipped(rel, f"duplicate coordinates: same as {where[key]}"))
                continue
            where[key] = rel
            files.append(checked)
    files.sort(key=lambda f: f.sort_key)
    skipped.sort(key=lambda s: s.path)
    return Scan(files=files, skipped=skipped, duplicates=duplicates, roots=roots)


def _endpoint_reachable(url: str, timeout: float) -> str | None:
    """None if a TCP connection to the API host opens within ``timeout`` s, else the reason.

    kagglehub sends its API calls without a timeout; on a network that drops packets it would
    hang for minutes. One quick connection attempt first turns that into an immediate answer.
    """
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"cannot reach {parts.hostname}:{port} ({exc})"


def _offline_help(reason: str) -> IdcscanError:
    return IdcscanError(
        f"Could not download the Kaggle dataset {KAGGLE_DATASET}: {reason}. "
        "idcscan needs internet access and Kaggle API credentials for this (KAGGLE_USERNAME and "
        "KAGGLE_KEY, or ~/.kaggle/kaggle.json; see https://www.kaggle.com/docs/api). Otherwise "
        f"download https://www.kaggle.com/datasets/{KAGGLE_DATASET} on another machine, copy "
        "the unpacked folder here and run `idcscan prepare PATH --out DATA`."
    )


def download(out: str | Path | None = None, timeout: float = 10.0) -> Path:
    """Fetch the real dataset with kagglehub; returns the folder to give ``idcscan prepare``.

    With ``out`` the files are placed there (kagglehub's ``output_dir``), otherwise they stay
    in kagglehub's cache. Offline or without credentials this fails within ``timeout`` seconds
    with an IdcscanError that says what to do instead.
    """
    import kagglehub
    from kagglesdk.kaggle_env import get_endpoint, get_env

    try:
        endpoint = get_endpoint(get_env())
    except Exception as exc:  # noqa: BLE001  (bad KAGGLE_API_ENVIRONMENT)
        raise _offline_help(f"bad Kaggle API environment ({exc})") from None
    unreachable = _endpoint_reachable(endpoint, timeout)
    if unreachable:
        raise _offline_help(unreachable)
    direct = (
        out is not None and "output_dir" in inspect.signature(kagglehub.dataset_download).parameters
    )
    kwargs = {"output_dir": str(out)} if direct else {}
    try:
        path = Path(kagglehub.dataset_download(KAGGLE_DATASET, **kwargs))
    except Exception as exc:  # noqa: BLE001  (network, HTTP 401/403, credentials: all user-fixable)
        raise _offline_help(f"{type(exc).__name__}: {exc}") from exc
    if out is not None and not direct:
        # Older kagglehub always downloads into its cache: link the cached folder instead.
        link = Path(out)
        if link.exists() or link.is_symlink():
            raise IdcscanError(f"--out {link} already exists; the dataset is at {path}.")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path, target_is_directory=True)
        path = link
    return path


def content_digest(src: str | Path) -> str:
    """sha256 over every patch file a scan finds, in scan order: name and bytes. Two copies
    of the data set with the same patches give the same digest wherever they lie, and a
    model card that records it says exactly which patches a model saw."""
    digest = hashlib.sha256()
    for patch in scan(src).files:
        data = patch.path.read_bytes()
        digest.update(f"{patch.path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()
