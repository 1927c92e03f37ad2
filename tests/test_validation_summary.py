"""Validation summaries: median/p90/max of |error| per kind and per input file."""

from __future__ import annotations

import pytest

from parasim.report.validation import summarize, summarize_by_file, to_markdown
from parasim.validation.run import CaseReport


def _r(cid, kind, err, file):
    return CaseReport(id=cid, kind=kind, source="", status="ok", predicted={"x": 1.0}, measured={"x": 1.0},
                      errors={"x": err}, file=file)


def test_summaries_per_kind_and_file():
    reports = [_r("a", "serving", 0.1, "one.yaml"), _r("b", "serving", -0.3, "one.yaml"),
               _r("c", "serving", 0.5, "two.yaml"), _r("d", "training", 0.05, "one.yaml")]
    s = summarize(reports)
    assert s["serving"]["n"] == 3 and s["serving"]["max_abs_error"] == pytest.approx(0.5)
    assert s["serving"]["median_abs_error"] == pytest.approx(0.3)
    by = summarize_by_file(reports)
    assert by["one.yaml"]["serving"]["max_abs_error"] == pytest.approx(0.3)
    assert by["two.yaml"]["serving"]["n"] == 1 and "training" not in by["two.yaml"]
    md = to_markdown(reports, ["one.yaml", "two.yaml"])
    assert "`two.yaml` | serving | 1 | 50.0 %" in md


def test_markdown_lists_each_choice_text_once_with_its_cases():
    """Cases of one table share most choices; the report prints each distinct text once."""
    reports = [_r(c, "serving", 0.1, "one.yaml") for c in ("a", "b", "c")]
    reports[0].choices = reports[1].choices = ["flow X"]
    reports[2].choices = ["flow Y"]
    md = to_markdown(reports, ["one.yaml"])
    assert md.count("flow X") == 1 and "- **a, b**: flow X" in md and "- **c**: flow Y" in md
