"""Command-line interface: ``selectivity train | measure | sweep | results | summarize | report | cca |
robustness | geometry | corrupt | models | presets``.

The top layer: each command parses its options and calls the package (report ->
evaluate -> sweep -> training -> core); nothing imports it. The commands live in one
module per topic (:mod:`.train`, :mod:`.sweep`, :mod:`.analyses`, :mod:`.report`,
:mod:`.listing`), their shared option types in :mod:`.options`; this module holds the
group and the one rule that turns an error into an exit status and one line.
"""

from __future__ import annotations

import os
import sqlite3

import click

from ..run.config import ConfigError
from .analyses import cca, corrupt, geometry, robustness
from .listing import models, presets
from .report import report
from .sweep import results, summarize, sweep
from .train import measure, train

__all__ = ["main", "user_error"]


class OneLineError(click.ClickException):
    """``Error: <message>`` on one line of stderr, exit status 1."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class OneLineUsageError(OneLineError):
    """``Error: <message>`` on one line of stderr, exit status 2."""

    exit_code = 2


def user_error(e: BaseException) -> OneLineError | None:
    """The one-line error a known user mistake becomes, or None for a bug (traceback).

    A mistake on the command line, in a config or a preset (:class:`ConfigError`) exits
    with status 2; a problem with the data, the files, the device or a resource
    (``ValueError``, ``OSError``, ``RuntimeError``, a damaged database) with status 1.
    """
    if isinstance(e, ConfigError):
        return OneLineUsageError(str(e))
    if isinstance(e, sqlite3.DatabaseError):
        return OneLineError(
            f"the results database cannot be read ({e}); run `selectivity results --rebuild SWEEP_DIR`"
        )
    if isinstance(e, (ValueError, OSError, RuntimeError)):
        return OneLineError(str(e) or type(e).__name__)
    return None


def _debug(ctx: click.Context) -> bool:
    return bool(ctx.params.get("debug")) or os.environ.get("SELECTIVITY_DEBUG", "") not in ("", "0")


class Main(click.Group):
    """The command group: every error leaves it as one line and an exit status."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:  # click's own checks and the commands': one line, status 2
            msg = e.format_message()
            if isinstance(e, click.BadParameter) or e.ctx is None:
                raise OneLineUsageError(msg) from e
            raise OneLineUsageError(f"{msg} (see `{e.ctx.command_path} --help`)") from e
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as e:
            err = None if _debug(ctx) else user_error(e)
            if err is None:
                raise
            raise err from e


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="selectivity")
@click.option(
    "--debug",
    is_flag=True,
    help="Show the full traceback of an error instead of one line (also: SELECTIVITY_DEBUG=1).",
)
def main(debug: bool) -> None:
    """Class selectivity of units in neural networks (Leavitt & Morcos).

    Measure it, regularise it (loss = CE - alpha * mean SI), and run the papers'
    alpha sweeps.

    \b
    Exit status:
      0  done
      1  a problem with the data, the files, the device or a run (one `Error:` line;
         `sweep`: some runs failed)
      2  a mistake on the command line, in a config or a preset (one `Error:` line)
      3  `train`: the run diverged
    --debug (or SELECTIVITY_DEBUG=1) shows the traceback instead of the one line.
    """


for _command in (
    train,
    measure,
    sweep,
    results,
    summarize,
    report,
    cca,
    robustness,
    geometry,
    corrupt,
    models,
    presets,
):
    main.add_command(_command)
