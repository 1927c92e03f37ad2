"""Every command in the README's tour runs as documented (through a subprocess, like a user)."""

from __future__ import annotations

import re
import shlex

import pytest

from conftest import REPO, SHARED, run_cli


def tour_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    tour = text.split("## A short tour", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in tour.splitlines() if ln.startswith("| `parasim")]
    cmds = []
    for row in rows:  # the first cell; "`parasim models`, `parasim gpus`" holds two
        cmds += re.findall(r"`(parasim [^`]+)`", row.split("|")[1])
    return cmds


def test_tour_lists_every_command():
    names = {shlex.split(c)[1] for c in tour_commands()}
    assert {"models", "gpus", "inspect", "train", "serve", "plan", "validate"} <= names


@pytest.mark.parametrize("command", tour_commands())
def test_tour_command_runs(command):
    args = shlex.split(command)[1:]
    if "validate" in args and not SHARED.exists():
        pytest.skip("shared/validation is not beside this checkout")
    r = run_cli(*args, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip()
