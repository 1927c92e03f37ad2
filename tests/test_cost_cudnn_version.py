"""Blackwell attention by the cuDNN version that ran (cost.attn_shape.cudnn_law, plan `cudnn_version`).

Expected values are NVIDIA/cudnn-frontend's published GB200 SDPA points (cuDNN 9.18.1 and 9.22) and
the NeMo containers' cuDNN versions as Megatron-Bridge's docs/releases/software-versions.md lists them.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.cost.attn_shape import (ATTN_BWD_EFF_RATIO, CUDNN_918_B200, CUDNN_922_B200, CUDNN_B200, CUDNN_LAWS,
                                     cudnn_law, law_for, parse_cudnn_version)
from parasim.errors import InputError
from parasim.specs.catalog import get_accelerator
from parasim.training.plan import TrainingPlan
from parasim.validation.training import nemo_cudnn

from tests.conftest import run_cli

GB200 = get_accelerator("gb200")
#: published causal BF16 TFLOP/s at 4k, 8k, 16k, 32k (results/gb200_918_only_cudnn/llama3.1_20260126_110503.csv;
#: results/llama3.1/gb200/llama3.1_20260424_100750.csv, non-deterministic backward)
GB200_POINTS = {
    ("9.18", "fwd"): (1297, 1563, 1646, 1686), ("9.18", "bwd"): (1105, 1279, 1371, 1441),
    ("9.22", "fwd"): (1408, 1574, 1708, 1622), ("9.22", "bwd"): (1148, 1332, 1328, 1226),
}
#: how close the fit of each curve lands (9.22's 32k points fall below its 16k ones: one R cannot follow)
TOLERANCE = {"9.18": 0.03, "9.22": 0.07}


@pytest.mark.parametrize("version,pass_", sorted(GB200_POINTS))
def test_gb200_published_points_reproduced(version, pass_):
    """The catalog's GB200 attention rate over the law's time scale lands on the published points."""
    law = law_for("blackwell", f"te_fused@{version}")
    backward = pass_ == "bwd"
    catalog = GB200.sustained_peak("bf16") * GB200.efficiency.attention / 1e12 * (ATTN_BWD_EFF_RATIO if backward else 1.0)
    for n, measured in zip((4096, 8192, 16384, 32768), GB200_POINTS[(version, pass_)]):
        rate = catalog / law.time_scale(n * n / 2, n, backward=backward)
        assert rate == pytest.approx(measured, rel=TOLERANCE[version]), (version, pass_, n)


def test_newer_cudnn_is_faster_at_8k_causal_as_published():
    """8k causal forward: 9.13 on B200 1,171 TFLOP/s, 9.18 on GB200 1,563 (/ 1.044 for B200's clock):
    the 9.18 law's time is 1,171 / (1,563 / 1.044) = 0.78 of the 9.13 law's (within 4 %)."""
    n = 8192
    ratio = CUDNN_918_B200.time_scale(n * n / 2, n) / CUDNN_B200.time_scale(n * n / 2, n)
    assert ratio == pytest.approx(1171.278 / (1563 / (1822 / 1745)), rel=0.04)


@pytest.mark.parametrize("version,law", [((9, 0), CUDNN_B200), ((9, 11), CUDNN_B200), ((9, 13), CUDNN_B200),
                                         ((9, 17), CUDNN_B200), ((9, 18), CUDNN_918_B200), ((9, 21), CUDNN_918_B200),
                                         ((9, 22), CUDNN_922_B200), ((9, 99), CUDNN_922_B200),
                                         (None, CUDNN_922_B200)])
def test_newest_published_curve_at_or_below_the_version(version, law):
    assert cudnn_law(version) is law


@pytest.mark.parametrize("software,expected", [
    ("Megatron-Bridge (NeMo 25.11 container, Megatron-Core, Transformer Engine)", "9.13"),
    ("Megatron-Bridge (NeMo 26.02 container, Megatron-Core)", "9.18"),
    ("Megatron-Bridge (NeMo 26.04.01 container, Megatron-Core)", "9.20"),
    ("Megatron-Bridge (NeMo 26.06 container, Megatron-Core, Transformer Engine)", "9.21"),
    ("NeMo 25.04 container (NeMo 2.0 recipes, Megatron-Core, Transformer Engine)", "9.11"),
    ("NeMo 26.08 container", "9.21"),
    ("NeMo AutoModel 26.02 (PyTorch FSDP2, Transformer Engine, DeepEP)", None),
    ("torchtitan 2025-06", None),
])
def test_container_cudnn_from_the_software_text(software, expected):
    got = nemo_cudnn(software)
    assert (got[0] if got else None) == expected


def test_validation_rows_state_the_container_cudnn_on_blackwell_only():
    from parasim.specs.validation_case import load_cases
    from parasim.validation.training import plan_for_case
    from tests.conftest import REPO

    cases = {c.id: c for c in load_cases(REPO / "validation" / "mbridge-dense-training.yaml")}
    plan, why = plan_for_case(cases["mbridge-2602-gb200-llama3-70b-64gpu-mxfp8"])
    assert plan.cudnn_version == "9.18" and any("9.18" in w for w in why)
    plan, _ = plan_for_case(cases["mbridge-2602-h100-llama3-70b-64gpu-fp8"])
    assert plan.cudnn_version is None


@pytest.mark.parametrize("bad", ["8.9", "9", "10.1", "9.100", "", " ", "nan", "inf", "-9.18", "9.18.x", "v9.18",
                                 "9.18.1.2.3.4", "9" * 400])
def test_hostile_versions_are_refused_by_name(bad):
    with pytest.raises(InputError) as e:
        TrainingPlan(cudnn_version=bad, seq_len=8192).check(_model())
    assert e.value.field == "cudnn-version"


@pytest.mark.parametrize("bad", [9.18, 9, True, ["9.18"]])
def test_non_text_versions_are_refused(bad):
    with pytest.raises(InputError) as e:
        TrainingPlan.from_mapping({"cudnn_version": bad})
    assert "cudnn" in e.value.field


@settings(max_examples=150, deadline=None)
@given(hst.text(max_size=24))
def test_any_text_parses_to_cudnn_9_or_is_refused(text):
    try:
        major, minor = parse_cudnn_version(text)
    except InputError as e:
        assert e.field == "cudnn-version"
    else:
        assert major == 9 and 0 <= minor <= 99


def test_refused_where_the_cudnn_curve_cannot_apply():
    for kw in ({"kernels": "eager"}, {"attention": "flash2"}, {"attention": "unfused"}):
        with pytest.raises(InputError) as e:
            TrainingPlan(cudnn_version="9.18", seq_len=8192, **kw).check(_model())
        assert e.value.field == "cudnn-version"


def _model():
    from parasim.specs.catalog import get_model

    return get_model("llama-3-8b")


def test_cli_states_the_version_and_refuses_it_off_blackwell():
    base = ["train", "--model", "llama-3-8b", "--gpus", "8", "--seq-len", "8192", "--json"]
    t = {v: json.loads(run_cli(*base, "--gpu", "b200", "--cudnn-version", v).stdout)["step_time_s"]
         for v in ("9.13", "9.18")}
    assert t["9.18"] < t["9.13"]
    for args in (("--gpu", "h100-sxm", "--cudnn-version", "9.18"), ("--gpu", "b200", "--cudnn-version", "8.9"),
                 ("--gpu", "b200", "--kernels", "eager", "--cudnn-version", "9.18")):
        r = run_cli(*base, *args)
        assert r.returncode == 2 and "cudnn-version" in r.stderr and len(r.stderr.strip().splitlines()) == 1, args


def test_cli_names_the_default_cudnn_curve_and_keeps_it_off_other_stacks():
    """No --cudnn-version on a Blackwell TE run: the newest published curve prices it, and the run says so
    (plan field and "defaults used"), giving the same step as stating that version; a Hopper run or a
    non-TE stack gets no cuDNN default."""
    base = ["train", "--model", "llama-3-8b", "--gpus", "8", "--seq-len", "8192", "--json"]
    plain = json.loads(run_cli(*base, "--gpu", "b200").stdout)
    newest = ".".join(str(x) for x in max(v for v, _ in CUDNN_LAWS))
    assert plain["cudnn_version"] == plain["defaults"]["cudnn_version"] == newest
    stated = json.loads(run_cli(*base, "--gpu", "b200", "--cudnn-version", newest).stdout)
    assert stated["step_time_s"] == plain["step_time_s"] and "cudnn_version" not in stated["defaults"]
    for args in (("--gpu", "h100-sxm"), ("--gpu", "b200", "--kernels", "eager")):
        out = json.loads(run_cli(*base, *args).stdout)
        assert out["cudnn_version"] is None and "cudnn_version" not in out["defaults"], args


def test_plan_train_names_the_cudnn_curve_it_priced_blackwell_at():
    """plan train on Blackwell with no --cudnn-version ranks plans priced at the newest published curve and
    says so (JSON `defaults` and a line in the table); the same search with that release stated ranks the
    same best plan at the same step time, and on Hopper no cuDNN release is assumed."""
    base = ["plan", "train", "--model", "llama-3-8b", "--gpus", "8", "--seq-len", "4096", "--global-batch", "64",
            "--tp", "1", "--pp", "1", "--micro-batch", "4"]
    newest = ".".join(str(x) for x in max(v for v, _ in CUDNN_LAWS))
    plain = json.loads(run_cli(*base, "--gpu", "b200", "--json").stdout)
    assert plain["defaults"]["cudnn_version"] == newest
    stated = json.loads(run_cli(*base, "--gpu", "b200", "--cudnn-version", newest, "--json").stdout)
    assert "cudnn_version" not in stated["defaults"]
    assert stated["best"]["metrics"]["step_time_s"] == plain["best"]["metrics"]["step_time_s"]
    assert f"cuDNN {newest}" in run_cli(*base, "--gpu", "b200").stdout
    hopper = json.loads(run_cli(*base, "--gpu", "h100-sxm", "--json").stdout)
    assert "cudnn_version" not in hopper["defaults"]
