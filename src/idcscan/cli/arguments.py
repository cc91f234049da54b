"""What the scoring commands share: the check on their BUNDLE argument and ``--runtime``.

A bundle is recognised by its model.json (``idcscan.runtime.bundle``), so when the first
argument is not one but an input is, the two were most likely typed the wrong way round; one
sentence saying so beats "No model bundle at image.png".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import typer

from idcscan.errors import IdcscanError
from idcscan.runtime.bundle import CARD_NAME, ModelCard
from idcscan.runtime.engine import ENV_RUNTIME, RUNTIMES, resolve_runtime
from idcscan.runtime.shipped import shipped_names

BUNDLE_HELP = ("A shipped model's name (default; `idcscan models` lists them) or a bundle folder "
               "(model.onnx + model.json).")

TTA_HELP = ("Test-time augmentation: average each patch over its 8 flips/rotations at run time "
            "(8x slower). A model whose graph already averages views (its card's `tta` entry: "
            "`idcscan card BUNDLE`) always does so, and --tta then changes nothing; outputs "
            "record the views averaged (tta_views).")

RUNTIME_HELP = (
    "What runs the model: auto (OpenVINO in bf16 on a CPU with native bf16, else ONNX Runtime "
    f"fp32), onnxruntime or openvino. Default: ${ENV_RUNTIME}, else auto."
)


def runtime_option() -> typer.Option:  # type: ignore[valid-type]
    return typer.Option(None, "--runtime", metavar="|".join(RUNTIMES), help=RUNTIME_HELP)


def apply_runtime(runtime: str | None) -> None:
    """Check ``--runtime`` (or, without it, ``IDCSCAN_RUNTIME``) before any work, and make it
    every predictor's default in this process and those it starts (server and local Dask
    workers read ``IDCSCAN_RUNTIME``; a cohort passes it to remote ones with each task)."""
    chosen = resolve_runtime(runtime)
    if runtime is not None:
        os.environ[ENV_RUNTIME] = chosen


def _is_bundle(path: Path) -> bool:
    return (path / CARD_NAME).is_file() or (path.name == CARD_NAME and path.is_file())


def check_bundle_first(command: str, bundle: Path, inputs: Sequence[Path]) -> None:
    """Refuse swapped arguments with a hint; ``load_bundle`` handles the other mistakes."""
    if _is_bundle(bundle) or str(bundle) in shipped_names():
        return
    swapped = next((p for p in inputs if _is_bundle(p)), None)
    if swapped is not None:
        raise IdcscanError(
            f"The arguments look swapped: {swapped} is a model bundle and {bundle} is not. "
            f"The bundle comes first: idcscan {command} {swapped} {bundle}"
        )


def tta_note(card: ModelCard, requested: bool) -> str | None:
    """The line a command prints when ``--tta`` asks for what the model already does."""
    from idcscan.runtime.model_card import tta_views

    views, in_graph = tta_views(card, requested)
    if requested and in_graph:
        return (f"{card.name} averages {views} views of every patch inside its graph already; "
                "--tta changes nothing.")
    return None
