"""Checks on the BUNDLE argument shared by the commands that take ``BUNDLE INPUT...``.

A bundle is recognised by its model.json (``idcscan.inference.bundle``), so when the first
argument is not one but an input is, the two were most likely typed the wrong way round; one
sentence saying so beats "No model bundle at image.png".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from idcscan.errors import IdcscanError
from idcscan.inference.bundle import CARD_NAME


def _is_bundle(path: Path) -> bool:
    return (path / CARD_NAME).is_file() or (path.name == CARD_NAME and path.is_file())


def check_bundle_first(command: str, bundle: Path, inputs: Sequence[Path]) -> None:
    """Refuse swapped arguments with a hint; ``load_bundle`` handles the other mistakes."""
    if _is_bundle(bundle):
        return
    swapped = next((p for p in inputs if _is_bundle(p)), None)
    if swapped is not None:
        raise IdcscanError(
            f"The arguments look swapped: {swapped} is a model bundle and {bundle} is not. "
            f"The bundle comes first: idcscan {command} {swapped} {bundle}"
        )
