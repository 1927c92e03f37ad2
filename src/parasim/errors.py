"""One error type for everything a user can get wrong.

The CLI turns it into one line on stderr and exit code 2; nothing else is caught there, so a
bug still shows its traceback while a bad flag or file never does.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class InputError(ValueError):
    """Bad user input: names the field and says what is allowed."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """"; did you mean a, b?" for the up to three known names close to `name`, or ""."""
    close = difflib.get_close_matches(str(name).lower(), list(known), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else ""


def unknown_name(field: str, name: str, known: Iterable[str], *, catalog: str) -> InputError:
    """An unknown name in the `catalog` ("model" or "gpu"), with the close matches ("did you
    mean") and the command that lists them all; `field` is where the name was given."""
    known = sorted(known)
    hint = did_you_mean(name, known)
    return InputError(field, f"unknown {catalog} '{name}'{hint} (known: {len(known)} entries; "
                             f"list them with `parasim {catalog}s`)")


class OutputError(OSError):
    """A result could not be written (a directory, a full disk, no permission): exit 1 with the
    path and the operating system's reason, since the answer itself was computed."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot write {path}: {reason}")


class Interrupted(Exception):
    """Ctrl-C stopped a command after it printed what it had (a partial ranking, or the one line
    `message`): the CLI exits 130. A plain Exception, not a KeyboardInterrupt, so that nothing
    between the command and the CLI's handler (click, typer) takes it for a fresh Ctrl-C."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


def write_output(path, text: str) -> None:
    """Write `text` to `path` (creating parent folders); OSError becomes OutputError."""
    from pathlib import Path

    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    except OSError as e:
        raise OutputError(str(p), e.strerror or str(e)) from None
