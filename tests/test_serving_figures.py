"""The `serve` figures: drawn from the JSON result alone (so a saved `--json-out` redraws them),
the same bytes for the same result, and a caption naming the flag when the figure keys are absent."""

from __future__ import annotations

import json
import re

import pytest

from conftest import run_cli
from parasim.report.figures import figures_for

ARGS = ["serve", "-m", "llama-3-8b", "--gpu", "h100-sxm", "--rate", "40", "--requests", "80",
        "--prompt-tokens", "256", "--output-tokens", "32", "--slo-ttft", "0.5", "--slo-tpot", "0.05", "--json"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    path = tmp_path_factory.mktemp("fig") / "t.json"
    r = run_cli(*ARGS, "--timeline", str(path))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def drawn(svg: str) -> int:
    """Path elements with data: lines, bars, the glyphs of labels (fonts are drawn as paths)."""
    return len(re.findall(r'<path [^>]*d="M', svg))


def test_recorded_result_draws_cdfs_kv_and_queue(recorded):
    figs = figures_for(recorded)
    assert [f.title for f in figs] == ["Latency CDFs", "KV-cache use", "Queue length"]
    for f in figs:
        assert f.svg.startswith("<svg") and f.svg.rstrip().endswith("</svg>") and drawn(f.svg) > 20 and f.caption
    no_slo = json.loads(json.dumps(recorded))
    no_slo["inputs"]["slo"] = {k: None for k in no_slo["inputs"]["slo"]}
    assert drawn(figures_for(no_slo)[0].svg) < drawn(figs[0].svg)  # the SLO lines and their legends


def test_figures_are_deterministic_and_read_only_the_json(recorded):
    again = json.loads(json.dumps(recorded))  # a --json-out file read back
    assert [f.svg for f in figures_for(recorded)] == [f.svg for f in figures_for(again)]


def test_without_the_figure_keys_one_figure_names_the_flag(recorded):
    plain = {k: v for k, v in recorded.items() if k not in ("series", "distributions")}
    figs = figures_for(plain)
    assert len(figs) == 1 and "--timeline" in figs[0].caption and drawn(figs[0].svg) > 10


def test_infeasible_result_has_no_figures():
    assert figures_for({"command": "serve", "feasible": False, "summary": {}, "inputs": {}}) == []
