"""Several models sharing a cluster (`serve --models FILE`, `plan serve --models FILE`): partitions
that do not disturb each other, totals that are the sums of the parts, SLO-aware placement needing
fewer GPUs than an even split (Nexus's direction, bound derived from single-model capacities), and
hostile files refused naming the field."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from parasim.errors import InputError
from parasim.search.capacity import capacity
from parasim.search.plan_multimodel import emit_models, plan_models
from parasim.search.plan_serve import ServeSearch
from parasim.serving import ServingPlan, simulate
from parasim.serving.metrics import SLO
from parasim.serving.multimodel import SUMMED, model_workload, place, read_models, simulate_models
from parasim.serving.workload import generate
from parasim.specs.catalog import cluster_for, get_accelerator, get_model
from tests.conftest import REPO, run_cli

EXAMPLE = REPO / "examples" / "multimodel" / "two-models.yaml"
H100 = get_accelerator("h100-sxm")
SLO_KEYS = {"slo_ttft": 0.5, "slo_tpot": 0.03}


def _entry(**kw):
    return {"model": "llama-3-8b", "rate": 5, "requests": 40, "prompt_tokens": 500, "output_tokens": 50, **SLO_KEYS, **kw}


def _file(tmp_path, doc, name="models.yaml") -> str:
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return str(p)


# --- partitions and totals ----------------------------------------------------------------------------
def test_a_model_in_the_mix_runs_as_it_would_alone(tmp_path):
    """A partition owns its GPUs: each model's summary equals `simulate` of that model alone on its
    GPUs, with its requests drawn as the file documents (seed + index); every token is served."""
    path = _file(tmp_path, {"models": [_entry(name="a", rate=8, gpus=2), _entry(name="b", model="mistral-7b", rate=3, tp=1)]})
    out = simulate_models(read_models(path), H100, 4, seed=7)
    for i, (name, m) in enumerate(out["summary"]["models"].items()):
        spec = get_model(m["model"])
        wl = generate(requests=40, rate=[8, 3][i], seed=7 + i, prompt_tokens=500, output_tokens=50)
        alone = simulate(spec, cluster_for(H100, m["gpus"]), ServingPlan(tp=1, replicas=m["gpus"]), wl,
                         slo=SLO(ttft_s=0.5, tpot_s=0.03), seed=7 + i)
        assert {k: v for k, v in m.items() if k in alone.summary} == alone.summary
        assert m["output_tokens"] == int(wl.output_tokens.sum()) and m["input_tokens"] == int(wl.prompt_tokens.sum())
    assert [m["gpus"] for m in out["summary"]["models"].values()] == [2, 2]  # b: the 2 GPUs a leaves


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rates=hst.lists(hst.floats(0.5, 20.0), min_size=1, max_size=3),
       requests=hst.integers(5, 30), spare=hst.integers(0, 3), seed=hst.integers(0, 1000))
def test_totals_are_the_sums_of_the_models(rates, requests, spare, seed, tmp_path_factory):
    doc = {"models": [_entry(name=f"m{i}", rate=r, requests=requests, gpus=1) for i, r in enumerate(rates)]}
    path = _file(tmp_path_factory.mktemp("mm"), doc)
    out = simulate_models(read_models(path), H100, len(rates) + spare, seed=seed)
    s, ms = out["summary"], list(out["summary"]["models"].values())
    for k in SUMMED:
        assert s[k] == pytest.approx(sum(m[k] for m in ms), rel=1e-12)
    assert s["idle_gpus"] == spare and s["requests"] == requests * len(rates)
    assert s["completed"] + s["dropped"] == s["requests"]
    assert s["makespan_s"] == max(m["makespan_s"] for m in ms)
    assert s["models_meeting_slo"] == sum(bool(m["slo_met"]) for m in ms)
    # deterministic: the same file and seed give the same JSON, wall time aside
    again = simulate_models(read_models(path), H100, len(rates) + spare, seed=seed)
    assert json.dumps({**again, "sim_wall_s": 0}) == json.dumps({**out, "sim_wall_s": 0})


def test_even_split_of_unplaced_models_and_the_idle_remainder(tmp_path):
    doc = {"models": [_entry(name="a", gpus=3), _entry(name="b", tp=2), _entry(name="c", tp=2)]}
    got = place(read_models(_file(tmp_path, doc)), 8)
    # 5 GPUs left for b and c: 2 each is one tp=2 replica; the fifth GPU stays idle
    assert [(p["gpus"], p["replicas"]) for p in got] == [(3, 3), (2, 1), (2, 1)]
    for bad, field in (([_entry(gpus=3, tp=2)], "models[0].gpus"),  # 3 GPUs is no whole number of tp=2 replicas
                       ([_entry(name="a", gpus=6), _entry(name="b", tp=4)], "models[1].gpus")):  # 2 left, tp=4
        with pytest.raises(InputError) as e:
            place(read_models(_file(tmp_path, {"models": bad})), 8)
        assert e.value.field == f"models.yaml:{field}", e.value


# --- the published direction: SLO-aware placement vs an even split ---------------------------------------
def test_slo_aware_placement_needs_fewer_gpus_than_an_even_split(tmp_path):
    """Nexus's direction (SOSP'19): sizing each model to its own load under its SLO needs fewer GPUs
    than giving every model the same share. The hand bound: with C1 the SLO-meeting capacity of one
    GPU (tp=1 replica, search/capacity.py, an independent search), a model at rate r needs about
    ceil(r / C1) replicas; rates at 2.5 x C1 and 0.4 x C1 (far from a boundary) need 3 and 1, so the
    placement needs 4 GPUs where an even split needs 2 x 3 = 6."""
    n, lengths = 300, (1000, 200)
    spec = get_model("llama-3-8b")
    slo = SLO(ttft_s=0.5, tpot_s=0.03)
    c1 = capacity(spec, cluster_for(H100, 1), ServingPlan(tp=1, replicas=1, scheduler="sarathi", token_budget=2048,
                                                          max_batch=256),
                  slo=slo, requests=n, lengths=(np.full(n, lengths[0]), np.full(n, lengths[1]))).requests_per_s
    rates = {"busy": 2.5 * c1, "quiet": 0.4 * c1}
    doc = {"models": [_entry(name=k, rate=r, requests=n, prompt_tokens=lengths[0], output_tokens=lengths[1])
                      for k, r in rates.items()]}
    base = ServeSearch(model="", gpu=("h100-sxm",), max_gpus=8, tp=(1,), pp=(1,), schedulers=("sarathi",),
                       token_budgets=(2048,), max_batches=(256,), workers=1)
    out = plan_models(read_models(_file(tmp_path, doc)), base)
    assert out["feasible"], out["why"]
    need = {k: m["gpus"] for k, m in out["models"].items()}
    assert need == {k: math.ceil(r / c1) for k, r in rates.items()} == {"busy": 3, "quiet": 1}
    assert out["totals"]["gpus"] == sum(need.values()) == 4 and out["totals"]["spare_gpus"] == 4
    assert out["even_split"] == {"gpus_per_model": 4, "models_short": [], "gpus_needed": 6}
    assert all(m["slo_met"] and m["completed"] == n for m in out["models"].values())
    # the placement as a models file: `serve --models` runs it to the same per-model summaries
    placed = _file(tmp_path, emit_models(read_models(_file(tmp_path, doc)), out), "placed.yaml")
    run = simulate_models(read_models(placed), H100, 4)
    assert run["summary"]["slo_met_all"] and run["summary"]["idle_gpus"] == 0
    for name, m in run["summary"]["models"].items():
        assert {k: v for k, v in m.items() if k in SUMMED or k.startswith("slo_")} == \
            {k: v for k, v in out["models"][name].items() if k in SUMMED or k.startswith("slo_")}


def test_plan_that_no_budget_fits_exits_1_naming_the_model(tmp_path):
    doc = {"models": [_entry(name="ok"), _entry(name="greedy", rate=500, requests=200)]}
    r = run_cli("plan", "serve", "--models", _file(tmp_path, doc), "--gpu", "h100-sxm", "--max-gpus", "2",
                "--tp", "1", "--pp", "1", "--schedulers", "sarathi", "--json")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["feasible"] is False and out["models"]["ok"]["feasible"] is True
    assert len(out["why"]) == 1 and out["why"][0].startswith("greedy (llama-3-8b) cannot meet its SLO")


# --- CLI ----------------------------------------------------------------------------------------------
def test_serve_models_cli_and_config_key_agree(tmp_path):
    flags = run_cli("serve", "--models", str(EXAMPLE), "--gpu", "h100-sxm", "--gpus", "4", "--json")
    cfg = _file(tmp_path, {"models": str(EXAMPLE), "gpu": "h100-sxm", "gpus": 4}, "c.yaml")
    config = run_cli("serve", "-c", cfg, "--json")
    assert flags.returncode == config.returncode == 0, flags.stderr + config.stderr
    a, b = json.loads(flags.stdout), json.loads(config.stdout)
    assert a["summary"] == b["summary"] and set(a["summary"]["models"]) == {"chat", "code"}
    assert all(m["slo_attainment"] is not None for m in a["summary"]["models"].values())
    assert all(a["expected_error"][n]["by_metric"]["throughput"]["runs"] > 0 for n in ("chat", "code"))


@pytest.mark.parametrize("cmd,extra,field", [
    ("serve", ["--gpus", "4", "--rate", "3"], "rate"),
    ("serve", ["--gpus", "4", "--slo-ttft", "1"], "slo_ttft"),
    ("serve", [], "gpus"),
    ("plan", ["--max-gpus", "4", "--slo-ttft", "1"], "slo_ttft"),
    ("plan", ["--max-gpus", "4", "--model", "llama-3-8b"], "model"),
])
def test_options_the_file_decides_are_refused(cmd, extra, field):
    args = ["serve"] if cmd == "serve" else ["plan", "serve"]
    r = run_cli(*args, "--models", str(EXAMPLE), "--gpu", "h100-sxm", *extra)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"parasim: error: {field}"), r.stderr


# --- hostile files --------------------------------------------------------------------------------------
BOMB = "\n".join(['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
                 + [f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 10) + "]" for i in range(1, 9)]
                 + ["models: []"]) + "\n"


@pytest.mark.parametrize("doc,field", [
    ({"models": [_entry(model="no-such-model")]}, "models.yaml:models[0].model"),
    ({"models": [_entry(name="x"), _entry(name="x")]}, "models.yaml:models"),
    ({"models": [_entry(rate=-1)]}, "models.yaml:models[0].rate"),
    ({"models": [{k: v for k, v in _entry().items() if not k.startswith("slo_")}]}, "models.yaml:models[0].slo_ttft"),
    ({"models": [_entry(slo_tpot=50)]}, "models.yaml:models[0].slo_tpot"),  # milliseconds, spotted
    ({"models": [_entry(tensor_parallel=2)]}, "models.yaml:models[0].tensor_parallel"),
    ({"models": [_entry(scheduler="disagg")]}, "models.yaml:models[0].scheduler"),
    ({"models": [_entry(requests=10**12)]}, "models.yaml:models[0].requests"),
    ({"models": [_entry(trace="t.csv", rate=3)]}, "models.yaml:models[0].rate"),
    ({"models": []}, "models.yaml:models"),
    ({"models": [3]}, "models.yaml:models[0]"),
    ({"models": [_entry()], "extra": 1}, "models.yaml:extra"),
    ([1, 2], "models.yaml"),
])
def test_bad_files_name_the_field(tmp_path, doc, field):
    with pytest.raises(InputError) as e:
        read_models(_file(tmp_path, doc))
    assert e.value.field == field, e.value


@pytest.mark.parametrize("content,message", [
    (BOMB, "models.yaml: YAML expands to more than"),
    (b"\x00\xff\xfe binary", "models"),
    (yaml.safe_dump({"models": [_entry(name="a", gpus=4), _entry(name="b", gpus=2)]}), "models.yaml:models"),
])
def test_hostile_files_exit_2_in_one_line(tmp_path, content, message):
    p = tmp_path / "models.yaml"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    r = run_cli("serve", "--models", str(p), "--gpu", "h100-sxm", "--gpus", "4")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"parasim: error: {message}"), r.stderr


def test_a_trace_per_model_reads_its_own_requests(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps({"arrival_s": i * 0.5, "prompt_tokens": 100 + i, "output_tokens": 10}) + "\n"
                             for i in range(12)))
    doc = {"models": [{"model": "llama-3-8b", "trace": "t.jsonl", "requests": 8, "slo_e2e": 10}]}
    entries = read_models(_file(tmp_path, doc))
    wl = model_workload(entries[0], 0, 8192)
    assert len(wl) == 8 and list(wl.prompt_tokens) == list(range(100, 108))


_VALUES = hst.one_of(hst.none(), hst.booleans(), hst.integers(-10, 10**13), hst.floats(allow_nan=True),
                     hst.text(max_size=8), hst.lists(hst.integers(), max_size=2), hst.dictionaries(hst.text(max_size=3), hst.integers(), max_size=2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(key=hst.sampled_from(sorted(_entry(gpus=1, tp=1, name="n", length_dist="fixed", attainment=0.9)) + ["trace", "pp",
                                                                                                        "replicas", "scheduler"]),
       value=_VALUES)
def test_any_value_of_any_key_is_read_or_refused_naming_it(tmp_path, key, value):
    """Hostile values in any key: the file is read, or refused with an InputError naming that key."""
    entry = _entry(**{key: value})
    try:
        read_models(_file(tmp_path, {"models": [entry]}))
    except InputError as e:
        assert e.field.startswith("models.yaml:models[0]"), e
        assert e.field.endswith((f".{key}", ".slo_ttft", ".rate", ".model")), (key, e)  # the key, or what it displaced


def test_a_checkpoint_folder_is_found_beside_the_models_file(tmp_path):
    import shutil

    shutil.copytree(REPO / "examples" / "models" / "opt-13b", tmp_path / "opt-13b")
    entries = read_models(_file(tmp_path, {"models": [_entry(model="opt-13b")]}))
    assert entries[0].name == "opt-13b" and entries[0].model == str(tmp_path / "opt-13b")


def test_plan_cli_prints_the_placement_and_emits_a_file_serve_runs(tmp_path):
    doc = {"models": [_entry(name="busy", rate=30, requests=150), _entry(name="quiet", rate=2, requests=60)]}
    placed, result = tmp_path / "placed.yaml", tmp_path / "plan.json"
    r = run_cli("plan", "serve", "--models", _file(tmp_path, doc), "--gpu", "h100-sxm", "--max-gpus", "6", "--tp", "1",
                "--pp", "1", "--schedulers", "sarathi", "--emit-yaml", str(placed), "--json-out", str(result))
    assert r.returncode == 0, r.stderr
    assert "placement on h100-sxm" in r.stdout and "even split of 6 GPUs" in r.stdout
    plan = json.loads(result.read_text())
    total = plan["totals"]["gpus"]
    assert total == sum(m["gpus"] for m in plan["models"].values()) <= 6
    s = run_cli("serve", "--models", str(placed), "--gpu", "h100-sxm", "--gpus", str(total), "--json")
    assert s.returncode == 0, s.stderr
    served = json.loads(s.stdout)["summary"]
    assert served["slo_met_all"] and served["gpus"] == total
    assert {n: m["slo_attainment"] for n, m in served["models"].items()} == \
        {n: m["slo_attainment"] for n, m in plan["models"].items()}
