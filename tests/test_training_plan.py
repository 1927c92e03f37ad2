"""TrainingPlan: mappings and the one validator that names every degree."""

from __future__ import annotations

import pytest

from parasim.errors import InputError
from parasim.specs.catalog import get_model
from parasim.training import TrainingPlan

M = get_model("llama-3-70b")


def test_round_trip_and_derived_dp():
    p = TrainingPlan.from_mapping({"tp": 8, "pp": 2, "virtual-stages": 5, "global_batch": 64}, gpus=64)
    assert p.dp == 4 and p.schedule_name == "interleaved"
    assert TrainingPlan.from_mapping(p.to_mapping()) == p


def test_validator_names_every_degree():
    with pytest.raises(InputError) as e:
        TrainingPlan(tp=8, pp=4, dp=3).check(M, 64)
    assert "tp*pp*cp*dp != gpus (8*4*1*3 = 96 != 64)" in str(e.value)


@pytest.mark.parametrize("kw,field", [({"global_batch": 7, "dp": 2}, "global-batch"),
                                      ({"precision": "fp4"}, "precision"), ({"tp": 3}, "tp"),
                                      ({"recompute": "half"}, "recompute"), ({"zero": 4}, "zero"),
                                      ({"pp": 1, "virtual_stages": 2, "schedule": "interleaved"}, "virtual-stages"),
                                      ({"pp": 3, "virtual_stages": 2, "schedule": "gpipe"}, "virtual-stages"),
                                      ({"pp": 3, "virtual_stages": 2, "schedule": "interleaved"}, "global-batch")])
def test_bad_plans(kw, field):
    with pytest.raises(InputError) as e:
        TrainingPlan(**kw).check(M)
    assert e.value.field == field


def test_unknown_mapping_key():
    with pytest.raises(InputError) as e:
        TrainingPlan.from_mapping({"tensor_parallel": 2})
    assert e.value.field == "plan.tensor_parallel"


def test_shipped_llama3_paper_file_is_the_papers_table():
    """validation/llama3-405b-training.yaml: every row is 16M tokens per batch (2^24 within 1 %),
    DP = GPUs / (TP x CP x PP), and every row predicts (the fallback to 1F1B is said)."""
    from pathlib import Path

    from parasim.specs.validation_case import load_cases
    from parasim.validation.training import predict_case

    cases = load_cases(Path(__file__).resolve().parents[1] / "validation" / "llama3-405b-training.yaml")
    assert [c.measured["tflops_per_gpu"] for c in cases] == [430, 400, 380]
    for c in cases:
        p = c.plan
        assert p["global_batch"] * p["seq_len"] == 2 ** 24
        assert p["tp"] * p["cp"] * p["pp"] * p["dp"] == c.cluster.gpus
        res = predict_case(c)
        assert res.status == "ok" and res.predicted["tflops_per_gpu"] > 0
        assert any("plain 1F1B" in ch for ch in res.choices)


def test_shipped_llmfoundry_file_reproduces_the_tables_parameter_counts():
    """validation/llmfoundry-mpt-training.yaml: every row's MPT shape reproduces the NumParams the
    table printed (12 L d^2 + 13 L d + 50368 d + seq d + 2 d: weights, biases, LayerNorms, tied
    embedding, the benchmark's learned position table), the global batch is GPUs x micro-batch x
    accumulation, and the 2023 software gets MPT's Triton FlashAttention (attn_impl: triton, no FA3 before 2024)."""
    import re
    from pathlib import Path

    from parasim.specs.validation_case import load_cases
    from parasim.validation.training import plan_for_case

    cases = load_cases(Path(__file__).resolve().parents[1] / "validation" / "llmfoundry-mpt-training.yaml")
    assert len(cases) == 201
    for c in cases:
        m, p = c.model, c.plan
        n = int(re.search(r"NumParams (\d+)", c.source).group(1))
        d, L = m.hidden, m.layers
        assert 12 * L * d * d + 13 * L * d + 50368 * d + p["seq_len"] * d + 2 * d == n, c.id
        ga = int(re.search(r"GradAccum (\d+)", c.source).group(1))
        assert p["global_batch"] == c.cluster.gpus * p["micro_batch"] * ga
        assert p["zero"] == 3 and p["tp"] == p["pp"] == 1
    plan, choices = plan_for_case(cases[0])
    assert plan.attention == "triton" and any("attn_impl: triton" in ch for ch in choices)
    assert plan.kernels == "eager"  # Composer / PyTorch FSDP, no torch.compile named
    pure = next(c for c in cases if "MP Mode PURE" in c.source)
    assert plan_for_case(pure)[0].grad_dtype == "bf16"


def test_samples_and_hfu_are_predicted_consistently():
    """samples/s = tokens/s / sequence length; HFU >= MFU (recompute only adds hardware FLOPs)."""
    from pathlib import Path

    from parasim.specs.validation_case import parse_case
    from parasim.validation.training import predict_case

    raw = {"id": "s", "kind": "training", "software": "megatron-core", "model": {"catalog": "llama-3-8b"},
           "hardware": {"accelerator": "h100-sxm", "gpus": 8}, "source": "",
           "plan": {"tp": 1, "pp": 1, "dp": 8, "micro_batch": 1, "global_batch": 64, "seq_len": 4096,
                    "recompute": "full", "zero": 1, "precision": "bf16"},
           "measured": {"samples_per_s": 10.0, "tokens_per_s": 40960.0, "hfu": 0.5, "mfu": 0.4}}
    res = predict_case(parse_case(raw, index=0, base_dir=Path(".")))
    p = res.predicted
    assert p["samples_per_s"] * 4096 == pytest.approx(p["tokens_per_s"])
    assert p["hfu"] > p["mfu"] > 0


def test_software_picks_the_kernels_and_attention_it_ran():
    """Each stack's defaults, from its `software` text: PyTorch-native stacks run eager unless
    torch.compile is named, through SDPA's FlashAttention-2; torchtitan's selective checkpointing
    is per-op; Megatron-DeepSpeed of 2022 is the pre-FlashAttention Megatron code."""
    from pathlib import Path

    from parasim.specs.validation_case import parse_case
    from parasim.validation.training import plan_for_case

    def plan(software: str, **plan_fields):
        raw = {"id": "x", "source": "s", "kind": "training", "software": software,
               "model": {"catalog": "llama-3.1-8b"}, "hardware": {"accelerator": "h100-sxm", "gpus": 8},
               "plan": {"tp": 1, "pp": 1, "dp": 8, "micro_batch": 1, "global_batch": 8, "seq_len": 4096,
                        "recompute": "selective", "zero": 3, **plan_fields},
               "measured": {"tokens_per_s_per_gpu": 1}}
        return plan_for_case(parse_case(raw, index=0, base_dir=Path(".")))[0]

    eager = plan("torchtitan 2024-12 (PyTorch FSDP2, eager mode)")
    assert (eager.kernels, eager.attention, eager.recompute) == ("eager", "flash2", "selective_op")
    assert plan("torchtitan 2024-12 (PyTorch FSDP2, torch.compile)").kernels == "compiled"
    nemo = plan("nemo 24.07 (megatron-core, transformer engine)")
    assert (nemo.kernels, nemo.attention, nemo.recompute) == ("fused", "flash2", "selective")  # pre-FA3 NeMo
    bloom = plan("Megatron-DeepSpeed (BigScience fork, 2022)")
    assert bloom.attention == "unfused" and not bloom.overlap_grad_reduce
    # a value the case states wins over the software's default
    assert plan("torchtitan 2024-12 (PyTorch FSDP2, eager mode)", attention="flash").attention == "flash"
