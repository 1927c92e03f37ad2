"""One self-contained HTML file from one or more parasim results (`--report`, `parasim report`).

Why this shape: a report is mailed, attached to a ticket, opened years later, offline. So it is one
file: figures are inline SVG, the style is a small inline <style>, there is no script and nothing
is fetched (a Content-Security-Policy of `default-src 'none'` makes a browser refuse any fetch that
slipped in). Every string from a result is escaped; the SVG of each figure is stripped of its
comments, metadata and namespace URLs, and its ids are prefixed so that two figures' clip paths
and glyphs cannot collide. The same results give the same bytes (no date, no random id).

One result: its inputs, plan, expected error and parasim version on top, then its headline metrics
and figures. Several: the versions, then the same rows side by side, one column per result (rows
that differ are marked), then each result's figures.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

from parasim import __version__
from parasim.report import headline
from parasim.report.expected_error import by_metric
from parasim.report.expected_error import text as expected_text
from parasim.report.figures import Figure, figures_for

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;margin:0 auto;
max-width:1180px;padding:1.2em 1.5em 3em;line-height:1.45;background:#fff}
h1{font-size:1.5em;margin:.2em 0 .1em}h2{font-size:1.2em;margin:1.6em 0 .4em;border-bottom:1px solid #ddd}
h3{font-size:1.02em;margin:.2em 0 .5em}p.meta{color:#555;margin:0 0 1em}
.cols{display:flex;flex-wrap:wrap;gap:0 2.5em}.cols>section{flex:1 1 420px;min-width:0}
table{border-collapse:collapse;margin:.3em 0 1em;font-size:.92em}
th,td{border:1px solid #d4d4d8;padding:.22em .6em;text-align:left;vertical-align:top}
thead th{background:#f1f1f4}tbody th{font-weight:normal;color:#333;background:#fafafa}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.differs th{font-weight:bold;background:#fff6dc}
figure{margin:1em 0 1.6em;padding:.6em .8em;border:1px solid #e4e4e7;border-radius:4px}
figure svg{display:block;max-width:100%;height:auto}figcaption{color:#444;font-size:.92em;margin-top:.4em}
.none{color:#666;font-style:italic}ul.why{margin:.2em 0 1em}
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def page(results: Sequence[dict[str, Any]], names: Sequence[str] | None = None,
         figure_sets: Sequence[list[Figure]] | None = None) -> str:
    """The HTML text for `results` (one: a report; several: a comparison). `names` label each
    result (e.g. its file name); `figure_sets` are the figures already drawn (else drawn here)."""
    if not results:
        raise ValueError("a report needs at least one result")
    names = list(names) if names is not None else [f"result {i + 1}" for i in range(len(results))]
    figs = list(figure_sets) if figure_sets is not None else [figures_for(r) for r in results]
    if len(results) == 1:
        title = f"parasim report: {headline.title(results[0])}"
        body = _single(results[0], figs[0])
    else:
        title = f"parasim comparison of {len(results)} results"
        body = _comparison(results, names, figs)
    text = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{_e(title)}</h1>\n{body}</body>\n</html>\n")
    return text.encode("ascii", "xmlcharrefreplace").decode("ascii")  # ASCII bytes: no locale can garble it


# --- one result ---------------------------------------------------------------------------------------
def _single(r: dict[str, Any], figs: list[Figure]) -> str:
    out = [f"<p class=\"meta\">{_e(_version(r))}</p>\n<div class=\"cols\">\n",
           _section("Inputs", _kv(headline.inputs(r))), _section("Plan", _kv(headline.plan(r))), "</div>\n",
           _section("Expected error", _expected(r.get("expected_error"))), _why(r),
           _section("Summary", _kv(headline.metrics(r))), _section("Figures", _figures(figs, "r1"))]
    return "".join(out)


def _version(r: dict[str, Any]) -> str:
    made = r.get("parasim_version")
    made_s = f"written by parasim {made}" if isinstance(made, str) else "parasim version not recorded in the result"
    drawn = "" if made == __version__ else f"; report drawn by parasim {__version__}"
    return f"command `{r.get('command')}`; {made_s}{drawn}"


def _why(r: dict[str, Any]) -> str:
    lines = (r.get("explanation") or {}).get("text") if isinstance(r.get("explanation"), dict) else None
    if not isinstance(lines, list) or not lines:
        return ""
    items = "".join(f"<li>{_e(x)}</li>" for x in lines)
    return _section("Why this plan", f"<ul class=\"why\">{items}</ul>\n")


def _expected(e: Any) -> str:
    """One row per metric class: status, p50/p90 |error|, runs, note."""
    if not isinstance(e, dict):
        return "<p class=\"none\">none: the result carries no expected error (nothing was ranked, or an older result)</p>\n"
    rows = []
    for m, x in by_metric(e).items():
        x = x if isinstance(x, dict) else {}
        rows.append([m, x.get("status"), x.get("p50_abs_pct"), x.get("p90_abs_pct"), x.get("runs"), x.get("note")])
    return _grid(["metric", "status", "p50 |error| (%)", "p90 |error| (%)", "runs", "note"], rows)


# --- several results ----------------------------------------------------------------------------------
def _comparison(results: Sequence[dict[str, Any]], names: list[str], figs: list[list[Figure]]) -> str:
    heads = [f"{i + 1}. {n}" for i, n in enumerate(names)]
    listing = _grid(["#", "result", "what", "parasim"],
                    [[i + 1, n, headline.title(r), r.get("parasim_version")] for i, (n, r) in enumerate(zip(names, results))])
    out = [f"<p class=\"meta\">{len(results)} results side by side; report drawn by parasim {_e(__version__)}; "
           "rows where results that have a value differ are marked</p>\n", listing,
           _section("Inputs", _side(heads, [headline.inputs(r) for r in results])),
           _section("Plan", _side(heads, [headline.plan(r) for r in results])),
           _section("Expected error", _side(heads, [_expected_rows(r.get("expected_error")) for r in results])),
           _section("Headline metrics", _side(heads, [headline.metrics(r) for r in results]))]
    for i, (name, r, f) in enumerate(zip(names, results, figs)):
        out.append(f"<h2 id=\"result-{i + 1}\">{i + 1}. {_e(name)}: {_e(headline.title(r))}</h2>\n")
        out.append(_why(r) + _figures(f, f"r{i + 1}"))
    return "".join(out)


def _expected_rows(e: Any) -> list[headline.Row]:
    if not isinstance(e, dict):
        return []
    by = by_metric(e)
    rows = []
    for m in sorted(by):
        try:
            rows.append((m, expected_text(by[m])))
        except (KeyError, TypeError, ValueError):
            rows.append((m, "unreadable"))
    return rows


def _side(heads: list[str], per_result: list[list[headline.Row]]) -> str:
    """Rows (the union of labels, first seen first) x one column per result; '-' where absent."""
    labels = list(dict.fromkeys(label for rows in per_result for label, _ in rows))
    maps = [dict(rows) for rows in per_result]
    body = []
    for label in labels:
        vals = [m.get(label) for m in maps]
        differs = len({_fmt(v) for v in vals if v is not None}) > 1  # among the results that have it
        cells = "".join(_td(v) for v in vals)
        mark = ' class="differs"' if differs else ""
        body.append(f"<tr{mark}><th scope=\"row\">{_e(label)}</th>{cells}</tr>")
    head = "".join(f"<th scope=\"col\">{_e(h)}</th>" for h in ["", *heads])
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body) + "\n</tbody></table>\n"


# --- building blocks ----------------------------------------------------------------------------------
def _section(title: str, inner: str) -> str:
    return f"<section>\n<h2>{_e(title)}</h2>\n{inner}</section>\n"


def _kv(rows: list[headline.Row]) -> str:
    if not rows:
        return "<p class=\"none\">nothing recorded in the result</p>\n"
    body = "\n".join(f"<tr><th scope=\"row\">{_e(k)}</th>{_td(v)}</tr>" for k, v in rows)
    return f"<table><tbody>\n{body}\n</tbody></table>\n"


def _grid(columns: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th scope=\"col\">{_e(c)}</th>" for c in columns)
    body = "\n".join("<tr>" + "".join(_td(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>\n"


def _figures(figs: list[Figure], scope: str) -> str:
    if not figs:
        return "<p class=\"none\">no figures are drawn for this kind of result</p>\n"
    parts = []
    for j, f in enumerate(figs):
        fid = f"{scope}-fig{j + 1}"
        caption = f"<figcaption>{_e(f.caption)}</figcaption>" if f.caption else ""
        parts.append(f"<figure id=\"{fid}\">\n<h3>Figure {j + 1}. {_e(f.title)}</h3>\n"
                     f"{inline_svg(f.svg, fid)}\n{caption}</figure>\n")
    return "".join(parts)


def _td(v: Any) -> str:
    num = isinstance(v, (int, float)) and not isinstance(v, bool)
    return f"<td class=\"num\">{_e(_fmt(v))}</td>" if num else f"<td>{_e(_fmt(v))}</td>"


def _fmt(v: Any) -> str:
    """Numbers as people read them: thousands separated, four significant digits below 1,000."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return str(v)
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.4g}" if abs(v) >= 1e-3 else f"{v:.3e}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


#: characters an HTML page cannot carry: controls, lone surrogates and the Unicode noncharacters
#: (U+FDD0-U+FDEF and the last two code points of every plane), which a parser drops or replaces
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
                      + "".join(chr(p) + chr(p + 1) for p in range(0xFFFE, 0x110000, 0x10000)) + "]")


def _e(s: Any) -> str:
    """Escaped text; a control character, lone surrogate or noncharacter (which HTML cannot carry: a browser would
    show another character) is written as its escape, `\\x1b`, as the CLI's error lines do."""
    return html.escape(_CONTROL.sub(lambda m: repr(m.group())[1:-1], str(s)), quote=True)


# --- SVG made safe to inline --------------------------------------------------------------------------
_DROP = re.compile(r"<\?xml[^>]*\?>|<!DOCTYPE[^>]*>|<!--.*?-->|<metadata\b.*?</metadata>|<script\b.*?</script>",
                   re.S | re.I)
_XMLNS = re.compile(r"\s+xmlns(?::\w+)?=\"[^\"]*\"")
_REF = re.compile(r"(\bid=\"|href=\"#|url\(#)")


def inline_svg(svg: str, scope: str) -> str:
    """`svg` ready to sit inside HTML: no prolog, comment, metadata, script or namespace URL (the
    HTML parser puts <svg> in the SVG namespace itself), every id and reference to one prefixed
    with `scope` (two matplotlib figures may both define `p1a2b3c` or a glyph's path)."""
    text = _XMLNS.sub("", _DROP.sub("", svg)).strip()
    return _REF.sub(lambda m: f"{m.group(1)}{scope}-", text)
