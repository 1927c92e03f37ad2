"""`--report` draws in a process forked at CLI start (report/worker.py): the same bytes as drawing in
process, a fallback when that process is gone or fails, and nothing left behind when the run ends
by an error or a Ctrl-C sent to the whole process group (as a terminal sends it).

Each case runs the CLI in its own session (a new process group) through a small driver script, and
after it ends looks in /proc for any process still in that group."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or not Path("/proc/self/stat").exists(),
                                reason="the report worker forks (POSIX) and these checks read /proc (Linux)")

TRAIN = ["train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--tp", "2", "--global-batch", "16",
         "--seq-len", "2048"]
SERVE = ["serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--rate", "5", "--requests", "30",
         "--prompt-tokens", "128", "--output-tokens", "16"]
PROLOGUE = """import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from parasim.report import worker
started = worker.start(sys.argv[1])
used = []
_render = worker.render
def _spy(text):
    page = _render(text)
    used.append(page is not None)
    return page
worker.render = _spy
"""
EPILOGUE = """from parasim.cli.main import main
try:
    main(sys.argv[1:])
finally:
    sys.stderr.write(f"worker started={started} used={used}\\n")
"""


def drive(code: str, args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run the driver in a new session; return it and the processes of its group still alive after."""
    p = subprocess.run([sys.executable, "-c", PROLOGUE + code + EPILOGUE, *args], capture_output=True, text=True,
                       timeout=300, start_new_session=True, env={**os.environ, **(env or {})})
    return p, _alive_in_group(_pgid_of(p))


def _pgid_of(p: subprocess.CompletedProcess) -> int:
    return int(p.stderr.rsplit("pgid=", 1)[1].split()[0]) if "pgid=" in p.stderr else -1


def _alive_in_group(pgid: int) -> list[str]:
    alive = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp
            alive.append(d.name)
    return alive


PGID = "sys.stderr.write(f'pgid={os.getpgid(0)}\\n')\n"


@pytest.mark.parametrize("args", [TRAIN, SERVE], ids=["train", "serve"])
def test_the_worker_draws_the_same_bytes_as_the_process_itself(tmp_path, args):
    forked, here = tmp_path / "forked.html", tmp_path / "here.html"
    p, left = drive(PGID, [*args, "--report", str(forked)])
    assert p.returncode == 0, p.stderr
    assert "worker started=True used=[True]" in p.stderr and not left
    q, _ = drive(PGID, [*args, "--report", str(here)], env={"PARASIM_REPORT_WORKER": "0"})
    assert q.returncode == 0 and "worker started=False used=[False]" in q.stderr, q.stderr
    assert forked.read_bytes() == here.read_bytes()
    assert forked.read_text().count("<svg") >= 2


def test_a_worker_that_died_is_replaced_by_drawing_in_process(tmp_path):
    out, ref = tmp_path / "r.html", tmp_path / "ref.html"
    kill = PGID + "os.kill(worker._child.pid, signal.SIGKILL)\n"
    p, left = drive(kill, [*TRAIN, "--report", str(out)])
    assert p.returncode == 0 and "used=[False]" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not left
    q, _ = drive(PGID, [*TRAIN, "--report", str(ref)], env={"PARASIM_REPORT_WORKER": "0"})
    assert q.returncode == 0 and out.read_bytes() == ref.read_bytes()


def test_a_job_the_worker_cannot_draw_comes_back_as_none():
    code = PGID + "print(worker.render('not a JSON list'))\nsys.argv = ['parasim', '--version']\n"
    p, left = drive(code, ["train"])
    assert p.stdout.splitlines()[0] == "None" and not left, p.stdout + p.stderr


def test_bad_input_with_report_exits_2_and_leaves_no_process(tmp_path):
    p, left = drive(PGID, ["train", "--model", "no-such-model", "--gpu", "h100-sxm", "--gpus", "8",
                           "--report", str(tmp_path / "r.html")])
    assert p.returncode == 2 and "started=True" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not left and not (tmp_path / "r.html").exists()


def test_ctrl_c_to_the_whole_group_exits_130_and_leaves_no_process(tmp_path):
    """SIGINT to the process group mid-run (the worker gets it too, and must stay silent)."""
    patch = PGID + ("import parasim.training as _t\n_sim = _t.simulate\n"
                    "def _interrupting(*a, **k):\n    os.killpg(os.getpgid(0), signal.SIGINT)\n    return _sim(*a, **k)\n"
                    "_t.simulate = _interrupting\n")  # train_cmd imports it from the package when it runs
    p, left = drive(patch, [*TRAIN, "--report", str(tmp_path / "r.html")])
    assert p.returncode == 130, p.stderr
    assert "parasim: interrupted" in p.stderr and "Traceback" not in p.stderr and "KeyboardInterrupt" not in p.stderr
    assert not left and not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("value", ["2", "yes", "", "1\n"])
def test_a_bad_worker_switch_is_one_line_exit_2(tmp_path, value):
    p = subprocess.run([sys.executable, "-m", "parasim", *TRAIN, "--report", str(tmp_path / "r.html")],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PARASIM_REPORT_WORKER": value})
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "PARASIM_REPORT_WORKER" in p.stderr, p.stderr
