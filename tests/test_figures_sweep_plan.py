"""The sweep and planner figures drawn from real command JSON: each draws content, marks what it
says it marks (knee, SLOs, winner, runner-up, baseline, reference), draws the Pareto front the
dominance rule gives (counted here by brute force), and is byte-identical when drawn again."""

from __future__ import annotations

import json
import re

import pytest

from conftest import run_cli
from parasim.report.figures import figures_for

SWEEP = ["serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--requests", "80", "--prompt-tokens", "256",
         "--output-tokens", "32", "--slo-ttft", "0.2", "--slo-tpot", "0.05", "--sweep-rate", "10:200:4", "-j", "2"]
PLAN_TRAIN = ["plan", "train", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--gpus", "16", "--global-batch", "32",
              "--seq-len", "2048", "--zero", "1", "--micro-batch", "1", "--workers", "2", "--reference", "tp=2,pp=2"]
PLAN_SERVE = ["plan", "serve", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--max-gpus", "2", "--rate", "4",
              "--prompt-tokens", "256", "--output-tokens", "32", "--requests", "60", "--screen-requests", "30",
              "--slo-ttft", "1", "--slo-tpot", "0.05", "--schedulers", "sarathi,vllm", "--token-budgets", "512",
              "--max-batches", "64", "--precisions", "bf16", "--workers", "2"]


def _json(args: list[str]) -> dict:
    r = run_cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    return {"sweep": _json(SWEEP), "plan train": _json(PLAN_TRAIN), "plan serve": _json(PLAN_SERVE)}


def _group(svg: str, gid: str) -> str:
    """The text of the SVG group with id `gid` (matplotlib writes an artist's gid as its group id)."""
    start = svg.index(f'<g id="{gid}"')
    depth, i = 0, start
    for m in re.finditer(r"<g\b|</g>", svg[start:]):
        depth += 1 if m.group() == "<g" else -1
        if depth == 0:
            return svg[start:start + m.end()]
    raise AssertionError(f"unclosed group {gid}")  # pragma: no cover


@pytest.mark.parametrize("kind", ["sweep", "plan train", "plan serve"])
def test_figures_draw_and_are_deterministic(results, kind):
    figs = figures_for(results[kind])
    assert len(figs) == 2
    for f in figs:
        assert f.svg.startswith("<svg") and f.title and f.caption
        assert f.svg.count("<path") > 20  # axes, ticks, glyphs and the data
    assert [f.svg for f in figures_for(results[kind])] == [f.svg for f in figs]


def test_sweep_figures_mark_the_knee_and_the_slos(results):
    out = results["sweep"]
    assert out["knee"]["index"] is not None
    latency, throughput = (f.svg for f in figures_for(out))
    for name in ("ttft", "tpot", "e2e"):
        assert f'id="knee-{name}"' in latency
    assert 'id="slo-ttft"' in latency and 'id="slo-tpot"' in latency and 'id="slo-e2e"' not in latency  # no E2E SLO
    assert 'id="knee"' in throughput


@pytest.mark.parametrize("kind", ["plan train", "plan serve"])
def test_plan_figures_mark_winner_runner_up_baseline_reference(results, kind):
    out = results[kind]
    ranked, pareto = (f.svg for f in figures_for(out))
    assert 'id="winner"' in pareto and 'id="runner-up"' in pareto
    assert ('id="baseline"' in pareto) == bool(out["baseline"] and out["baseline"].get("metrics"))
    assert ('id="line-baseline"' in ranked) == bool(out["baseline"] and out["baseline"].get("metrics"))
    has_ref = bool(out.get("reference") and out["reference"].get("metrics"))
    assert ('id="reference"' in pareto) == has_ref and has_ref == (kind == "plan train")


def _brute_front(points: list[tuple[float, float]]) -> set[tuple[float, float]]:
    """Points no other point beats on both coordinates (both minimised here)."""
    return {p for p in points if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points)}


def test_train_pareto_front_is_the_non_dominated_set(results):
    """Default pair for training: tokens/s (higher is better) vs peak memory per GPU (lower is better)."""
    out = results["plan train"]
    pts = [(-r["metrics"]["tokens_per_s"], r["metrics"]["peak_memory_gib_per_gpu"]) for r in out["ranked"]]
    front = _brute_front(pts)
    svg = figures_for(out)[1].svg
    assert _group(svg, "front").count("<use") == len(front) >= 1
