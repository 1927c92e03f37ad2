"""Figures of a `train` result, drawn from its JSON alone: the step Gantt with the breakdown bar
(only with a timeline), the memory bar; valid SVG with drawn content, the same bytes every time,
and the same from a saved `--json-out` as from the run."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from conftest import make_cluster, make_model
from parasim.report.figures import figures_for
from parasim.report.tables import dumps
from parasim.training import TrainingPlan, simulate

SVG = "{http://www.w3.org/2000/svg}"
PLAN = TrainingPlan(pp=2, dp=2, micro_batch=1, global_batch=8, seq_len=256)


@pytest.fixture(scope="module")
def results():
    model, cluster = make_model(layers=8), make_cluster(4)
    with_tl = {"command": "train", **simulate(model, cluster, PLAN, timeline=True).to_dict()}
    without = {"command": "train", **simulate(model, cluster, PLAN).to_dict()}
    return with_tl, without


def _paths(svg: str) -> int:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return sum(1 for _ in root.iter(f"{SVG}path"))


def _subpaths(svg: str) -> int:
    """Closed shapes drawn: each starts with a move-to (a kind's bars are one compound path)."""
    return sum(p.get("d", "").count("M") for p in ET.fromstring(svg).iter(f"{SVG}path"))


def test_with_a_timeline_the_step_is_a_gantt_and_memory_a_bar(results):
    figs = figures_for(results[0])
    assert [f.title for f in figs] == ["Training step timeline", "Memory per GPU"]
    plain = figures_for(results[1])
    # the Gantt adds (at least) one drawn rectangle per span of positive length to the bar alone
    spans = sum(1 for s in results[0]["timeline"]["stages"] for row in s["spans"] if row[2] > 0)
    assert _subpaths(figs[0].svg) - _subpaths(plain[0].svg) >= spans
    assert all(_paths(f.svg) > 0 and f.caption for f in figs)


def test_without_a_timeline_the_caption_says_which_flag_draws_the_gantt(results):
    figs = figures_for(results[1])
    assert figs[0].title == "Step time breakdown" and "--timeline" in figs[0].caption
    assert figs[1].title == "Memory per GPU"


def test_figures_are_deterministic_and_redraw_from_saved_json(results):
    saved = json.loads(dumps(results[0]))
    first, again, redrawn = figures_for(results[0]), figures_for(results[0]), figures_for(saved)
    assert [f.svg for f in first] == [f.svg for f in again] == [f.svg for f in redrawn]


@pytest.mark.parametrize("result", [{"command": "train"}, {"command": "train", "breakdown": {}, "memory": {},
                                                           "timeline": {"stages": []}}])
def test_a_sparse_result_still_draws(result):
    figs = figures_for(result)
    assert len(figs) == 2 and all(f.svg.startswith("<svg") for f in figs)
