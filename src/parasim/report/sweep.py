"""How a `parasim serve --sweep-rate` result looks as a table: one row per offered rate, the knee marked."""

from __future__ import annotations

from typing import Any

from parasim.report.expected_error import rows as expected_rows
from parasim.report.tables import console, fmt, kv_table, table

COLUMNS = ("rate", "served", "goodput", "TTFT ms", "TPOT ms", "E2E s", "queue s", "attain", "status")
LEGEND = ("rate, served, goodput: requests/s; TTFT, TPOT: p50/p99; E2E: p99; queue: median queueing delay; "
          "attain: SLO attainment")


#: short names of a point's failure reasons in the status column (the JSON keeps the long ones)
SHORT = {"saturated_throughput": "sat", "incomplete": "incompl", "queueing": "queue"}


def _ms(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a * 1e3:.1f}/{b * 1e3:.1f}"


def _cells(p: dict[str, Any], is_knee: bool) -> list[Any]:
    s = p["summary"]
    status = ("ok" if p["passes"] else "fails " + ",".join(SHORT.get(f, f) for f in p["fails"])) + (" <knee" if is_knee else "")
    return [p["rate_requests_per_s"], s["requests_per_s"], s["goodput_requests_per_s"],
            _ms(s["ttft_p50_s"], s["ttft_p99_s"]), _ms(s["tpot_p50_s"], s["tpot_p99_s"]), s["e2e_p99_s"],
            s["queueing_p50_s"], s["slo_attainment"], status]


def knee_line(out: dict[str, Any]) -> str:
    k = out["knee"]
    rule = (f"meets the SLOs ({', '.join(k['slos'])})" if k["slos"] else "no SLO given") + \
        (f", median queueing <= {k['max_queueing_p50_s']:g} s" if k["max_queueing_p50_s"] is not None else "") + \
        (f", within the burst run's {k['saturated_requests_per_s']:.4g} req/s" if k["saturated_requests_per_s"] else "")
    if k["rate_requests_per_s"] is None:
        return f"knee: none - the lowest rate already fails ({', '.join(k['next_fails'])}); rule: {rule}"
    nxt = ("" if k["next_rate_requests_per_s"] is None else
           f"; {k['next_rate_requests_per_s']:.4g} req/s fails ({', '.join(k['next_fails'])})")
    return f"knee: {k['rate_requests_per_s']:.4g} req/s, the last rate up to which every rate passes ({rule}){nxt}"


def render_sweep(out: dict[str, Any]) -> None:
    i = out["inputs"]
    p = i["plan"]
    c = console()
    title = (f"{i['model']} on {i['gpu']}: tp={p['tp']} pp={p['pp']} replicas={p['replicas']} scheduler={p['scheduler']} "
             f"- {i['workload']['requests']} requests per rate")
    if not out["feasible"]:
        c.print(kv_table(title, [("feasible", False), ("reason", out["reason"])]))
        c.print(f"[bold red]infeasible[/]: {out['message']}")
        return
    k = out["knee"]["index"]
    c.print(table(title, COLUMNS, [_cells(pt, n == k) for n, pt in enumerate(out["points"])]))
    c.print(LEGEND)
    c.print(knee_line(out))
    for label, value in expected_rows(out.get("expected_error")):
        c.print(f"{label}: {fmt(value)}")
    for line in i.get("notes") or ():
        c.print(f"note: {line}")
