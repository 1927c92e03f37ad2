"""Error bars on every prediction (#18 item 4): the table `validate --error-table` writes agrees
with a recomputation by hand from the same run's JSON; the lookup takes the exact category, then
relaxes in its documented order, and says "unvalidated" when nothing near was measured; `train`,
`serve` and `plan` print it (through a subprocess, as a user runs them)."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import yaml

from parasim.specs.catalog import accelerators, get_accelerator, get_model
from parasim.validation.category import Category, for_serving, for_training, metric_class
from parasim.validation.expected_error import (ANY, KEYS, MIN_RUNS, RELAX_ORDER, build_table, dump_table, lookup,
                                               table_from_reports)
from parasim.validation.run import CaseReport
from tests.conftest import REPO, SHARED, run_cli

SHIPPED = REPO / "src" / "parasim" / "specs" / "data" / "expected_error.yaml"
HOPPER = Category(kind="serving", vendor="nvidia", generation="hopper", framework="vllm", moe="dense", size="<10B",
                  dtype="16-bit")


def _row(cat: Category, metric: str, runs: int, p50: float, p90: float, relaxed: tuple[str, ...] = ()) -> dict:
    values = {**cat.to_dict(), "metric": metric}
    return {**{k: ANY if k in relaxed else values[k] for k in KEYS}, "runs": runs, "p50_abs_pct": p50,
            "p90_abs_pct": p90}


def _table(*rows: dict) -> dict:
    return {tuple(str(r[k]) for k in KEYS): r for r in rows}


# --- the lookup on a synthetic table -----------------------------------------------------------------
def test_exact_category_is_validated():
    t = _table(_row(HOPPER, "throughput", 12, 4.0, 9.5), _row(HOPPER, "throughput", 40, 7.0, 20.0, RELAX_ORDER[:1]))
    e = lookup(HOPPER, "throughput", t)
    assert (e["status"], e["runs"], e["p50_abs_pct"], e["p90_abs_pct"], e["relaxed"]) == ("validated", 12, 4.0, 9.5, [])
    assert e["category"] == HOPPER.to_dict()


def test_too_few_runs_relax_in_order():
    """An exact category with fewer than MIN_RUNS runs is passed over for the first relaxed one
    that has them; a later relaxation is not taken while an earlier one matches."""
    t = _table(_row(HOPPER, "throughput", MIN_RUNS - 1, 1.0, 2.0),
               _row(HOPPER, "throughput", MIN_RUNS, 6.0, 11.0, RELAX_ORDER[:2]),
               _row(HOPPER, "throughput", 500, 9.0, 30.0, RELAX_ORDER))
    e = lookup(HOPPER, "throughput", t)
    assert (e["status"], e["relaxed"], e["runs"], e["p50_abs_pct"]) == ("nearest", list(RELAX_ORDER[:2]), MIN_RUNS, 6.0)
    assert all(k in e["note"] for k in RELAX_ORDER[:2])


def test_unknown_framework_starts_past_it():
    """`serve` without --engine: the framework is unknown, so only rows that relax it can match."""
    cat = Category(**{**HOPPER.to_dict(), "framework": None})
    i = RELAX_ORDER.index("framework") + 1
    t = _table(_row(HOPPER, "ttft", 50, 1.0, 2.0),  # vllm's exact row: not this prediction's
               _row(HOPPER, "ttft", 20, 12.0, 35.0, RELAX_ORDER[:i]))
    e = lookup(cat, "ttft", t)
    assert (e["status"], e["relaxed"], e["runs"]) == ("nearest", list(RELAX_ORDER[:i]), 20)
    assert "framework not known" in e["note"]


def test_nothing_near_is_unvalidated():
    """Another vendor, another kind or another metric class is never borrowed."""
    t = _table(_row(HOPPER, "throughput", 500, 9.0, 30.0, RELAX_ORDER))
    tpu = Category(**{**HOPPER.to_dict(), "vendor": "google", "generation": "tpu-v5"})
    training = Category(**{**HOPPER.to_dict(), "kind": "training"})
    for cat, metric in ((tpu, "throughput"), (training, "throughput"), (HOPPER, "ttft")):
        e = lookup(cat, metric, t)
        assert (e["status"], e["runs"], e["p50_abs_pct"], e["p90_abs_pct"]) == ("unvalidated", 0, None, None)
        assert e["note"].startswith("outside everything validated")


def test_a_profile_error_replaces_the_table():
    t = _table(_row(HOPPER, "throughput", 12, 4.0, 9.5))
    e = lookup(HOPPER, "throughput", t, profile_error={"p50_abs_pct": 2.5, "p90_abs_pct": 4.0, "runs": 6})
    assert (e["status"], e["p50_abs_pct"], e["p90_abs_pct"], e["runs"]) == ("profile", 2.5, 4.0, 6)


# --- categories ---------------------------------------------------------------------------------------
def test_every_catalog_part_has_a_generation_and_parts_of_one_share_a_vendor():
    by_gen: dict[str, set[str]] = {}
    for acc in accelerators().values():
        assert acc.generation, acc.id
        by_gen.setdefault(acc.generation, set()).add(acc.vendor)
    assert all(len(v) == 1 for v in by_gen.values()), by_gen


def test_categories_of_predictions():
    h100, llama8, mixtral = get_accelerator("h100-sxm"), get_model("llama-3-8b"), get_model("mixtral-8x7b")
    t = for_training(llama8, h100, zero=3, precision="fp16")
    assert (t.framework, t.size, t.moe, t.dtype, t.generation) == ("fsdp", "<10B", "dense", "16-bit", "hopper")
    assert for_training(llama8, h100, zero=1, precision="fp8").framework == "megatron"
    s = for_serving(mixtral, get_accelerator("b200"), weights="fp4", software="vllm 0.10.1")
    assert (s.framework, s.size, s.moe, s.dtype, s.generation) == ("vllm", "10-100B", "moe", "fp4", "blackwell")
    assert for_serving(llama8, h100, weights="bf16").framework is None


@pytest.mark.parametrize(("kind", "key", "cls"), [
    ("serving", "ttft_p99_s", "ttft"), ("serving", "itl_mean_s", "tpot"), ("serving", "tpot_median_s", "tpot"),
    ("serving", "e2e_mean_s", "e2e"), ("serving", "output_tokens_per_s", "throughput"),
    ("serving", "requests_per_s_per_gpu", "throughput"), ("training", "step_time_s", "throughput"),
    ("training", "mfu", "throughput"), ("training", "peak_memory_gb_per_gpu", "memory")])
def test_metric_classes(kind, key, cls):
    assert metric_class(kind, key) == cls


# --- the generated table against a recomputation by hand ------------------------------------------------
@pytest.fixture(scope="module")
def training_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("errtable")
    cases = str(SHARED / "validation" / "dev.yaml")
    r = run_cli("validate", cases, "--kind", "training", "--json-out", str(d / "v.json"),
                "--error-table", str(d / "t.yaml"))
    assert r.returncode == 0, r.stderr
    return cases, json.loads((d / "v.json").read_text()), (d / "t.yaml").read_text()


def _size_from_id(case_id: str) -> str:
    """Total parameters as the case id spells them (megatron2021-t1-18b, nemo2407-llama2-70b-64, ...)."""
    m = re.search(r"-(\d+(?:\.\d+)?)([bt])(?:-|$)", case_id)
    billions = float(m.group(1)) * (1000 if m.group(2) == "t" else 1)
    return "<10B" if billions < 10 else "10-100B" if billions < 100 else ">100B"


def test_table_agrees_with_the_json_recomputed_by_hand(training_run):
    _, data, text = training_run
    rows = yaml.safe_load(text)["rows"]
    by_hand: dict[tuple, list[float]] = {}
    for c in data["cases"]:
        if not c["errors"]:
            continue
        # dev.yaml: Megatron-LM 2021 on A100 in fp16; NeMo on H100 in fp8; all dense
        gen, dtype = ("ampere", "16-bit") if c["id"].startswith("megatron2021") else ("hopper", "fp8")
        by_hand.setdefault((gen, _size_from_id(c["id"]), dtype), []).extend(abs(e) for e in c["errors"].values())
    exact = {(r["generation"], r["size"], r["dtype"]): r for r in rows if ANY not in (r["size"], r["dtype"])}
    assert set(exact) == set(by_hand)
    for key, errs in by_hand.items():
        r = exact[key]
        assert (r["framework"], r["moe"], r["kind"], r["metric"]) == ("megatron", "dense", "training", "throughput")
        assert r["p50_abs_pct"] == round(100 * float(np.median(errs)), 1)
        assert r["p90_abs_pct"] == round(100 * float(np.percentile(errs, 90)), 1)
        assert r["errors"] == len(errs)
    # the vendor-wide row is the whole file: the summary docs/VALIDATION.md prints
    (top,) = [r for r in rows if r["generation"] == ANY]
    assert top["runs"] == data["summary"]["training"]["n"]
    assert top["p50_abs_pct"] == round(100 * data["summary"]["training"]["median_abs_error"], 1)


def test_table_is_independent_of_report_order(training_run):
    cases, data, text = training_run
    reports = [CaseReport(id=c["id"], kind=c["kind"], source=c["source"], status=c["status"], errors=c["errors"],
                          file=c["file"]) for c in data["cases"]]
    random.Random(0).shuffle(reports)
    assert dump_table(table_from_reports(reports, [cases])) == text
    assert build_table([], {}, [cases])["rows"] == []


# --- the commands -------------------------------------------------------------------------------------------
def _shipped_row(e: dict) -> dict:
    values = {**e["category"], "metric": e["metric"]}
    key = tuple(ANY if k in e["relaxed"] else str(values[k]) for k in KEYS)
    rows = {tuple(str(r[k]) for k in KEYS): r for r in yaml.safe_load(SHIPPED.read_text())["rows"]}
    return rows[key]


def test_train_json_quotes_the_shipped_table():
    r = run_cli("train", "--model", "llama-3-70b", "--gpu", "h100-sxm", "--gpus", "64", "--tp", "8", "--pp", "2",
                "--global-batch", "64", "--seq-len", "4096", "--precision", "fp8", "--json")
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)["expected_error"]
    assert e["status"] in ("validated", "nearest") and e["runs"] >= MIN_RUNS
    row = _shipped_row(e)
    assert (e["p50_abs_pct"], e["p90_abs_pct"], e["runs"]) == (row["p50_abs_pct"], row["p90_abs_pct"], row["runs"])
    assert e["p50_abs_pct"] <= e["p90_abs_pct"]


def test_serve_json_per_metric_class_and_engine():
    base = ("serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--rate", "4", "--requests", "40",
            "--prompt-tokens", "256", "--output-tokens", "32", "--json")
    r = run_cli(*base, "--engine", "vllm")
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)["expected_error"]
    assert e["metric"] == "throughput" and set(e["by_metric"]) == {"throughput", "ttft", "tpot", "e2e"}
    assert e["category"]["framework"] == "vllm"
    for one in e["by_metric"].values():
        if one["status"] != "unvalidated":
            row = _shipped_row({**one, "category": e["category"]})
            assert (one["p50_abs_pct"], one["runs"]) == (row["p50_abs_pct"], row["runs"])
    plain = json.loads(run_cli(*base).stdout)["expected_error"]
    assert plain["category"]["framework"] is None and "framework" in plain["relaxed"]


def test_serve_outside_everything_validated_says_so():
    """No published serving run on a TPU: the table and the JSON both say the prediction is unchecked."""
    args = ("serve", "--model", "llama-3-8b", "--gpu", "tpu-v5p", "--rate", "2", "--requests", "20",
            "--prompt-tokens", "128", "--output-tokens", "16")
    r = run_cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)["expected_error"]
    assert e["status"] == "unvalidated" and e["p50_abs_pct"] is None
    assert all(x["status"] == "unvalidated" for x in e["by_metric"].values())
    table = run_cli(*args)
    assert "outside everything validated" in " ".join(table.stdout.split())
