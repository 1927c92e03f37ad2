"""Mixed GPU clusters (training/hetero.py): placement, the balanced split, the sum-of-parts bound,
one GPU type given as groups equals the plain run, and bad specs exit 2 naming the field."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_cli
from parasim.errors import InputError
from parasim.specs.catalog import cluster_for, get_accelerator, get_model
from parasim.specs.mixed import groups_from_text, mixed_cluster
from parasim.training import TrainingPlan, simulate
from parasim.training.hetero import simulate_mixed, water_fill

L70 = get_model("llama-3-70b")
L8 = get_model("llama-3-8b")
PLAN70 = TrainingPlan(tp=8, pp=4, dp=4, global_batch=256, seq_len=8192, sequence_parallel=True)
MIX = "h100-sxm:64,a100-sxm-80gb:64"


def mixed(text: str):
    return mixed_cluster(groups_from_text(text), field="gpu")


def plain(gpu: str, gpus: int):
    return cluster_for(get_accelerator(gpu), gpus)


# --- the split ----------------------------------------------------------------------------------------
@given(per_layer=st.lists(st.floats(0.1, 10.0), min_size=1, max_size=8), extra=st.integers(0, 100),
       least=st.integers(1, 3), data=st.data())
@settings(max_examples=200, deadline=None)
def test_water_fill_conserves_layers_and_no_single_move_shortens_the_slowest_stage(per_layer, extra, least, data):
    fixed = data.draw(st.lists(st.floats(0.0, 20.0), min_size=len(per_layer), max_size=len(per_layer)))
    layers = least * len(per_layer) + extra
    n = water_fill(layers, per_layer, fixed, least)
    assert sum(n) == layers and min(n) >= least
    end = [f + k * t for f, k, t in zip(fixed, n, per_layer)]
    worst = max(end)
    for a in range(len(n)):  # moving one layer off any rank onto any other never helps the max
        for b in range(len(n)):
            if a != b and n[a] > least:
                moved = list(end)
                moved[a] -= per_layer[a]
                moved[b] += per_layer[b]
                assert max(moved) >= worst - 1e-9


def test_balanced_split_beats_the_even_split_and_gives_the_faster_gpu_more_layers():
    mx = mixed(MIX)
    even = simulate_mixed(L70, mx, PLAN70, split="even")
    bal = simulate_mixed(L70, mx, PLAN70, split="balanced")
    assert bal.step_time_s < 0.8 * even.step_time_s
    h100, a100 = (g["layers"] for g in bal.hetero["groups"])
    assert sum(h100) + sum(a100) == L70.layers and min(h100) > max(a100)
    assert [g["layers"] for g in even.hetero["groups"]] == [[20, 20], [20, 20]]
    # the even split is the slowest group's pace: its step is near the A100 cluster's own
    a100_alone = simulate(L70, plain("a100-sxm-80gb", 128), PLAN70)
    assert even.step_time_s == pytest.approx(a100_alone.step_time_s, rel=0.1)


def test_balanced_micro_batches_beat_equal_ones_with_replicas_per_group():
    mx = mixed(MIX)
    even = simulate_mixed(L70, mx, PLAN70, placement="replicas", split="even")
    bal = simulate_mixed(L70, mx, PLAN70, placement="replicas", split="balanced")
    assert bal.step_time_s < 0.8 * even.step_time_s
    h, a = bal.hetero["groups"]
    assert h["micro_batches"] + a["micro_batches"] == PLAN70.global_batch // PLAN70.micro_batch
    assert h["micro_batches_per_replica"] > a["micro_batches_per_replica"]
    # the step is the group that finishes last
    assert bal.step_time_s == max(g["step_time_s"] for g in bal.hetero["groups"])


def test_an_explicit_layer_list_is_run_as_given():
    r = simulate_mixed(L70, mixed(MIX), PLAN70, split="26,26,14,14")
    assert [g["layers"] for g in r.hetero["groups"]] == [[26, 26], [14, 14]]


# --- one GPU type given as groups is the plain run -------------------------------------------------------
@pytest.mark.parametrize("placement", ["stages", "replicas"])
def test_one_gpu_type_in_groups_equals_the_plain_run(placement):
    ref = simulate(L70, plain("h100-sxm", 128), PLAN70)
    got = simulate_mixed(L70, mixed("h100-sxm:64,h100-sxm:64"), PLAN70, placement=placement)
    assert got.hetero["split"] == "even"
    assert got.step_time_s == ref.step_time_s
    assert got.breakdown == ref.breakdown and got.memory == ref.memory
    assert got.mfu == ref.mfu


def test_one_type_mixed_spec_on_the_cli_equals_the_plain_run():
    args = ["train", "--model", "llama-3-8b", "--tp", "2", "--pp", "2", "--global-batch", "32", "--seq-len", "4096",
            "--json"]
    a = json.loads(run_cli(*args, "--gpu", "h100-sxm:16").stdout)
    b = json.loads(run_cli(*args, "--gpu", "h100-sxm", "--gpus", "16").stdout)
    assert a["step_time_s"] == b["step_time_s"] and a["breakdown"] == b["breakdown"]
    assert a["gpu"] == "h100-sxm:16" and a["hetero"]["groups"][0]["gpus"] == 16


# --- mixing never beats the sum of the parts ------------------------------------------------------------
TYPES = ("h100-sxm", "a100-sxm-80gb", "h200-sxm", "l40s")


@given(types=st.lists(st.sampled_from(TYPES), min_size=2, max_size=2, unique=True), tp=st.sampled_from([1, 2, 4]),
       stages=st.tuples(st.integers(1, 3), st.integers(1, 3)), dp_per_pp=st.integers(1, 2),
       m=st.integers(1, 12), zero=st.sampled_from([0, 1, 3]), placement=st.sampled_from(["stages", "replicas"]),
       split=st.sampled_from(["balanced", "even"]))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mixing_never_reports_more_throughput_than_the_groups_alone_at_full_use(types, tp, stages, dp_per_pp, m,
                                                                               zero, placement, split):
    """Each group alone, every GPU busy with layers all the time, passes gpus/(tp*cp) micro-batch
    layers per (forward + backward time of one layer on that GPU, as the group's own run costs it);
    a micro-batch needs every layer once. The mixed job cannot pass more than the groups together."""
    pp = sum(stages)
    dp = pp * dp_per_pp  # every group then holds whole stages and whole replicas
    counts = [tp * dp * s for s in stages]
    plan = TrainingPlan(tp=tp, pp=pp, dp=dp, global_batch=dp * m, seq_len=2048, zero=zero)
    got = simulate_mixed(L8, mixed(",".join(f"{t}:{n}" for t, n in zip(types, counts))), plan,
                         placement=placement, split=split)
    parts = 0.0
    for t, n in zip(types, counts):
        alone = simulate(L8, plain(t, n), plan.with_(dp=n // (tp * pp), global_batch=n // (tp * pp) * m))
        layer_s = alone.details["layer_fwd_s"] + alone.details["layer_bwd_s"]
        parts += n / tp * plan.seq_len / (L8.layers * layer_s)
    assert got.tokens_per_s <= parts


@pytest.mark.parametrize("placement", ["stages", "replicas"])
def test_a_realistic_mixed_step_stays_below_the_two_clusters_run_apart(placement):
    """70B on 64 H100 + 64 A100, 64 micro-batches per pipeline: not above the sum of each half running
    alone with its half of the batch (where per-step costs are small, nothing is gained by mixing).
    With layer times t_H and t_A, a split balanced to the layer gives (1/t_H + 1/t_A) per pipeline
    layer-slot, exactly what the halves give apart; the split moves whole layers and each rank's
    gradient/optimizer tail follows its own layer count, so the mixed run can land slightly above
    the identity: bounded here by one layer's share of the model (1/80)."""
    got = simulate_mixed(L70, mixed(MIX), PLAN70, placement=placement)
    half = PLAN70.with_(dp=2, global_batch=128)
    apart = sum(simulate(L70, plain(g, 64), half).tokens_per_s for g in ("h100-sxm", "a100-sxm-80gb"))
    assert got.tokens_per_s < apart * (1 + 1 / L70.layers)
    assert got.tokens_per_s > 0.9 * apart  # and the balanced split loses little to the mixing


# --- memory per group -----------------------------------------------------------------------------------
def test_memory_is_checked_against_each_groups_own_hbm():
    """A40-class 48 GB L40S stages next to 141 GB H200 ones: the L40S group overflows first."""
    plan = TrainingPlan(tp=8, pp=2, dp=2, global_batch=64, seq_len=8192, sequence_parallel=True)
    r = simulate_mixed(L70, mixed("h200-sxm:16,l40s:16"), plan, split="even")
    h200, l40s = r.hetero["groups"]
    assert h200["memory"]["capacity_gib"] > 100 > 50 > l40s["memory"]["capacity_gib"]
    assert h200["fits"] and not l40s["fits"] and not r.fits
    assert r.memory == l40s["memory"]  # the headline memory is the group nearest its limit


# --- bad specs exit 2 naming the field ------------------------------------------------------------------
TRAIN = ["train", "--model", "llama-3-70b", "--tp", "8", "--global-batch", "96", "--seq-len", "8192"]


@pytest.mark.parametrize("args,field", [
    (["--gpu", "h100-sxm:64,nonsense-gpu:64", "--pp", "4"], "gpu"),
    (["--gpu", "h100-sxm:0,a100-sxm-80gb:64", "--pp", "4"], "gpu"),
    (["--gpu", "h100-sxm:64,a100-sxm-80gb", "--pp", "4"], "gpu"),
    (["--gpu", "h100-sxm:64,,a100-sxm-80gb:64", "--pp", "4"], "gpu"),
    (["--gpu", "h100-sxm:sixty,a100-sxm-80gb:64", "--pp", "4"], "gpu"),
    (["--gpu", "h100-sxm:64,a100-sxm-80gb:32", "--gpus", "128", "--pp", "3"], "gpus"),
    (["--gpu", "h100-sxm:64,a100-sxm-80gb:32", "--pp", "2"], "pp"),
    (["--gpu", "h100-sxm:64,a100-sxm-80gb:32", "--pp", "3", "--mixed-placement", "replicas"], "pp"),
    (["--gpu", "h100-sxm:64,a100-sxm-80gb:32", "--pp", "3", "--mixed-placement", "sideways"], "mixed-placement"),
    (["--gpu", "h100-sxm:64,a100-sxm-80gb:32", "--pp", "3", "--mixed-split", "50,20"], "mixed-split"),
    (["--gpu", "h100-sxm", "--gpus", "96", "--pp", "3", "--mixed-split", "even"], "mixed-split"),
])
def test_bad_mixed_specs_exit_2_naming_the_field(args, field):
    r = run_cli(*TRAIN, *args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"parasim: error: {field}") and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_pp_that_fits_the_groups_runs():
    r = run_cli(*TRAIN, "--gpu", "h100-sxm:64,a100-sxm-80gb:32", "--pp", "3", "--json")
    out = json.loads(r.stdout)
    assert [g["stages"] for g in out["hetero"]["groups"]] == [[0, 1], [2]]


def test_node_groups_in_a_config_file_are_the_same_cluster_as_the_flag(tmp_path):
    cfg = {"model": "llama-3-70b", "tp": 8, "pp": 3, "global_batch": 96, "seq_len": 8192,
           "node_groups": [{"gpu": "h100-sxm", "gpus": 64}, {"gpu": "a100-sxm-80gb", "gpus": 32}]}
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    by_file = json.loads(run_cli("train", "-c", str(path), "--json").stdout)
    by_flag = json.loads(run_cli(*TRAIN, "--gpu", "h100-sxm:64,a100-sxm-80gb:32", "--pp", "3", "--json").stdout)
    assert by_file["step_time_s"] == by_flag["step_time_s"] and by_file["gpu"] == by_flag["gpu"]
    # a slower NIC on the A100 nodes and a smaller NVLink domain: the group reports what it was given
    cfg["node_groups"][1].update(inter_node_gbps=100, scale_up_domain=4, gpus_per_node=4)
    path.write_text(yaml.safe_dump(cfg))
    slow = json.loads(run_cli("train", "-c", str(path), "--json").stdout)
    a100 = slow["hetero"]["groups"][1]
    assert (a100["inter_node_gbps"], a100["scale_up_domain"], a100["gpus_per_node"]) == (100, 4, 4)
    assert slow["step_time_s"] > by_file["step_time_s"]


@pytest.mark.parametrize("groups,field", [
    ([{"gpu": "h100-sxm"}], "node_groups[0].gpus"),
    ([{"gpu": "h100-sxm", "gpus": 8, "nvlink": 8}], "node_groups[0].nvlink"),
    ([{"gpu": "h100-sxm", "gpus": 0}], "node_groups[0].gpus"),
    ([{"gpu": "tpu-v9", "gpus": 8}], "node_groups[0].gpu"),
    ([{"gpu": "h100-sxm", "gpus": 8, "inter_node_gbps": -5}], "node_groups[0].inter_node_gbps"),
    ("h100-sxm:8", "node_groups"),
])
def test_bad_node_groups_exit_2_naming_the_key(tmp_path, groups, field):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"model": "llama-3-8b", "node_groups": groups}))
    r = run_cli("train", "-c", str(path))
    assert r.returncode == 2 and field in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_mixed_cluster_in_python_refuses_a_plan_whose_gpus_differ():
    with pytest.raises(InputError) as e:
        simulate_mixed(L70, mixed(MIX), PLAN70.with_(dp=2, global_batch=128))
    assert e.value.field == "gpus"


# --- plan train on a mixed cluster ----------------------------------------------------------------------
PLAN = ["plan", "train", "--model", "llama-3-8b", "--global-batch", "32", "--seq-len", "2048", "--workers", "1",
        "--tp", "2", "--pp", "1,2", "--micro-batch", "2", "--zero", "1", "--recompute", "none"]


def test_plan_train_searches_the_placements_and_its_winner_runs_as_emitted(tmp_path):
    emitted = tmp_path / "best.yaml"
    r = run_cli(*PLAN, "--gpu", "h100-sxm:8,a100-sxm-80gb:8", "--json", "--emit-yaml", str(emitted))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["gpus"] == [16]
    placements = {row["mixed_placement"] for row in out["ranked"]}
    assert placements == {"stages", "replicas"}
    for row in out["ranked"]:
        assert row["metrics"]["hetero"]["placement"] == row["mixed_placement"]
        assert row["metrics"]["hetero"]["split"] == "balanced"
    base = out["baseline"]  # the heuristic layout run as if one type: whole stages, the even split
    assert (base["mixed_placement"], base["mixed_split"]) == ("stages", "even")
    layers = [sum(g["layers"]) for g in base["metrics"]["hetero"]["groups"]]
    assert max(layers) - min(layers) <= 1
    best = out["best"]
    assert best["metrics"]["tokens_per_s"] > base["metrics"]["tokens_per_s"]
    again = json.loads(run_cli("train", "-c", str(emitted), "--json").stdout)
    assert again["step_time_s"] == best["metrics"]["step_time_s"]
    assert yaml.safe_load(emitted.read_text())["mixed_placement"] == best["mixed_placement"]


@pytest.mark.parametrize("gpu,gpus,field", [
    ("h100-sxm:8,a100-sxm-80gb:8", "12", "gpus"),  # --gpus must hold the groups' sum
    ("h100-sxm", None, "gpus"),  # one type still needs its count
    ("h100-sxm:8,a100:8", None, "gpu"),
])
def test_plan_train_bad_mixed_specs_exit_2(gpu, gpus, field):
    r = run_cli(*PLAN, "--gpu", gpu, *(["--gpus", gpus] if gpus else []))
    assert r.returncode == 2 and r.stderr.startswith(f"parasim: error: {field}"), r.stderr


@pytest.mark.parametrize("placement", ["stages", "replicas"])
def test_the_timeline_of_a_mixed_step_spans_exactly_the_step(placement):
    r = simulate_mixed(L70, mixed(MIX), PLAN70, placement=placement, timeline=True)
    end = max(s[1] + s[2] for st_ in r.timeline["stages"] for s in st_["spans"])
    assert end == pytest.approx(r.step_time_s, abs=1e-8)
    if placement == "stages":  # one lane per pipeline rank, each with the layers the split gave it
        layers = [g["layers"] for g in r.hetero["groups"]]
        assert [sum(s["layers"]) for s in r.timeline["stages"]] == layers[0] + layers[1]


def test_a_gpu_flag_replaces_the_files_node_groups_and_says_so(tmp_path):
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump({"model": "llama-3-8b", "tp": 2, "global_batch": 32, "seq_len": 2048,
                                    "node_groups": [{"gpu": "h100-sxm", "gpus": 8}, {"gpu": "l40s", "gpus": 8}]}))
    out = json.loads(run_cli("train", "-c", str(path), "--gpu", "h100-sxm", "--gpus", "16", "--json").stdout)
    assert out["gpu"] == "h100-sxm" and "hetero" not in out
    assert out["overrides"]["node_groups"]["used"] == "h100-sxm"


@pytest.mark.parametrize("schedule", ["zb-v", "dualpipe"])
def test_schedules_in_another_chunk_order_are_refused_on_a_mixed_cluster(schedule):
    """ZB-V's V and DualPipe's mirrored copies place chunks where the group layer split does not
    look: exit 2 naming the schedule, never a step with the layers in the wrong places."""
    r = run_cli("train", "--model", "llama-3-70b", "--gpu", "h100-sxm:64,a100-sxm-80gb:64", "--tp", "8", "--pp", "4",
                "--global-batch", "256", "--seq-len", "8192", "--schedule", schedule)
    assert r.returncode == 2 and "schedule" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("schedule", ["zb-h1", "zb-h2"])
def test_zero_bubble_in_loop_order_on_one_type_equals_the_plain_run(schedule):
    args = ["train", "--model", "llama-3-70b", "--tp", "8", "--pp", "4", "--global-batch", "256", "--seq-len", "8192",
            "--schedule", schedule, "--json"]
    a = json.loads(run_cli(*args, "--gpu", "h100-sxm:64").stdout)
    b = json.loads(run_cli(*args, "--gpu", "h100-sxm", "--gpus", "64").stdout)
    assert a["step_time_s"] == b["step_time_s"]
