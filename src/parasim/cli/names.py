"""Option help that lists a registry's names (schedulers, routers, pipeline schedules).

The names come from the registries themselves, never a copied string, but only when help is
shown: importing the serving and training packages to build every command's help would slow
down each `parasim` call. An option's help holds a placeholder such as `{SCHEDULERS}`, and the
commands that have one use `RegistryHelp` as their click class.
"""

from __future__ import annotations

from collections.abc import Callable

from typer.core import TyperCommand


def _schedulers() -> str:
    from parasim.serving.schedulers import SCHEDULERS

    return SCHEDULERS.help(", ")


def _routers() -> str:
    from parasim.serving.routers import ROUTERS

    return ROUTERS.help(" or ")


def _schedules() -> str:
    from parasim.training.schedules import SCHEDULES

    return SCHEDULES.help(" | ")


def _varlen_balance() -> str:
    from parasim.training.varlen_balance import STRATEGIES

    return STRATEGIES.help(" | ")


def _searched_schedulers() -> str:
    from parasim.search.space import SERVE_SCHEDULERS

    return ",".join(SERVE_SCHEDULERS)


def _emit_engines() -> str:
    from parasim.engines.launch import LAUNCHERS

    return LAUNCHERS.help(" | ")


PLACEHOLDERS: dict[str, Callable[[], str]] = {
    "{EMIT_ENGINES}": _emit_engines,
    "{SCHEDULERS}": _schedulers,
    "{ROUTERS}": _routers,
    "{SCHEDULES}": _schedules,
    "{SEARCHED_SCHEDULERS}": _searched_schedulers,
    "{VARLEN_BALANCE}": _varlen_balance,
}


def fill(text: str) -> str:
    for key, names in PLACEHOLDERS.items():
        if key in text:
            text = text.replace(key, names())
    return text


class RegistryHelp(TyperCommand):
    """A command whose options' help may name a registry placeholder, filled in when shown."""

    def format_help(self, ctx, formatter) -> None:
        for p in self.params:
            if getattr(p, "help", None):
                p.help = fill(p.help)
        return super().format_help(ctx, formatter)
