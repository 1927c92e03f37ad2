"""`plan serve --emit vllm|sglang|trtllm`: the launch commands of the winner.

The commands are parsed back (shlex) and checked against the plan they came from: every GPU of
the plan is handed to exactly one engine process, each process's parallel sizes and limits are
the plan's, ports never collide, and a disaggregated plan gets one process per pool instance plus
its front end."""

from __future__ import annotations

import json
import shlex

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from parasim.engines.launch import LAUNCHERS, get_launcher, launch_for
from parasim.errors import InputError
from parasim.serving.plan import ServingPlan
from parasim.specs.catalog import cluster_for, get_accelerator, get_model
from tests.conftest import run_cli

#: each engine's (program words, TP flag, max-batch flag, token-budget flag, port flag)
FLAGS = {
    "vllm": (("vllm", "serve"), "--tensor-parallel-size", "--max-num-seqs", "--max-num-batched-tokens", "--port"),
    "sglang": (("python", "-m", "sglang.launch_server"), "--tp-size", "--max-running-requests",
               "--chunked-prefill-size", "--port"),
    "trtllm": (("trtllm-serve",), "--tp_size", "--max_batch_size", "--max_num_tokens", "--port"),
}
DP_FLAG = {"vllm": "--data-parallel-size", "sglang": "--dp-size"}


def servers(engine: str, launch) -> list[dict]:
    """Each engine-server command as {env, flags}: the router/front-end lines are left out."""
    program = FLAGS[engine][0]
    out = []
    for cmd in launch.commands:
        words = shlex.split(cmd, comments=True)
        env = {}
        while words and "=" in words[0] and not words[0].startswith("-"):
            k, v = words.pop(0).split("=", 1)
            env[k] = v
        if tuple(words[:len(program)]) != program or "disaggregated" in words:
            continue
        flags, i = {}, len(program) + 1 if engine != "sglang" else len(program)
        while i < len(words):
            if words[i].startswith("--"):
                nxt = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") else True
                flags[words[i]] = nxt
                i += 2 if nxt is not True else 1
            else:
                i += 1
        out.append({"env": env, "flags": flags})
    return out


def gpus_of(server: dict, tp: int, pp: int, dp: int) -> int:
    ids = server["env"].get("CUDA_VISIBLE_DEVICES")
    n = len(ids.split(",")) if ids else tp * pp * dp
    assert n == tp * pp * dp, (ids, tp, pp, dp)
    return n


plans = hst.builds(
    lambda tp, replicas, sched, budget, batch: ServingPlan(tp=tp, replicas=replicas, scheduler=sched,
                                                           token_budget=budget, max_batch=batch),
    hst.sampled_from([1, 2, 4, 8]), hst.integers(1, 4), hst.sampled_from(["sarathi", "splitfuse", "continuous", "sglang"]),
    hst.sampled_from([256, 512, 2048]), hst.sampled_from([32, 128, 256]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans, engine=hst.sampled_from(sorted(FLAGS)))
def test_colocated_commands_hand_out_every_gpu_once_with_the_plans_limits(plan, engine):
    if not get_launcher(engine).runs(plan.scheduler):
        return
    model = get_model("llama-3-8b")
    cluster = cluster_for(get_accelerator("h100-sxm"), plan.gpus())
    launch = launch_for(engine, model, cluster, plan)
    _, tp_flag, batch_flag, budget_flag, port_flag = FLAGS[engine]
    found = servers(engine, launch)
    assert found
    total, ports = 0, set()
    for s in found:
        f = s["flags"]
        dp = int(f.get(DP_FLAG.get(engine, ""), 1))
        total += gpus_of(s, int(f[tp_flag]), 1, dp)
        assert int(f[tp_flag]) == plan.tp
        assert int(f[batch_flag]) == plan.max_batch
        assert int(f[budget_flag]) == plan.token_budget
        ports.add(f[port_flag])
    assert total == plan.gpus()
    assert len(ports) == len(found)


@pytest.mark.parametrize("engine", sorted(FLAGS))
def test_disaggregated_plan_gets_one_process_per_instance_and_a_front_end(engine):
    plan = ServingPlan(tp=4, scheduler="disagg", prefill_gpus=8, prefill_tp=8, decode_gpus=8, decode_tp=2)
    model = get_model("llama-3-70b")
    launch = launch_for(engine, model, cluster_for(get_accelerator("h100-sxm"), 16), plan)
    _, tp_flag, *_ = FLAGS[engine]
    found = servers(engine, launch)
    tps = sorted(int(s["flags"][tp_flag]) for s in found)
    assert tps == [2, 2, 2, 2, 8]  # one TP8 prefill instance, four TP2 decode instances
    assert sum(gpus_of(s, int(s["flags"][tp_flag]), 1, 1) for s in found) == 16
    assert len({s["flags"][FLAGS[engine][4]] for s in found}) == 5
    script = launch.script()
    if engine == "vllm":
        assert script.rstrip().endswith("wait")  # no front end of its own: the notes name a proxy
        assert any("proxy" in n for n in launch.notes)
    else:  # SGLang's router / TensorRT-LLM's disaggregated server runs in the foreground
        assert "launch_router" in launch.commands[-1] or "disaggregated" in launch.commands[-1]
        assert not script.rstrip().endswith("&")


def test_trtllm_kv_fraction_gives_the_kv_cache_the_simulated_bytes():
    """TensorRT-LLM's fraction is of the memory free after weights and buffers: fraction x free
    must come back to the KV bytes parasim's budget holds (to the 0.01 the flag is rounded to)."""
    from parasim.serving.simulate import plan_pools

    model, cluster = get_model("llama-3-70b"), cluster_for(get_accelerator("h100-sxm"), 4)
    plan = ServingPlan(tp=4, scheduler="sarathi").resolved(model)
    (pool,), _ = plan_pools(model, cluster, plan)
    launch = launch_for("trtllm", model, cluster, plan)
    frac = float(servers("trtllm", launch)[0]["flags"]["--kv_cache_free_gpu_memory_fraction"])
    b = pool.kvb
    free = b.hbm - b.weights - b.activations - b.reserved
    assert frac * free <= b.kv < (frac + 0.01) * free


def test_quantized_plans_say_what_checkpoint_they_need():
    model, cluster = get_model("llama-3-8b"), cluster_for(get_accelerator("h100-sxm"), 1)
    fp8 = ServingPlan(weights="fp8", kv_dtype="fp8", scheduler="sarathi")
    v = launch_for("vllm", model, cluster, fp8)
    f = servers("vllm", v)[0]["flags"]
    assert f["--quantization"] == "fp8" and f["--kv-cache-dtype"] == "fp8"
    t = launch_for("trtllm", model, cluster, fp8)  # TensorRT-LLM needs an FP8 checkpoint made offline
    assert "<path to the FP8 checkpoint" in t.commands[0] and any("quantize" in n for n in t.notes)
    int4 = launch_for("sglang", model, cluster, ServingPlan(weights="int4", scheduler="sglang"))
    assert "INT4" in int4.commands[0] and "--quantization" not in int4.commands[0]


def test_a_model_without_a_public_repository_gets_a_placeholder_and_a_note():
    model, cluster = get_model("gpt-3-175b"), cluster_for(get_accelerator("h100-sxm"), 8)
    launch = launch_for("vllm", model, cluster, ServingPlan(tp=8, scheduler="sarathi"))
    assert "<path to gpt-3-175b weights>" in launch.commands[0]
    assert any("no public Hugging Face repository" in n for n in launch.notes)


def test_unknown_engine_is_an_input_error_naming_emit():
    with pytest.raises(InputError) as e:
        get_launcher("tgi")
    assert e.value.field == "emit" and all(n in e.value.message for n in LAUNCHERS.names())


SMALL = ("plan", "serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--max-gpus", "2", "--rate", "4",
         "--prompt-tokens", "512", "--output-tokens", "64", "--requests", "150", "--slo-ttft", "2",
         "--screen-requests", "60", "--refine", "2", "--max-batches", "64", "--token-budgets", "512")


def test_cli_emit_vllm_prints_a_vllm_serve_line_and_searches_what_vllm_runs():
    r = run_cli(*SMALL, "--emit", "vllm")
    assert r.returncode == 0, r.stderr
    assert any(line.startswith("vllm serve ") for line in r.stdout.splitlines()), r.stdout
    assert "searching the schedulers vLLM 0.11 runs" in r.stderr
    j = run_cli(*SMALL, "--emit", "vllm", "--json")
    out = json.loads(j.stdout)
    assert out["emit"]["engine"] == "vLLM" and out["emit"]["commands"]
    assert {row["scheduler"] for row in out["ranked"]} <= set(get_launcher("vllm").schedulers)


@pytest.mark.parametrize("args, field", [(("--emit", "tgi"), "emit:"), (("--emit", ""), "emit:"),
                                         (("--emit", "vllm", "--schedulers", "vllm"), "schedulers:")])
def test_cli_bad_emit_is_exit_2_naming_the_field(args, field):
    r = run_cli(*SMALL, *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert field in r.stderr and "Traceback" not in r.stderr


def test_hf_config_name_or_path_becomes_the_repository(tmp_path):
    from parasim.specs.catalog import get_model as load

    cfg = {"_name_or_path": "acme/tiny-llama", "model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 512, "vocab_size": 1000,
           "max_position_embeddings": 2048}
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    assert load(str(p)).hf_repo == "acme/tiny-llama"
    cfg["_name_or_path"] = "/data/ckpt/tiny"
    p.write_text(json.dumps(cfg))
    assert load(str(p)).hf_repo == ""


@pytest.mark.parametrize("ahead", [False, True])
def test_sglang_launch_keeps_the_overlap_scheduler_only_when_simulated(ahead):
    """SGLang runs its overlap scheduler by default (batches formed ahead); the command launches the
    plan that was simulated: `--disable-overlap-schedule` exactly when schedule_ahead is false, with a
    note saying why."""
    model = get_model("llama-3-8b")
    cluster = cluster_for(get_accelerator("h100-sxm"), 1)
    launch = launch_for("sglang", model, cluster, ServingPlan(scheduler="sglang", schedule_ahead=ahead))
    (server,) = servers("sglang", launch)
    assert ("--disable-overlap-schedule" in server["flags"]) is (not ahead)
    assert any("overlap scheduler" in n for n in launch.notes) is (not ahead)
