"""The HTML report (report/html.py): what it shows is what the result holds, it is self-contained
(no script, no URL), escaped, deterministic, and `--report` at run time is byte for byte the report
`parasim report` draws later from the saved `--json-out`."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_cli
from parasim.report.figures import Figure
from parasim.report.html import inline_svg, page
from report_fixtures import RUNS, make_results, toy_figures, use_toy_figures


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return make_results(tmp_path_factory.mktemp("results"))


def _load(path) -> dict:
    return json.loads(path.read_text())


class Page(HTMLParser):
    """The parts of a page the tests read: tags with attributes, h2 titles, table rows, text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.h2: list[str] = []
        self.rows: list[list[str]] = []
        self.row_classes: list[str | None] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self._in: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in.append(tag)
        if tag == "tr":
            self.rows.append([])
            self.row_classes.append(dict(attrs).get("class"))
        if tag in ("th", "td"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._in and self._in[-1] == "h2":
            self.h2.append(data)

    def row(self, label: str) -> list[str]:
        return next(r[1:] for r in self.rows if r and r[0] == label)


def _num(cell: str) -> float:
    return float(cell.replace(",", ""))


# --- run time and saved files ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(RUNS))
def test_report_at_run_time_is_the_report_of_the_saved_json(saved, kind, tmp_path):
    js, at_run_time = saved[kind]
    again = tmp_path / "again.html"
    r = run_cli("report", str(js), "-o", str(again))
    assert r.returncode == 0, r.stderr
    assert again.read_bytes() == at_run_time.read_bytes()
    assert f"wrote {again}: report" in r.stdout


def test_the_same_run_twice_gives_the_same_bytes(saved, tmp_path):
    """The JSON's own wall-clock field differs between the runs; the report shows none."""
    page_again, js_again = tmp_path / "serve.html", tmp_path / "serve.json"
    r = run_cli(*RUNS["serve"], "--json-out", str(js_again), "--report", str(page_again))
    assert r.returncode == 0, r.stderr
    assert page_again.read_bytes() == saved["serve"][1].read_bytes()
    assert page_again.read_bytes().isascii()


# --- what a single report shows ----------------------------------------------------------------------
def test_train_report_shows_inputs_plan_expected_error_version_then_summary(saved, monkeypatch):
    use_toy_figures(monkeypatch)
    res = _load(saved["train"][0])
    p = Page(page([res]))
    assert p.h2 == ["Inputs", "Plan", "Expected error", "Summary", "Figures"]
    assert p.row("model") == [res["model"]] and p.row("gpus") == [str(res["gpus"])]
    assert p.row("tp") == [str(res["plan"]["tp"])] and p.row("pp") == [str(res["plan"]["pp"])]
    e = res["expected_error"]
    status, p50, p90, runs, _ = p.row(e["metric"])
    assert (status, _num(p50), _num(p90), int(runs)) == (e["status"], e["p50_abs_pct"], e["p90_abs_pct"], e["runs"])
    assert _num(p.row("step time (s)")[0]) == pytest.approx(res["step_time_s"], rel=1e-3)
    assert _num(p.row("MFU, causal (%)")[0]) == pytest.approx(100 * res["mfu"], rel=1e-3)
    assert _num(p.row("peak memory per GPU (GiB)")[0]) == pytest.approx(res["peak_memory_gib_per_gpu"], rel=1e-3)
    parts = {k: _num(p.row(f"step: {k} (s)")[0]) for k in res["breakdown"]}
    assert parts == {k: pytest.approx(v, rel=1e-3, abs=1e-6) for k, v in res["breakdown"].items()}
    assert f"written by parasim {res['parasim_version']}" in "".join(p.text)


def test_serve_report_shows_every_given_slo_and_the_percentiles(saved, monkeypatch):
    use_toy_figures(monkeypatch)
    res = _load(saved["serve"][0])
    p = Page(page([res]))
    s = res["summary"]
    assert _num(p.row("SLO: ttft_s")[0]) == res["inputs"]["slo"]["ttft_s"]
    for label, key in (("TTFT p99 (s)", "ttft_p99_s"), ("TPOT p50 (s)", "tpot_p50_s"), ("E2E p99 (s)", "e2e_p99_s")):
        assert _num(p.row(label)[0]) == pytest.approx(s[key], rel=1e-3)
    assert _num(p.row("requests completed")[0]) == s["completed"] == 60
    assert {r[0] for r in p.rows} >= {"ttft", "tpot", "e2e", "throughput"}  # expected error per metric class


@pytest.mark.parametrize("kind,metric", [("plan-train", "tokens_per_s"), ("plan-serve", None)])
def test_planner_report_shows_the_winner_and_why(saved, monkeypatch, kind, metric):
    use_toy_figures(monkeypatch)
    res = _load(saved[kind][0])
    p = Page(page([res]))
    assert "Why this plan" in p.h2
    assert all(line in "".join(p.text) for line in res["explanation"]["text"])
    assert int(_num(p.row("plans simulated")[0])) == res["evaluated"]
    assert _num(p.row("winner's objective value")[0]) == pytest.approx(res["best"]["objective_value"], rel=1e-3)
    if metric:
        assert _num(p.row("tokens/s")[0]) == pytest.approx(res["best"]["metrics"][metric], rel=1e-3)
    else:
        assert p.row("scheduler") == [res["best"]["scheduler"]]


# --- figures: inline, captioned, scoped ----------------------------------------------------------------
def test_figures_are_inline_svg_with_titles_captions_and_unique_ids(saved, monkeypatch):
    use_toy_figures(monkeypatch)
    results = [_load(saved[k][0]) for k in RUNS]
    text = page(results, names=list(RUNS))
    p = Page(text)
    figs = [t for t, _ in p.tags if t == "figure"]
    assert len(figs) == sum(len(toy_figures(r)) for r in results) == text.count("<svg")
    assert "numbers &lt;of&gt; the result" in text and "what a caption says &amp; why" in text
    ids = [a["id"] for _, a in p.tags if "id" in a]
    assert len(ids) == len(set(ids))
    refs = set(re.findall(r'(?:href="#|url\(#)([^")]+)', text))
    assert refs and refs <= set(ids)  # every clip path and glyph reference resolves inside the page


def test_inline_svg_drops_what_could_fetch_or_run_and_scopes_ids():
    svg = ('<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/x.dtd">\n'
           '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'
           '<metadata><rdf:RDF about="https://example.org/"/></metadata><!-- made by http://x -->'
           '<script>alert(1)</script><defs><path id="g1" d="M0 0"/><clipPath id="c1"/></defs>'
           '<use xlink:href="#g1" clip-path="url(#c1)"/></svg>')
    out = inline_svg(svg, "f9")
    assert "http" not in out and "script" not in out and "metadata" not in out and "<!--" not in out
    assert 'id="f9-g1"' in out and 'href="#f9-g1"' in out and "url(#f9-c1)" in out


# --- self-contained and safe ---------------------------------------------------------------------------
def test_pages_have_no_script_no_handler_and_no_url(saved, monkeypatch):
    use_toy_figures(monkeypatch)
    for text in (page([_load(saved[k][0])]) for k in RUNS):
        p = Page(text)
        assert not re.search(r"https?:|//[a-z]", text.replace('http-equiv="', ""), re.I)
        assert "script" not in {t for t, _ in p.tags}
        assert not [k for _, a in p.tags for k in a if k.startswith("on")]
        assert not [v for _, a in p.tags for k, v in a.items() if k in ("src", "href") and not (v or "").startswith("#")]
        csp = next(a["content"] for t, a in p.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
        assert "default-src 'none'" in csp


#: any text HTML can carry (control characters, lone surrogates and noncharacters cannot:
#: test_control_characters_show_as_escapes)
NONCHARACTERS = {*map(chr, range(0xFDD0, 0xFDF0)), *(chr(p + d) for p in range(0xFFFE, 0x110000, 0x10000) for d in (0, 1))}
HOSTILE = st.text(st.characters(blacklist_categories=("Cc", "Cs")).filter(lambda c: c not in NONCHARACTERS),
                  min_size=1, max_size=40)
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "div", "section", "table",
                "thead", "tbody", "tr", "th", "td", "ul", "li", "figure", "figcaption", "svg", "path", "g"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=HOSTILE, note=HOSTILE, title=HOSTILE, caption=HOSTILE, name=HOSTILE)
def test_every_string_is_escaped(model, note, title, caption, name):
    """Text from a result, a figure or a file name never becomes markup: the page parses to the
    same tags whatever it holds, and each string reads back as itself."""
    res = {"command": "serve", "inputs": {"model": model, "notes": [note], "gpu": "g"}, "expected_error": None}
    figs = [Figure(title, '<svg width="10" height="10"><g><path d="M0 0L5 5"/></g></svg>', caption)]
    for text in (page([res], figure_sets=[figs]), page([res, res], names=[name, name], figure_sets=[figs, figs])):
        p = Page(text)
        assert {t for t, _ in p.tags} <= ALLOWED_TAGS
        data = "".join(p.text)
        assert all(s in data for s in (model, note, title, caption))


def test_control_characters_show_as_escapes():
    text = page([{"command": "serve", "inputs": {"model": "m\x1b[31m\x00\x85"}}], figure_sets=[[]])
    assert "m\\x1b[31m\\x00\\x85" in "".join(Page(text).text) and "\x1b" not in text


def test_noncharacters_show_as_escapes():
    """U+FFFE and its kin cannot travel in HTML (a parser drops the character reference), so the page
    writes them as their escapes, as it does control characters."""
    text = page([{"command": "serve", "inputs": {"model": "a\ufffeb\U0010ffffc\ufdd0"}}], figure_sets=[[]])
    assert "a\\ufffeb\\U0010ffffc\\ufdd0" in "".join(Page(text).text)
    assert not NONCHARACTERS & set(text)


def test_comparison_puts_one_column_per_result_and_marks_rows_that_differ(saved, tmp_path, monkeypatch):
    use_toy_figures(monkeypatch)
    low = _load(saved["serve"][0])
    js = tmp_path / "fast.json"
    args = [a if a != "5" else "40" for a in RUNS["serve"]]  # the same workload at 8x the rate
    assert run_cli(*args, "--json-out", str(js)).returncode == 0
    high = _load(js)
    train = _load(saved["train"][0])
    p = Page(page([low, high, train], names=["low.json", "high.json", "train.json"]))
    head = next(r for r in p.rows if r[:2] == ["", "1. low.json"])
    assert head == ["", "1. low.json", "2. high.json", "3. train.json"]
    ttft = p.row("TTFT p99 (s)")
    assert [_num(c) for c in ttft[:2]] == [pytest.approx(r["summary"]["ttft_p99_s"], rel=1e-3) for r in (low, high)]
    assert ttft[2] == "-" and p.row("step time (s)")[:2] == ["-", "-"]
    marked = {r[0] for r, c in zip(p.rows, p.row_classes) if c == "differs"}
    assert "workload: offered_requests_per_s" in marked and "requests completed" not in marked
    assert "step time (s)" not in marked  # one result has it: nothing to differ from


def test_a_result_missing_fields_loses_rows_not_the_page():
    for command in ("train", "serve", "plan train", "plan serve", "serve-sweep"):
        text = page([{"command": command, "best": {"metrics": 5}, "summary": [], "inputs": "x", "plan": None}],
                    figure_sets=[[]])
        assert "<h1>parasim report: " in text and "nothing recorded" in text


@pytest.mark.parametrize("e", [{"metric": [1]}, {"by_metric": {"a": 5, "b": {"status": [1]}}, "metric": {}},
                               {"by_metric": {}}, {"status": "unvalidated"}, [], "nearest"])
def test_an_odd_expected_error_is_shown_as_far_as_it_reads(e):
    res = {"command": "serve", "expected_error": e}
    for results in ([res], [res, res]):
        assert "<h2>Expected error</h2>" in page(results, figure_sets=[[]] * len(results))
