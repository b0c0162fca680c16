"""Option types and option decorators shared by the commands.

Every value the command line takes is parsed here or by a click type (``click.IntRange``,
``click.FloatRange``, ``click.Choice``), so a bad value is refused before any work with
one ``Error:`` line and exit status 2. Domain rules that a Python user needs too (which
corruptions exist, which severities, which epsilons) stay in the library's settings
classes; :func:`usage_errors` turns their ``ValueError`` into the same usage error.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click

__all__ = [
    "DATA_HELP",
    "NONE_WORD",
    "EpsilonList",
    "FuseSize",
    "IntList",
    "NameList",
    "SweepDir",
    "data_option",
    "did_you_mean",
    "pwcca_method_option",
    "split_names",
    "usage_errors",
]

DATA_HELP = (
    "Dataset location: a file or directory (CIFAR-10 python release, or an image-folder tree "
    "train/<class>/, test/<class>/, or a .tar.gz of one). Default: $SELECTIVITY_DATA, then the "
    "per-user cache, then a download."
)

#: The word that means "an empty list" in every list option (``--attacks none``).
NONE_WORD = "none"

F = Callable[..., Any]


def data_option(help: str = DATA_HELP) -> Callable[[F], F]:
    """``--data PATH`` (default None: the library's search)."""
    return click.option("--data", type=click.Path(), default=None, help=help)


def pwcca_method_option(flag: str) -> Callable[[F], F]:
    """The option ``flag`` choosing the PWCCA method (``report --cca-method``, ``cca --method``)."""
    return click.option(
        flag,
        type=click.Choice(["svcca", "textbook"]),
        default="svcca",
        show_default=True,
        help="PWCCA as the paper computed it (google/svcca's reference code) or the canonical-variate form.",
    )


def did_you_mean(name: str, known: Sequence[str]) -> str:
    """``" (did you mean 'quick'?)"`` for a close known name, else ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def split_names(text: str | None) -> tuple[str, ...] | None:
    """``"a, b,"`` -> ``("a", "b")``; None stays None (the option was not given)."""
    if text is None:
        return None
    return tuple(p.strip() for p in str(text).split(",") if p.strip())


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """Turn a ``ValueError`` of settings built from options into a usage error (exit 2)."""
    try:
        yield
    except ValueError as e:
        raise click.UsageError(str(e)) from e


class FuseSize(click.ParamType):
    """``--fuse``: an integer >= 1 or ``auto``."""

    name = "fuse"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        if text.isdigit() and int(text) >= 1:
            return int(text)
        self.fail(f"expected an integer >= 1 or 'auto', got {value!r}", param, ctx)


class NameList(click.ParamType):
    """Comma-separated names -> a tuple; ``none`` -> ``()``.

    Parameters
    ----------
    what : str
        What one name is, for messages (``"corruption"``).
    choices : sequence of str, optional
        The known names; an unknown one is refused, with the closest known name.
    allow_none : bool, default True
        Accept ``none`` (and the empty string) for no names.
    """

    name = "names"

    def __init__(self, what: str, choices: Sequence[str] | None = None, allow_none: bool = True):
        self.what = what
        self.choices = tuple(choices) if choices is not None else None
        self.allow_none = allow_none

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "A,B,..." + (f"|{NONE_WORD}" if self.allow_none else "")

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        names = split_names(value) or ()
        if names in ((), (NONE_WORD,)):
            if not self.allow_none:
                self.fail(f"give at least one {self.what}", param, ctx)
            return ()
        if self.choices is not None:
            for n in names:
                if n not in self.choices:
                    self.fail(
                        f"unknown {self.what} {n!r}{did_you_mean(n, self.choices)}: expected one of "
                        f"{', '.join(self.choices)}",
                        param,
                        ctx,
                    )
        return names


class IntList(click.ParamType):
    """Comma-separated integers -> a tuple (the library checks their range)."""

    name = "integers"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "N,N,..."

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        out = []
        for part in split_names(value) or ():
            try:
                out.append(int(part))
            except ValueError:
                self.fail(f"{part!r} is not an integer: expected comma-separated integers", param, ctx)
        return tuple(out)


class EpsilonList(click.ParamType):
    """Attack budgets: ``1/255,4/255`` or ``0.004,0.016`` -> floats >= 0; ``none`` -> ``()``.

    The numbers are read by the library's one parser,
    :func:`selectivity.evaluate.robustness.parse_epsilons`.
    """

    name = "epsilons"

    def __init__(self, allow_none: bool = True):
        self.allow_none = allow_none

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "E,E,..." + (f"|{NONE_WORD}" if self.allow_none else "")

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        from ..evaluate.robustness import parse_epsilons

        if self.allow_none and (split_names(value) or ()) in ((), (NONE_WORD,)):
            return ()
        try:
            return parse_epsilons(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


class SweepDir(click.Path):
    """An existing sweep directory (``runs/`` or ``results.sqlite`` inside) -> ``Path``."""

    def __init__(self) -> None:
        super().__init__(exists=True, file_okay=False)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        from ..run.files import SweepFiles

        files = SweepFiles(os.fsdecode(super().convert(value, param, ctx)))
        if not files.is_sweep_dir():
            self.fail(
                f"{files.root} is not a sweep directory (no {files.runs.name}/ or {files.db.name})",
                param,
                ctx,
            )
        return files.root
