"""Every command in the README's tour runs as documented (through a subprocess, like a user) and
gives an answer, not only exit 0: each is run with `--json-out` added, so that the same run prints
its table (checked for a memory unit other than GiB) and writes the JSON checked here (a non-empty
ranking, the documented keys, plausible values)."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from conftest import REPO, SHARED, run_cli

DECIMAL_GB = re.compile(r"\d\s*GB\b(?!/s)")  # a memory size in decimal GB; GB/s is a bandwidth


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


def _check_models(out, args):
    assert len(out) >= 20 and all(m["params_total"] >= m["params_active"] > 0 for m in out)


def _check_gpus(out, args):
    by_id = {g["id"]: g for g in out}
    assert by_id["h100-sxm"]["hbm_gib"] == 80 and all(g["source"] for g in out)


def _check_inspect(out, args):
    assert out["params_total"] > 0 and out["kv_cache_bytes_per_token"] > 0
    if "--gpu" in args:
        assert out["weights_fit"] is True and out["kv_tokens_capacity_per_gpu_group"] > 0


def _check_train(out, args):
    assert out["fits"] is True and out["step_time_s"] > 0 and 0 < out["mfu"] < 1
    assert set(out["breakdown"]) >= {"compute", "exposed_comm", "bubble", "optimizer"}
    assert out["peak_memory_gib_per_gpu"] <= out["memory"]["capacity_gib"]
    if "--varlen-balance" in args:  # a balancing strategy beats static packing on a long tail
        assert out["plan"]["varlen_balance"] == args[args.index("--varlen-balance") + 1]
        assert out["step_time_s"] < out["varlen"]["static_step_time_s"]


def _check_serve(out, args):
    if "--sweep-rate" in args:
        _check_sweep(out, args)
        return
    if "--models" in args:  # several models: each served, the totals their sums
        ms = out["summary"]["models"].values()
        assert out["feasible"] is True and len(ms) >= 2 and all(m["completed"] == m["requests"] > 0 for m in ms)
        assert out["summary"]["gpus"] == sum(m["gpus"] for m in ms) <= int(args[args.index("--gpus") + 1])
        return
    s = out["summary"]
    if "--max-queued" in args:  # admission control: every request served or shed
        assert out["feasible"] is True and s["completed"] + s["shed"] + s["unservable"] == s["requests"] > s["shed"]
    else:
        assert out["feasible"] is True and s["completed"] == s["requests"] > 0
    if "--autoscale-max" in args:
        a = s["autoscale"]
        assert a["scale_ups"] >= 1 and 1 < a["replicas_peak"] <= a["max_replicas"]
    if "--migration" in args:  # live migration moved requests, each stopped only for its last copy
        m = s["migration"]
        assert m["migrations"] >= 1 and m["bytes_moved"] > 0 and 0 < m["downtime_max_s"] < 0.01
    if "--ep" in args:  # attention-DP ranks in lockstep: long-tailed prompts leave ranks waiting
        lk = s["lockstep"]
        assert lk["ep"] == int(args[args.index("--ep") + 1]) and lk["wait_s"] > 0 and 0 < lk["balance_ratio_mean"] < 1
    assert s["output_tokens_per_s"] > 0
    if any(a.startswith("--slo-") for a in args):
        assert 0 <= s["slo_attainment"] <= 1
    else:
        assert s["slo_attainment"] is None
    if "--timeline" in args:  # the trace file, and the figure keys a recorded run adds
        trace = json.loads((REPO / args[args.index("--timeline") + 1]).read_text())
        assert sum(e["ph"] == "X" for e in trace["traceEvents"]) == s["iterations"]
        assert out["series"]["t_s"] and len(out["distributions"]["ttft_s"]) == 101


def _check_sweep(out, args):
    lo, hi, n = (float(v) for v in args[args.index("--sweep-rate") + 1].split(":"))
    points = out["points"]
    assert out["command"] == "serve-sweep" and out["feasible"] is True and len(points) == n
    assert points[0]["rate_requests_per_s"] == lo and points[-1]["rate_requests_per_s"] == hi
    assert all(p["summary"]["completed"] > 0 for p in points)
    k = out["knee"]
    assert k["index"] is None or points[k["index"]]["rate_requests_per_s"] == k["rate_requests_per_s"]


def _check_plan(out, args):
    assert out["interrupted"] is False and out["ranked"] and out["best"] == out["ranked"][0]
    assert [r["rank"] for r in out["ranked"]] == list(range(1, len(out["ranked"]) + 1))
    assert out["evaluated"] > 0 and out["explanation"]["text"]
    if args[1] == "serve":
        assert out["best"]["meets_slo"] and out["best"]["fidelity"] == "full"
    if out.get("expert_parallel"):  # a MoE model: the winner's EP degree is one searched, and EP
        # 8 is what the engines' DeepSeek recipes run on 8 GPUs under load
        assert out["best"]["ep"] in out["expert_parallel"]["searched"]
        if "deepseek-v3" in args:
            assert (out["best"]["tp"], out["best"]["ep"]) == (1, 8)
    if "--param-state" in args:  # the user's stack holds for every ranked plan
        state = args[args.index("--param-state") + 1]
        assert {r["param_state"] for r in out["ranked"]} == {state} == {out["stack"]["param_state"]}
    if "--emit" in args:  # the winner's launch commands, for the engine asked for
        engine = args[args.index("--emit") + 1]
        assert out["emit"]["commands"] and out["emit"]["script"].count("\n") >= 2
        assert {"vllm": "vllm serve", "sglang": "sglang.launch_server", "trtllm": "trtllm-serve"}[engine] in out["emit"]["script"]
    if out["objective"] == "time-to-train":  # ranked by the wall time: tokens / tokens/s / goodput
        tokens = float(args[args.index("--tokens") + 1])
        for r in out["ranked"]:
            assert 0 < r["goodput_fraction"] < 1
            assert abs(r["time_to_train_s"] * r["goodput_fraction"] * r["metrics"]["tokens_per_s"] / tokens - 1) < 1e-9
        times = [r["time_to_train_s"] for r in out["ranked"]]
        assert times == sorted(times)


def _check_validate(out, args):
    assert out["cases"] and out["summary"]
    assert any(c["status"] == "ok" and c["errors"] for c in out["cases"])


CHECKS = {"models": _check_models, "gpus": _check_gpus, "inspect": _check_inspect, "train": _check_train,
          "serve": _check_serve, "plan": _check_plan, "validate": _check_validate}


#: options whose value is a file the command writes: the test writes it under tmp_path instead
FILE_OUTPUTS = ("--timeline",)


def _check_timeline(path, out) -> None:
    """A Chrome trace whose span is the result's step time (to the microsecond)."""
    events = [e for e in json.loads(path.read_text())["traceEvents"] if e["ph"] == "X"]
    span_us = max(e["ts"] + e["dur"] for e in events) - min(e["ts"] for e in events)
    assert abs(span_us - out["step_time_s"] * 1e6) <= 1.0 and out["timeline"]["stages"]


@pytest.mark.parametrize("command", tour_commands())
def test_tour_command_gives_an_answer(command, tmp_path):
    args = shlex.split(command)[1:]
    if "validate" in args and not SHARED.exists():
        pytest.skip("shared/validation is not beside this checkout")
    files = {}
    for i, a in enumerate(args[:-1]):
        if a in FILE_OUTPUTS:
            args[i + 1] = str(files.setdefault(a, tmp_path / "out" / args[i + 1].replace("/", "_")))
    result = tmp_path / "result.json"
    r = run_cli(*args, "--json-out", str(result), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() and not DECIMAL_GB.search(r.stdout)
    out = json.loads(result.read_text())
    CHECKS[args[0]](out, args)
    if "--timeline" in files and args[0] == "train":
        _check_timeline(files["--timeline"], out)
