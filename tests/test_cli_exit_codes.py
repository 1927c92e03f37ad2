"""Every command's exit code means what the README says: 0 an answer; 1 nothing feasible (the
result still printed, with why); 2 bad input; 130 interrupted (partial results marked, or one line).

Interrupts are delivered at a precise point: the driver patches one function to send SIGINT to its
own (main) thread with `signal.raise_signal` - never a sleep-then-kill race - after installing
Python's own SIGINT handler (a suite started in the background inherits SIGINT ignored).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import run_cli

PROLOGUE = "import signal, sys\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
EPILOGUE = "from parasim.cli.main import main\nmain(sys.argv[1:])\n"


def drive(patch: str, *args: str) -> subprocess.CompletedProcess:
    """Run the CLI in a process whose `patch` (Python source) was applied first."""
    return subprocess.run([sys.executable, "-c", PROLOGUE + patch + EPILOGUE, *args], capture_output=True,
                          text=True, timeout=300)


def sigint_on_call(module: str, name: str, nth: int = 1) -> str:
    """Source that makes `module.name` raise SIGINT in the main thread on its nth call, then run."""
    return ("import importlib\n"
            f"_m = importlib.import_module({module!r})\n"
            f"_orig = _m.{name}\n"
            "_calls = []\n"
            "def _patched(*a, **k):\n"
            "    _calls.append(1)\n"
            f"    if len(_calls) == {nth}:\n"
            "        signal.raise_signal(signal.SIGINT)\n"
            "    return _orig(*a, **k)\n"
            f"_m.{name} = _patched\n")


SERVE = ["serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--rate", "5", "--requests", "30",
         "--prompt-tokens", "128", "--output-tokens", "16"]
TRAIN = ["train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--tp", "2", "--global-batch", "16",
         "--seq-len", "2048"]
PLAN_TRAIN = ["plan", "train", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--gpus", "16", "--global-batch", "32",
              "--seq-len", "2048", "--zero", "1", "--micro-batch", "1", "--workers", "1"]
PLAN_SERVE = ["plan", "serve", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--max-gpus", "2", "--rate", "4",
              "--prompt-tokens", "256", "--output-tokens", "32", "--requests", "60", "--screen-requests", "30",
              "--slo-ttft", "1", "--slo-tpot", "0.05", "--schedulers", "sarathi,vllm", "--token-budgets", "512",
              "--max-batches", "64", "--precisions", "bf16", "--workers", "1"]
CASE = """- id: {id}
  kind: serving
  software: vllm 0.10.1
  model: {{catalog: llama-3.1-8b}}
  hardware: {{accelerator: h100-sxm, gpus: 1}}
  plan: {{tp: 1}}
  workload: {{requests: 20, prompt_tokens: 128, output_tokens: 16, arrival: burst}}
  measured: {{output_tokens_per_s: 1000.0}}
"""


@pytest.fixture
def cases(tmp_path):
    f = tmp_path / "cases.yaml"
    f.write_text("cases:\n" + "".join(CASE.format(id=f"c{i}") for i in range(3)))
    return f


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# --- 1: nothing feasible, the result still printed with why ---------------------------------------------
def test_serve_a_plan_that_cannot_run_exits_1_with_why():
    """Llama-3.1-70B in bf16 (141 GB of weights) on one 24 GB L4: no room for a KV cache."""
    args = ["serve", "--model", "llama-3.1-70b", "--gpu", "l4", "--requests", "10", "--rate", "1"]
    r = run_cli(*args, "--json")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["feasible"] is False and out["reason"] and out["message"]
    t = run_cli(*args)
    assert t.returncode == 1 and "infeasible" in t.stdout and "GiB per GPU" in t.stdout


def test_inspect_weights_that_do_not_fit_the_gpu_exit_1():
    """405B parameters x 2 bytes = 810 GB of weights on one 80 GiB H100."""
    r = run_cli("inspect", "--model", "llama-3.1-405b", "--gpu", "h100-sxm", "--json")
    assert r.returncode == 1, r.stderr
    assert json.loads(r.stdout)["weights_fit"] is False
    assert run_cli("inspect", "--model", "llama-3.1-405b", "--gpu", "h100-sxm", "--tp", "8", "--pp", "2").returncode == 0
    assert run_cli("inspect", "--model", "llama-3.1-405b").returncode == 0  # no GPU asked: nothing to fit


def test_plan_train_with_nothing_ranked_exits_1_with_the_pruning_counts():
    """405B on 8 L4s (192 GB in all) cannot even hold its bf16 weights: every plan is pruned."""
    args = ["plan", "train", "--model", "llama-3.1-405b", "--gpu", "l4", "--gpus", "8", "--global-batch", "8",
            "--seq-len", "2048"]
    r = run_cli(*args, "--json")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["best"] is None and out["ranked"] == [] and sum(out["pruned"].values()) == out["space_size"]
    t = run_cli(*args)
    assert t.returncode == 1 and "pruned" in t.stdout and "no feasible plan" in t.stdout


def test_plan_serve_with_nothing_meeting_the_slo_exits_1():
    """A 10 us TPOT SLO: one decode step of an 8B model reads 16 GB of weights (>= 4.8 ms at 3.35 TB/s)."""
    args = [a if a != "0.05" else "0.00001" for a in PLAN_SERVE]
    r = run_cli(*args, "--json")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["best"] is None and out["pruned"].get("tpot_floor")


# --- 2: bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["models", "--bogus"],
    ["gpus", "--bogus"],
    ["inspect", "--model", "nope-7b"],
    ["train", "--model", "nope-7b", "--gpu", "h100-sxm", "--gpus", "8"],
    ["serve", "--model", "llama-3-8b", "--gpu", "h999"],
    ["plan", "train", "--model", "nope-7b", "--gpu", "h100-sxm", "--gpus", "8", "--global-batch", "8", "--seq-len", "512"],
    ["plan", "serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--max-gpus", "1", "--rate", "1",
     "--prompt-tokens", "8", "--output-tokens", "8", "--slo-ttft", "1", "--slo-tpot", "-1"],
    ["validate", "no-such-file.yaml"],
    ["serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--requests-out", "requests.txt"],
])
def test_bad_input_exits_2_with_one_line(args):
    r = run_cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert one_line(r.stderr).startswith("parasim: error:")


def test_validate_with_nothing_to_run_exits_2(cases):
    """Every case is a serving case: `--kind training` leaves nothing to validate."""
    r = run_cli("validate", str(cases), "--kind", "training")
    assert r.returncode == 2
    assert "nothing to validate" in one_line(r.stderr) and "kind" in r.stderr


# --- 130: interrupted ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args, module, name", [
    (SERVE, "parasim.serving.simulate", "simulate"),
    (TRAIN, "parasim.training", "simulate"),
    (["validate", "CASES"], "parasim.validation.run", "run_case"),
    (["validate", "CASES", "-j", "2"], "parasim.search.executors", "wait"),  # in the parent, before any case
    (["inspect", "--model", "llama-3-8b"], "parasim.cli.catalog_cmds", "inspect_model"),
])
def test_an_interrupted_command_exits_130_with_one_line(args, module, name, cases):
    args = [str(cases) if a == "CASES" else a for a in args]
    r = drive(sigint_on_call(module, name), *args)
    assert r.returncode == 130
    assert one_line(r.stderr) == "parasim: interrupted" and r.stdout == ""
    j = drive(sigint_on_call(module, name), *args, "--json")
    assert j.returncode == 130 and one_line(j.stderr) == "parasim: interrupted"
    out = json.loads(j.stdout)  # a script's JSON parser still gets JSON
    assert out["interrupted"] is True and out["command"] == args[0]


def test_plan_train_interrupted_before_any_plan_finished(tmp_path):
    """Ctrl-C during the memory screen (main process, before the pool starts)."""
    patch = sigint_on_call("parasim.search.plan_train", "screen_memory")
    r = drive(patch, *PLAN_TRAIN)
    assert r.returncode == 130 and r.stdout == ""
    assert one_line(r.stderr) == "parasim: interrupted before any plan finished"
    f = tmp_path / "out.json"
    j = drive(patch, *PLAN_TRAIN, "--json", "--json-out", str(f))
    assert j.returncode == 130
    out = json.loads(j.stdout)
    assert out["interrupted"] is True and out["ranked"] == [] and out["best"] is None and out["evaluated"] == 0
    assert json.loads(f.read_text()) == out


def test_plan_serve_interrupted_before_any_plan_finished():
    r = drive(sigint_on_call("parasim.search.plan_serve", "analytic_prune"), *PLAN_SERVE, "--json")
    assert r.returncode == 130 and one_line(r.stderr) == "parasim: interrupted before any plan finished"
    assert json.loads(r.stdout)["interrupted"] is True


def test_plan_serve_interrupted_after_one_plan_prints_it_marked(tmp_path):
    """Ctrl-C while the second screening run starts: the first one is kept and ranked (if it met the
    SLO), the table says interrupted, exit 130; the emitted YAML (if any) is the best so far."""
    patch = sigint_on_call("parasim.search.plan_serve", "evaluate", nth=2)
    r = drive(patch, *PLAN_SERVE, "--json")
    assert r.returncode == 130, r.stderr
    out = json.loads(r.stdout)
    assert out["interrupted"] is True and out["evaluated"] == 1
    assert one_line(r.stderr) == "parasim: interrupted: ranked only the 1 plan that finished"
    t = drive(patch, *PLAN_SERVE)
    assert t.returncode == 130 and "interrupted: best so far" in t.stdout


def test_a_late_ctrl_c_in_plan_serve_keeps_the_finished_stages():
    """Ctrl-C while the second stage is being pruned (main process, between executor batches): the
    screened plans are still ranked and reported, marked interrupted - not lost."""
    patch = sigint_on_call("parasim.search.plan_serve", "kv_prune", nth=2)
    r = drive(patch, *PLAN_SERVE, "--json")
    assert r.returncode == 130, r.stderr
    out = json.loads(r.stdout)
    assert out["interrupted"] is True and out["evaluated"] > 0 and out["ranked"]
    assert out["best"] == out["ranked"][0] and out["stages"]["refined"] == 0
    assert out["baseline"]["metrics"] is None  # not simulated after Ctrl-C


def test_a_ctrl_c_while_plan_train_explains_still_reports_the_whole_ranking():
    full = json.loads(run_cli(*PLAN_TRAIN, "--json").stdout)
    r = drive(sigint_on_call("parasim.search.explain", "explain"), *PLAN_TRAIN, "--json")
    assert r.returncode == 130, r.stderr
    out = json.loads(r.stdout)
    assert out["interrupted"] is True and out["evaluated"] == full["evaluated"]
    assert [x["metrics"] for x in out["ranked"]] == [x["metrics"] for x in full["ranked"]]


def test_pool_workers_are_forked_with_sigint_blocked():
    """A terminal Ctrl-C reaches the whole process group: a worker that had not yet set SIGINT to
    ignored would raise KeyboardInterrupt in its start-up and print a traceback. Each worker must
    come out of fork() with SIGINT blocked (it unblocks it once it ignores it)."""
    code = (
        "import os, signal, operator\n"
        "r, w = os.pipe()\n"
        "def child():\n"
        "    os.write(w, b'B' if signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []) else b'-')\n"
        "os.register_at_fork(after_in_child=child)\n"
        "from parasim.search import executors\n"
        "out = executors.run(operator.mul, 3, list(range(40)), workers=2)\n"
        "assert out.results == [3 * x for x in range(40)]\n"
        "os.close(w)\n"
        "print(os.read(r, 64).decode())\n"
    )
    r = subprocess.run([sys.executable, "-c", PROLOGUE + code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "BB"


def test_an_error_quoting_control_characters_back_is_still_one_line(capsys):
    """A value with a newline or a terminal escape in it must not split or colour the message."""
    import pytest

    from parasim.cli.main import fail

    with pytest.raises(SystemExit) as e:
        fail("model: unknown model 'a\nb\x1b[31m'")
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "\x1b" not in err and "a\\nb\\x1b[31m" in err
