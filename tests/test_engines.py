"""Engine profiles: one registry, structured choices, and `parasim serve --engine NAME[==VERSION]`."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from parasim.engines.lookup import engine_software, named_engines, profile_for
from parasim.engines.profile import ENGINES, Choice
from parasim.errors import InputError
from parasim.specs.validation_case import parse_case
from parasim.validation.serving import case_plan

SERVE = ["serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--rate", "4", "--requests", "60",
         "--prompt-tokens", "700", "--output-tokens", "40", "--json"]


def test_registry_lists_each_engine():
    assert named_engines() == ("nim", "tensorrt-llm", "vllm", "sglang", "tgi", "lmdeploy", "deepspeed-mii")
    assert set(ENGINES.names()) == {*named_engines(), "default"}
    for name in named_engines():
        assert ENGINES.get(name).name == name
    assert profile_for("DeepSpeed-MII fastgen").name == "deepspeed-mii"
    assert profile_for("mlc-llm 0.1").name == "default"
    assert profile_for("TensorRT-LLM 0.13 (trtllm-bench)").name == "tensorrt-llm"


def test_engine_names_and_releases():
    cls, software = engine_software("vllm==0.6.0")
    assert cls.name == "vllm" and software == "vllm 0.6.0"
    assert engine_software(" SGLang ")[1] == "sglang"  # no version: the profile's current defaults
    for bad, says in [("vlm", "unknown engine 'vlm'"), ("vllm==7.0", "vllm 0.2 - 0.20"), ("vllm==x", "'x'"),
                      ("default", "unknown engine"), ("", "NAME[==VERSION]")]:
        with pytest.raises(InputError) as e:
            engine_software(bad)
        assert e.value.field == "engine" and says in e.value.message


def _case(tmp_path, software: str, plan: dict, source: str = "a benchmark"):
    raw = {"id": "c", "source": source, "kind": "serving", "software": software,
           "model": {"family": "llama", "layers": 32, "hidden": 4096, "heads": 32, "kv_heads": 8,
                     "ffn_hidden": 14336, "vocab": 128256},
           "hardware": {"accelerator": "h100-sxm", "gpus": 1, "gpus_per_node": 8},
           "plan": {"tp": 1, "pp": 1, "replicas": 1, **plan},
           "workload": {"requests": 20, "prompt_tokens": 1000, "output_tokens": 100},
           "measured": {"ttft_mean_s": 0.1}}
    return parse_case(raw, index=0, base_dir=tmp_path)


def test_choices_are_data_by_field(tmp_path):
    """vLLM 0.6 (V0): the budget is max(max_model_len, 2048), max_model_len the model's context
    (2048 for an explicit architecture), the cache the model's dtype; each choice carries its field."""
    plan, choices, prof = case_plan(_case(tmp_path, "vllm 0.6.0", {"weights": None}))
    assert prof == "vllm" and all(isinstance(c, Choice) for c in choices)
    by_field = {c.field: c.value for c in choices}
    assert by_field["weights"] == "bf16"
    assert by_field["gpu_memory_utilization"] == 0.9 == plan.gpu_memory_utilization
    assert by_field["token_budget"] == 2048 == plan.token_budget
    assert by_field["kv_dtype"] == "bf16"
    # a stated value wins and is said as such, by field
    plan, choices, _ = case_plan(_case(tmp_path, "vllm 0.6.0", {"weights": "bf16"}, "--max-num-seqs 48"))
    assert plan.max_batch == 48 and [c.value for c in choices if c.field == "max_batch"] == [48]
    assert "weights" not in {c.field for c in choices}


def test_choice_survives_pickling():
    import pickle

    c = pickle.loads(pickle.dumps(Choice("kv_cache fp8 (stated)", "kv_dtype", "fp8")))
    assert (str(c), c.field, c.value) == ("kv_cache fp8 (stated)", "kv_dtype", "fp8")


def _summary(args):
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    return out, {k: v for k, v in out["summary"].items() if k != "sim_wall_s"}


def test_serve_engine_equals_the_explicit_flags():
    """vLLM 0.6.0 on one H100 serving Llama-3-8B (context 8192): V0 prefill-first, 256 sequences,
    budget max(8192, 2048), 16-token blocks, utilization 0.9, 1.5 ms iteration overhead, async output
    1.5 ms late, eager prefill 10 kernels x 26 us per layer, FlashAttention-2 prefill (docs/serving.md)."""
    eng, s_eng = _summary([*SERVE, "--engine", "vllm==0.6.0"])
    explicit = ["--scheduler", "vllm", "--max-batch", "256", "--token-budget", "8192", "--block-size", "16",
                "--gpu-memory-utilization", "0.9", "--iteration-overhead-s", "0.0015",
                "--output-delay-s", "0.0015", "--eager-prefill-layer-s", "0.00026", "--kv-dtype", "bf16",
                "--attention", "flash2"]
    _, s_flags = _summary([*SERVE, *explicit])
    assert s_eng == s_flags
    d = eng["inputs"]["engine"]
    assert d["engine"] == "vllm 0.6.0" and d["defaults"]["max_batch"] == 256
    # an explicit flag wins over the engine's default and is not listed as one
    out, _ = _summary([*SERVE, "--engine", "vllm==0.6.0", "--max-batch", "32"])
    assert out["inputs"]["plan"]["max_batch"] == 32 and "max_batch" not in out["inputs"]["engine"]["defaults"]


def test_serve_unknown_engine_is_exit_2():
    r = run_cli(*SERVE, "--engine", "vllm==0.1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == ("parasim: error: engine: unknown vllm release '0.1'; known: vllm 0.2 - 0.20 "
                                "(or no version: the current defaults)")
