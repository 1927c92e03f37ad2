"""`parasim validate` on the shared dev cases: the JSON contract and the markdown report."""

from __future__ import annotations

import json

import pytest

from parasim.mathx import quantile
from parasim.report.validation import summarize
from parasim.validation.run import CaseReport
from tests.conftest import SHARED, run_cli

DEV = SHARED / "validation" / "dev.yaml"
needs_dev = pytest.mark.skipif(not DEV.is_file(), reason="shared validation cases not present")


@needs_dev
def test_json_contract_on_dev_cases(tmp_path):
    md = tmp_path / "V.md"
    r = run_cli("validate", str(DEV), "--json", "--markdown", str(md))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["cases"]
    for c in out["cases"]:
        for k in ("id", "kind", "status", "predicted", "measured", "errors"):
            assert k in c
        assert c["status"] in ("ok", "skipped", "infeasible")
    s = out["summary"]["training"]
    for k in ("n", "median_abs_error", "p90_abs_error", "max_abs_error"):
        assert k in s
    assert s["n"] > 0 and 0 <= s["median_abs_error"] <= s["p90_abs_error"] <= s["max_abs_error"]
    text = md.read_text()
    assert "Generated" in text and "dev.yaml" in text and "megatron2021-t1-1.7b" in text


@needs_dev
def test_kind_filter():
    out = json.loads(run_cli("validate", str(DEV), "--kind", "training", "--json").stdout)
    assert {c["kind"] for c in out["cases"]} == {"training"}


def test_bad_kind_and_missing_file_exit_2(tmp_path):
    assert run_cli("validate", str(tmp_path / "nope.yaml")).returncode == 2
    if DEV.is_file():
        assert run_cli("validate", str(DEV), "--kind", "inference").returncode == 2


def test_summary_statistics():
    assert quantile([0.0, 1.0], 0.5) == 0.5
    rs = [CaseReport(id=str(i), kind="training", source="", status="ok", errors={"x": e})
          for i, e in enumerate([0.1, -0.2, 0.05, 0.4])]
    s = summarize(rs)["training"]
    assert s["n"] == 4 and s["max_abs_error"] == 0.4
    assert s["median_abs_error"] == pytest.approx(0.15)


def test_a_serving_case_whose_weights_do_not_fit_is_infeasible_with_the_breakdown(tmp_path):
    """Llama-3.1-70B in bf16 holds 141 GB of weights; one 24 GB L4 cannot run it. The case is a
    result (`infeasible`, the memory breakdown as its reason, no prediction, not scored), not an
    empty `ok`, and the next case still runs."""
    f = tmp_path / "cases.yaml"
    f.write_text("""cases:
- id: too-big
  kind: serving
  software: vllm 0.6.0
  model: {catalog: llama-3.1-70b}
  hardware: {accelerator: l4, gpus: 1}
  plan: {tp: 1, weights: bf16}
  workload: {requests: 10, prompt_tokens: 128, output_tokens: 128, arrival: burst}
  measured: {output_tokens_per_s: 100}
- id: fits
  kind: serving
  software: vllm 0.6.0
  model: {catalog: llama-3-8b}
  hardware: {accelerator: h100-sxm, gpus: 1}
  plan: {tp: 1, weights: bf16}
  workload: {requests: 10, prompt_tokens: 128, output_tokens: 128, arrival: burst}
  measured: {output_tokens_per_s: 1000}
""")
    r = run_cli("validate", str(f), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    by_id = {c["id"]: c for c in out["cases"]}
    bad = by_id["too-big"]
    assert bad["status"] == "infeasible" and bad["predicted"] == {} and bad["errors"] == {}
    assert "kv_cannot_hold_request" in bad["reason"] and "weights" in bad["reason"]
    assert by_id["fits"]["status"] == "ok" and by_id["fits"]["predicted"]["output_tokens_per_s"] > 0
    s = out["summary"]["serving"]
    assert (s["ok"], s["infeasible"], s["n"]) == (1, 1, 1)


@pytest.mark.parametrize("model, gpu, field, listing", [
    ("nope", "h100-sxm", "case x.model.catalog", "parasim models"),
    ("llama-3-8b", "h1000", "case x.hardware.accelerator", "parasim gpus"),
])
def test_an_unknown_catalog_name_in_a_case_file_names_the_field_and_the_right_listing(tmp_path, model, gpu, field,
                                                                                   listing):
    f = tmp_path / "c.yaml"
    f.write_text(f"cases:\n- id: x\n  kind: serving\n  model: {{catalog: {model}}}\n"
                 f"  hardware: {{accelerator: {gpu}, gpus: 1}}\n  plan: {{}}\n  measured: {{}}\n")
    r = run_cli("validate", str(f))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert field in r.stderr and listing in r.stderr


def test_an_unreadable_case_is_skipped_and_the_others_still_run(tmp_path):
    """One case naming an unknown model, one with an unknown kind, one good: the good case is
    scored, the two others are reported as skipped with the field and what is allowed (in the
    JSON and on stderr), and the run exits 0 because a case ran."""
    f = tmp_path / "c.yaml"
    good = ("- id: good\n  kind: serving\n  software: vllm 0.10.1\n  model: {catalog: llama-3.1-8b}\n"
            "  hardware: {accelerator: h100-sxm, gpus: 1}\n  plan: {tp: 1}\n"
            "  workload: {requests: 20, prompt_tokens: 128, output_tokens: 16, arrival: burst}\n"
            "  measured: {output_tokens_per_s: 1000.0}\n")
    f.write_text("cases:\n" + good.replace("id: good", "id: bad").replace("llama-3.1-8b", "nope-9b") + good
                 + "- id: odd\n  kind: inference\n  model: {}\n")
    r = run_cli("validate", str(f), "--json")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    out = json.loads(r.stdout)
    by_id = {c["id"]: c for c in out["cases"]}
    assert [c["id"] for c in out["cases"]] == ["bad", "good", "odd"]  # file order kept
    assert by_id["good"]["status"] == "ok" and "output_tokens_per_s" in by_id["good"]["errors"]
    assert by_id["bad"]["status"] == "skipped" and "case bad.model.catalog" in by_id["bad"]["reason"]
    assert by_id["odd"]["kind"] == "unreadable" and "training, serving" in by_id["odd"]["reason"]
    assert out["summary"]["serving"]["skipped"] == 1 and out["summary"]["serving"]["n"] == 1
    assert "unknown model 'nope-9b'" in r.stderr and "case odd.kind" in r.stderr


def test_a_case_with_a_malformed_trace_is_skipped_with_the_line(tmp_path):
    """A trace line that is not JSON makes that case skipped (not infeasible: nothing was
    simulated), with the file and line number as the reason; the other case still runs."""
    (tmp_path / "t.jsonl").write_text('{"arrival_s": 0, "prompt_tokens": 10, "output_tokens": 5}\n{oops\n')
    f = tmp_path / "c.yaml"
    good = ("- id: ID\n  kind: serving\n  software: vllm 0.10.1\n  model: {catalog: llama-3.1-8b}\n"
            "  hardware: {accelerator: h100-sxm, gpus: 1}\n  plan: {tp: 1}\n  workload: WL\n"
            "  measured: {ttft_mean_s: 0.05}\n")
    f.write_text("cases:\n" + good.replace("ID", "traced").replace("WL", "{trace: t.jsonl}")
                 + good.replace("ID", "fixed").replace("WL", "{requests: 5, prompt_tokens: 10, output_tokens: 5}"))
    r = run_cli("validate", str(f), "--json")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    by_id = {c["id"]: c for c in json.loads(r.stdout)["cases"]}
    assert by_id["traced"]["status"] == "skipped" and "t.jsonl line 2" in by_id["traced"]["reason"]
    assert by_id["fixed"]["status"] == "ok"


def test_a_bad_model_field_in_a_case_file_names_the_case(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("cases:\n- id: q\n  kind: serving\n  model: {family: qwen2, layers: 2, hidden: 64, heads: 4, vocab: 100}\n"
                 "  hardware: {accelerator: h100-sxm, gpus: 1}\n  plan: {}\n  measured: {}\n")
    r = run_cli("validate", str(f))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "case q.model.family" in r.stderr and "gpt, llama, moe" in r.stderr


def test_every_latency_statistic_is_predicted_and_unknown_metrics_are_said(tmp_path):
    """Medians and p90s are scored like means and p99s (median = p50); a measured key parasim has
    no metric for is named in the case's choices instead of being dropped silently."""
    f = tmp_path / "c.yaml"
    f.write_text("""cases:
- id: m
  kind: serving
  software: sglang 0.4.3
  source: sglang.bench_serving
  model: {catalog: llama-3-8b}
  hardware: {accelerator: h100-sxm, gpus: 1}
  plan: {tp: 1, weights: bf16}
  workload: {requests: 40, prompt_tokens: 500, output_tokens: 50, arrival: {poisson_rate: 4.0, seed: 1}}
  measured: {ttft_median_s: 0.05, tpot_p90_s: 0.01, e2e_p99_s: 1.0, total_tokens_per_s: 2000, goodput_per_watt: 3}
""")
    out = json.loads(run_cli("validate", str(f), "--json").stdout)
    c = out["cases"][0]
    assert set(c["errors"]) == {"ttft_median_s", "tpot_p90_s", "e2e_p99_s", "total_tokens_per_s"}
    assert c["predicted"]["ttft_median_s"] == c["predicted"]["ttft_p50_s"]
    assert any("not predicted" in ch and "goodput_per_watt" in ch for ch in c["choices"])


def test_p95_and_per_gpu_rates_are_predicted(tmp_path):
    """p95 latencies (genai-perf, trtllm-bench) and per-GPU rates (older NVIDIA tables) are scored:
    a per-GPU rate is the case's rate over its GPUs, and p50 <= p95 <= p99."""
    f = tmp_path / "c.yaml"
    f.write_text("""cases:
- id: g
  kind: serving
  software: tensorrt-llm 0.17
  source: trtllm-bench throughput
  model: {catalog: llama-3-8b}
  hardware: {accelerator: h100-sxm, gpus: 2}
  plan: {tp: 1, replicas: 2, weights: fp8}
  workload: {requests: 60, prompt_tokens: 500, output_tokens: 40, arrival: {poisson_rate: 8.0, seed: 1}}
  measured: {ttft_p95_s: 0.05, e2e_p95_s: 1.0, output_tokens_per_s_per_gpu: 100, requests_per_s_per_gpu: 2}
""")
    c = json.loads(run_cli("validate", str(f), "--json").stdout)["cases"][0]
    assert set(c["errors"]) == {"ttft_p95_s", "e2e_p95_s", "output_tokens_per_s_per_gpu", "requests_per_s_per_gpu"}
    p = c["predicted"]
    assert p["output_tokens_per_s_per_gpu"] == pytest.approx(p["output_tokens_per_s"] / 2)
    assert p["requests_per_s_per_gpu"] == pytest.approx(p["requests_per_s"] / 2)
    assert p["ttft_p50_s"] <= p["ttft_p95_s"] <= p["ttft_p99_s"]
    assert p["e2e_p50_s"] <= p["e2e_p95_s"] <= p["e2e_p99_s"]
