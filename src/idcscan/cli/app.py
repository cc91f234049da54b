"""The Typer app object and the conventions every command shares.

Commands live in sibling modules (one per area) and register themselves on ``app``; each is a
few lines over a library function. Heavy imports (torch) happen inside commands so that
``idcscan serve`` and ``idcscan predict`` start quickly and work without torch installed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from idcscan import DISCLAIMER, __version__
from idcscan.errors import IdcscanError
from idcscan.files import output_error

console = Console(stderr=True)
out = Console()


class _App(typer.Typer):
    """Typer whose commands print IdcscanError as one clear line and exit 2, no traceback.

    A write that fails for a reason the user can fix (full disk, read-only or forbidden
    folder) is reported the same way, wherever in the library it happened."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable], Callable]:
        register = super().command(*args, **kwargs)

        def decorator(func: Callable) -> Callable:
            @functools.wraps(func)
            def wrapper(*a: Any, **kw: Any) -> Any:
                try:
                    return func(*a, **kw)
                except IdcscanError as exc:
                    _fail(exc)
                except OSError as exc:
                    friendly = output_error(exc)
                    if friendly is None:
                        raise
                    _fail(friendly)

            register(wrapper)
            return func

        return decorator


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(2) from None


app = _App(
    name="idcscan",
    help=f"Find Invasive Ductal Carcinoma in H&E breast histopathology. {DISCLAIMER}",
    epilog=DISCLAIMER,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def print_disclaimer() -> None:
    console.print(f"[yellow]{DISCLAIMER}[/]", highlight=False)


def version_callback(value: bool) -> None:
    if value:
        out.print(f"idcscan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """Find Invasive Ductal Carcinoma in H&E breast histopathology (research use only)."""
