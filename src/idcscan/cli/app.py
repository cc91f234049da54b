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
from rich.markup import escape

from idcscan import DISCLAIMER, __version__
from idcscan.cli import helptext
from idcscan.errors import IdcscanError
from idcscan.files import output_error

helptext.install()

# soft_wrap: a message is one line however narrow the terminal, and also when stderr is a
# file or a pipe (rich would otherwise wrap at 80 columns), so it can be grepped whole.
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
_disclaimer_shown = False


class _App(typer.Typer):
    """Typer whose commands print IdcscanError as one clear line and exit 2, no traceback.

    A write that fails for a reason the user can fix (full disk, read-only or forbidden
    folder) is reported the same way, wherever in the library it happened."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable], Callable]:
        register = super().command(*args, **kwargs)

        def decorator(func: Callable) -> Callable:
            @functools.wraps(func)
            def wrapper(*a: Any, **kw: Any) -> Any:
                global _disclaimer_shown
                _disclaimer_shown = False  # once per command, also for in-process runners
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
    print_error(str(exc))
    raise typer.Exit(2) from None


app = _App(
    name="idcscan",
    help=f"Find Invasive Ductal Carcinoma in H&E breast histopathology. {DISCLAIMER}",
    epilog=DISCLAIMER,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def command_group(name: str, help: str) -> _App:
    """A group of sub-commands (``idcscan <name> <command>``) with the same error handling."""
    group = _App(name=name, help=help, epilog=DISCLAIMER, no_args_is_help=True,
                 pretty_exceptions_enable=False, add_completion=False)
    app.add_typer(group, name=name)
    return group


def print_error(message: str) -> None:
    """``error: ...`` on one line of stderr; the message's own brackets are not markup."""
    console.print(f"[bold red]error:[/] {escape(' '.join(message.split()))}", highlight=False)


def print_warning(message: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(' '.join(message.split()))}", highlight=False)


def print_disclaimer() -> None:
    """The research-use disclaimer, at most once per command."""
    global _disclaimer_shown
    if _disclaimer_shown:
        return
    _disclaimer_shown = True
    console.print(f"[yellow]{escape(DISCLAIMER)}[/]", highlight=False)


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
