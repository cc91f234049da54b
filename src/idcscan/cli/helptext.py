"""Plain help text: ``BUNDLE INPUT...`` and ``--batch-size INTEGER``, not ``{bundle}``,
``<list[Path]>`` or ``<bool>``.

Typer 0.2x labels every parameter with its Python type (``<bool>`` beside a flag that takes
no value, ``<list[Path]>``) and braces required arguments in the usage line. Those read as
syntax a user must type. This module changes only how parameters are *displayed* in help:
arguments by their upper-case name, options by a click-style metavar (PATH, INTEGER, FLOAT,
TEXT), flags by nothing. Parsing is untouched.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperOption

_TYPE_WORDS = {
    "path": "PATH", "file": "FILE", "directory": "DIR", "int": "INTEGER", "float": "FLOAT",
    "str": "TEXT", "int range": "INTEGER", "float range": "FLOAT", "bool": "BOOLEAN",
}


def _argument_name(self: TyperArgument) -> str:
    return (self.metavar or self.name or "ARG").upper()


def _argument_usage(self: TyperArgument) -> str:
    name = _argument_name(self)
    if self.nargs != 1:
        name += "..."
    return name if self.required else f"[{name}]"


def _argument_rich_name(self: TyperArgument) -> str:
    name = _argument_name(self)
    return name + "..." if self.nargs != 1 and self.metavar is None else name


def _argument_type(self: TyperArgument, ctx: Any) -> str | None:
    return None  # the upper-case name says it; the help says the rest


def _option_type(self: TyperOption, ctx: Any) -> str | None:
    if self.metavar is not None:
        return self.metavar
    if self.is_flag or self.count:
        return None
    shown = self.display_type(ctx).strip("<>")  # typer's "<int range>", "<list[Path]>"
    many = shown.startswith("list[")
    word = shown[5:-1] if many else shown
    label = _TYPE_WORDS.get(word.lower(), word.upper())
    return label + "..." if many else label


def install() -> None:
    """Patch the display methods once (idempotent)."""
    TyperArgument._usage_display_name = _argument_usage  # type: ignore[method-assign]
    TyperArgument._rich_display_name = _argument_rich_name  # type: ignore[method-assign]
    TyperArgument.display_name_raw = property(_argument_name)  # type: ignore[assignment]
    TyperArgument.display_type_rich = _argument_type  # type: ignore[method-assign]
    TyperOption.display_type_rich = _option_type  # type: ignore[method-assign]
