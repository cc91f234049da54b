"""CLI commands: predict (to be filled by its area)."""

from idcscan.cli.app import app  # noqa: F401
