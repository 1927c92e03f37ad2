"""`parasim train`: explicit flags win, defaults follow Megatron-Core practice, and every default
that changes the answer is printed (JSON `defaults`, table "defaults used")."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.specs.catalog import get_model
from tests.conftest import run_cli

# the Llama 3 paper's 405B layout at 16K GPUs (TP 8, PP 16, DP 128, interleaved, ZeRO-2-like)
LLAMA3 = ["train", "--model", "llama-3.1-405b", "--gpu", "h100-sxm", "--gpus", "16384", "--tp", "8", "--pp", "16",
          "--virtual-stages", "2", "--zero", "2", "--global-batch", "2048", "--seq-len", "8192"]


def _json(*args: str) -> dict:
    r = run_cli(*args, "--json")
    out = json.loads(r.stdout)
    assert r.returncode == (0 if out["fits"] else 1), r.stderr  # a plan that does not fit exits 1
    return out


def test_sequence_parallel_defaults_on_with_tp_so_the_llama3_layout_fits():
    out = _json(*LLAMA3)
    assert out["sequence_parallel"] is True and out["defaults"]["sequence_parallel"] is True
    assert out["fits"] is True
    # stated explicitly off, it is off, not listed as a default, and the activations grow
    off = _json(*LLAMA3, "--no-sequence-parallel")
    assert off["sequence_parallel"] is False and "sequence_parallel" not in off["defaults"]
    assert off["memory"]["activations_gib"] > out["memory"]["activations_gib"]


def test_without_a_global_batch_megatrons_rule_is_used_and_printed():
    # Megatron-LM: global_batch_size = micro_batch_size x data_parallel_size when not given
    out = _json("train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "16", "--tp", "2",
                "--micro-batch", "2")
    assert out["dp"] == 8 and out["global_batch"] == 16 and out["defaults"]["global_batch"] == 16
    for k in ("micro_batch", "tp", "dp"):
        assert k not in out["defaults"]
    r = run_cli("train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "16", "--tp", "2")
    assert r.returncode == 0, r.stderr
    assert "defaults used" in r.stdout and "global_batch=8" in r.stdout


def test_a_defaulted_batch_an_interleaved_schedule_cannot_split_names_the_default():
    r = run_cli("train", "--model", "llama-3-70b", "--gpu", "h100-sxm", "--gpus", "64", "--tp", "8", "--pp", "2",
                "--virtual-stages", "2")
    assert r.returncode == 2
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and "global-batch" in line and "defaulted" in line


def test_schedule_flag_overrides_the_files_virtual_stages_and_says_so(tmp_path):
    cfg = tmp_path / "plan.yaml"
    cfg.write_text("model: llama-3-70b\ngpu: h100-sxm\ngpus: 64\ntp: 8\npp: 2\nvirtual_stages: 8\n"
                   "schedule: interleaved\nglobal_batch: 128\nseq_len: 8192\n")
    base = _json("train", "-c", str(cfg))
    assert (base["schedule"], base["virtual_stages"]) == ("interleaved", 8) and base["overrides"] == {}
    out = _json("train", "-c", str(cfg), "--schedule", "1f1b")
    assert (out["schedule"], out["virtual_stages"]) == ("1f1b", 1)
    assert out["overrides"]["virtual_stages"] == {"file": 8, "used": 1, "by": "--schedule 1f1b"}
    table = run_cli("train", "-c", str(cfg), "--schedule", "1f1b")
    assert table.returncode == 0 and "--schedule 1f1b overrides the file" in table.stdout


def test_virtual_stages_flag_over_the_files_interleaved_schedule(tmp_path):
    cfg = tmp_path / "plan.yaml"
    cfg.write_text("model: llama-3-70b\ngpu: h100-sxm\ngpus: 64\ntp: 8\npp: 2\nvirtual_stages: 8\n"
                   "schedule: interleaved\nglobal_batch: 128\nseq_len: 8192\n")
    out = _json("train", "-c", str(cfg), "--virtual-stages", "1")
    assert (out["schedule"], out["virtual_stages"]) == ("1f1b", 1)
    assert out["overrides"]["schedule"] == {"file": "interleaved", "used": "1f1b", "by": "--virtual-stages 1"}


def test_a_degree_flag_over_the_files_dp_derives_dp_again(tmp_path):
    cfg = tmp_path / "plan.yaml"
    cfg.write_text("model: llama-3-8b\ngpu: h100-sxm\ngpus: 16\ntp: 2\npp: 2\ndp: 4\nglobal_batch: 64\n"
                   "seq_len: 4096\n")
    out = _json("train", "-c", str(cfg), "--tp", "4")
    assert out["dp"] == 2  # 16 / (4 * 2)
    assert out["overrides"]["dp"] == {"file": 4, "used": 2, "by": "--tp 4"}


FIELDS = {
    "tp": st.sampled_from([1, 2, 4]), "pp": st.sampled_from([1, 2]), "micro_batch": st.sampled_from([1, 2]),
    "zero": st.sampled_from([0, 1, 3]), "recompute": st.sampled_from(["none", "full"]),
    "sequence_parallel": st.booleans(), "precision": st.sampled_from(["bf16", "fp8"]),
    "seq_len": st.sampled_from([1024, 4096]), "attention": st.sampled_from(["flash", "flash2"]),
    "overlap_grad_reduce": st.booleans(), "tp_comm_overlap": st.booleans(),
}


@settings(max_examples=60, deadline=None)
@given(st.fixed_dictionaries({}, optional=FIELDS))
def test_given_fields_are_kept_and_never_reported_as_defaults(given_fields):
    from parasim.training.defaults import resolve_plan

    model = get_model("llama-3-8b")
    plan, defaults = resolve_plan(model, given_fields, 16)
    for k, v in given_fields.items():
        assert getattr(plan, k) == v
        assert k not in defaults
    for k, v in defaults.items():
        assert getattr(plan, k) == v
    assert plan.sequence_parallel == given_fields.get("sequence_parallel", plan.tp > 1)
    assert plan.global_batch == given_fields.get("global_batch", plan.dp * plan.micro_batch)
