"""Command line: ``idcscan <command>``. Each area registers its commands on the shared app."""

from idcscan.cli.app import app
from idcscan.cli import data as _data  # noqa: F401  (registers commands)
from idcscan.cli import train as _train  # noqa: F401
from idcscan.cli import cv as _cv  # noqa: F401
from idcscan.cli import evaluate as _evaluate  # noqa: F401
from idcscan.cli import predict as _predict  # noqa: F401
from idcscan.cli import serve as _serve  # noqa: F401
from idcscan.cli import slide as _slide  # noqa: F401
from idcscan.cli import models as _models  # noqa: F401  (quantize, demo, card)
from idcscan.cli import report as _report  # noqa: F401


def main() -> None:
    app()


__all__ = ["app", "main"]
