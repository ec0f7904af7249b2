"""Help screens without type tags on flags: `--json` takes no value, so it must not read `--json <bool>`."""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand, TyperGroup


def _untag_flags(params: list[Any]) -> list[Any]:
    # Typer's rich help prints an option's metavar in place of its type when one is set; a flag gets an empty one.
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """A command whose help lists its flags (and -h/--help) without `<bool>`."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _untag_flags(super().get_params(ctx))


class Group(TyperGroup):
    """The top-level group, with the same help for its own flags."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _untag_flags(super().get_params(ctx))
