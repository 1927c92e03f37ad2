"""The `parasim` command line: one program over every layer.

Exit codes (README, "Exit codes"): 0 an answer; 1 nothing feasible (the result is still printed,
with why) or an output file that cannot be written; 2 bad input (InputError, click usage
errors: one line on stderr naming the field); 130 interrupted by Ctrl-C (a planner prints its
partial ranking marked "interrupted" first; any other command prints one line, and with --json
a small JSON object saying so). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

try:  # typer >= 0.16 vendors its own click; older releases use the click package
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exc

from parasim import __version__
from parasim.errors import InputError, Interrupted, OutputError

app = typer.Typer(
    name="parasim",
    help="Simulate and plan LLM training and serving on GPU clusters, on a CPU, in seconds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"parasim {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """parasim: training and serving simulator and planner for LLMs."""


def _register() -> None:
    """Add the commands once (main() may run many times in one process: tests, notebooks)."""
    if app.registered_commands:
        return
    from parasim.cli import calibrate_cmd, catalog_cmds, plan_cmd, report_cmd, serve_cmd, train_cmd, validate_cmd

    for module in (catalog_cmds, train_cmd, serve_cmd, plan_cmd, report_cmd, validate_cmd, calibrate_cmd):
        module.register(app)


EXIT_OK, EXIT_INFEASIBLE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    """One line on stderr, whatever a message quotes back from the input: a newline, a terminal
    escape or a NUL inside a quoted value is written escaped (\\n, \\x1b, \\x00)."""
    one_line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))
    sys.stderr.write(f"parasim: error: {one_line}\n")
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        _register()
        # standalone_mode=False: click returns a typer.Exit's code instead of exiting with it
        rc = app(args=args, standalone_mode=False, prog_name="parasim")
    except InputError as e:
        fail(f"{e.field}: {e.message}")
    except Interrupted as e:  # the command printed what it had
        sys.stderr.write(f"parasim: {e.message}\n")
        _exit_interrupted()
    except (typer.Exit, *_extra("Exit")) as e:
        raise SystemExit(getattr(e, "exit_code", 0)) from None
    except (typer.Abort, *_extra("Abort")):  # click < 8.2 turns Ctrl-C (KeyboardInterrupt) into Abort
        _interrupted(args)
    except click_exc.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError" and e.ctx is not None:
            sys.stderr.write(e.ctx.get_help() + "\n")
            raise SystemExit(2) from None
        where = f" [{e.ctx.command_path}]" if e.ctx else ""
        fail(f"{e.format_message()}{where} (try --help)")
    except click_exc.ClickException as e:
        fail(e.format_message())
    except KeyboardInterrupt:
        _interrupted(args)
    except OutputError as e:
        fail(f"cannot write {e.path}: {e.reason}", EXIT_INFEASIBLE)
    if rc == EXIT_INTERRUPTED:  # typer turns a Ctrl-C inside a command into Exit(130), silently
        _interrupted(args)
    raise SystemExit(rc if isinstance(rc, int) else EXIT_OK)


def _interrupted(args: list[str]) -> None:
    """Ctrl-C before the command had a result: one line on stderr and, when the command was
    asked for JSON, a JSON object saying so on stdout (a script's parser still gets JSON)."""
    if "--json" in args:
        import json

        words = [a for a in args if not a.startswith("-")]
        command = " ".join(words[:2] if words[:1] == ["plan"] else words[:1])
        sys.stdout.write(json.dumps({"command": command, "interrupted": True,
                                     "message": "interrupted before a result was ready"}, sort_keys=True) + "\n")
    sys.stderr.write("parasim: interrupted\n")
    _exit_interrupted()


def _exit_interrupted() -> None:
    """Exit 130. After a Ctrl-C that terminated process-pool workers, leave at once once the answer
    is flushed (`os._exit`): the interpreter's exit would join a pool thread that a killed worker
    can leave blocked forever (search.executors.stopped_a_pool)."""
    from parasim.search.executors import stopped_a_pool

    if stopped_a_pool():
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    raise SystemExit(EXIT_INTERRUPTED)


def _extra(name: str) -> tuple[type[BaseException], ...]:
    """click's own Exit/Abort, when the installed typer still uses the click package."""
    cls = getattr(click_exc, name, None)
    return (cls,) if isinstance(cls, type) else ()


if __name__ == "__main__":
    main()
