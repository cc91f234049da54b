"""Models that ship inside the package, addressed by name wherever a bundle is taken.

``src/idcscan/shipped/`` holds one bundle folder per model (``model.onnx`` + ``model.json``,
verified by sha256 like any bundle) and ``index.json``, which names the models and says
which one ``default`` means. A BUNDLE argument that is a shipped name resolves here; anything
else is a path, exactly as before. A name wins over a folder of the same name in the working
directory (``default`` always means the recommended model); write ``./default`` for the folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from idcscan.errors import IdcscanError

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "shipped"
INDEX = "index.json"
#: Real example tissue that ships beside the models (``idcscan.data.examples`` writes it).
EXAMPLES = "examples"
#: The name that always means the recommended shipped model.
DEFAULT = "default"


@dataclass(frozen=True)
class ShippedModel:
    name: str
    path: Path
    is_default: bool


def _index(root: Path | None = None) -> dict:
    root = SHIPPED_DIR if root is None else root
    try:
        return json.loads((root / INDEX).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"default": None, "models": []}
    except (OSError, json.JSONDecodeError) as exc:
        raise IdcscanError(f"The shipped-model index {root / INDEX} is damaged: {exc}. "
                           "Reinstall idcscan.") from exc


def shipped_models(root: Path | None = None) -> list[ShippedModel]:
    """The shipped models in the index's order (the default first)."""
    root = SHIPPED_DIR if root is None else root
    index = _index(root)
    models = [ShippedModel(name, root / name, name == index.get("default"))
              for name in index.get("models", [])]
    return sorted(models, key=lambda m: not m.is_default)


def shipped_names(root: Path | None = None) -> list[str]:
    """Every name a BUNDLE argument accepts besides a path: ``default`` and each model's."""
    models = shipped_models(root)
    return ([DEFAULT] if any(m.is_default for m in models) else []) + [m.name for m in models]


def _looks_like_name(spec: str) -> bool:
    return bool(spec) and "/" not in spec and "\\" not in spec and not spec.startswith(".")


def resolve_bundle_path(spec: str | Path, root: Path | None = None) -> Path:
    """The bundle folder a BUNDLE argument means: a shipped model by name, else the path.

    An unknown name (a bare word that is neither a shipped model nor an existing path) gets a
    one-line error that lists the names.
    """
    text = str(spec)
    if not _looks_like_name(text):
        return Path(spec)
    models = {m.name: m for m in shipped_models(root)}
    if text == DEFAULT:
        chosen = next((m for m in models.values() if m.is_default), None)
        if chosen is not None:
            return chosen.path
    elif text in models:
        return models[text].path
    if Path(spec).exists():
        return Path(spec)
    names = shipped_names(root)
    listed = ", ".join(names) if names else "none in this install"
    raise IdcscanError(f"No model bundle at {text}: no such folder, and not a shipped model's "
                       f"name ({listed}; `idcscan models` lists them).")


def examples_dir() -> Path | None:
    """The shipped examples (``patches/``, ``slides/``, ``examples.json``), if installed."""
    folder = SHIPPED_DIR / EXAMPLES
    return folder if (folder / "examples.json").is_file() else None


@lru_cache(maxsize=1)
def examples_info() -> dict:
    """``examples.json``: where the example tissue comes from and what it is labelled (read
    once; the installed files do not change under a running process). Empty if none."""
    folder = examples_dir()
    if folder is None:
        return {}
    return json.loads((folder / "examples.json").read_text(encoding="utf-8"))
