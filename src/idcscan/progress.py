"""The one progress bar every long job shows (on stderr, so stdout stays machine-readable)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(
    enabled: bool = True,
    unit: str = "",
    console: Console | None = None,
    transient: bool = False,
) -> Progress:
    """A bar with description, count done/total (and ``unit``), elapsed and remaining time."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if unit:
        columns.append(TextColumn(unit))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(
        *columns,
        console=console or Console(stderr=True),
        disable=not enabled,
        transient=transient,
    )
