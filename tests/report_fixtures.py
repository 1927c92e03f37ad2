"""Shared by the HTML report tests: small real results of each command (made through the CLI, as a
user makes them, each with `--json-out` and `--report`) and a toy figure set that stands in for the
real ones (registered for the duration of one test only)."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli

MODEL = ["-m", "llama-3-8b", "--gpu", "h100-sxm"]
#: one small run per kind of result (seconds each)
RUNS: dict[str, list[str]] = {
    "train": ["train", *MODEL, "--gpus", "8", "--tp", "2", "--pp", "2", "--global-batch", "16"],
    "serve": ["serve", *MODEL, "--rate", "5", "--requests", "60", "--prompt-tokens", "256", "--output-tokens", "32",
              "--slo-ttft", "1"],
    "plan-train": ["plan", "train", *MODEL, "--gpus", "8", "--seq-len", "2048", "--global-batch-tokens", "65536",
                   "--workers", "1", "--top", "5"],
    "plan-serve": ["plan", "serve", *MODEL, "--max-gpus", "2", "--rate", "2", "--prompt-tokens", "64",
                   "--output-tokens", "8", "--requests", "30", "--screen-requests", "10", "--slo-ttft", "1",
                   "--workers", "1", "--top", "5"],
}


def make_results(folder: Path) -> dict[str, tuple[Path, Path]]:
    """kind -> (saved JSON, the HTML `--report` wrote at run time)."""
    out = {}
    for kind, args in RUNS.items():
        js, page = folder / f"{kind}.json", folder / f"{kind}.html"
        r = run_cli(*args, "--json-out", str(js), "--report", str(page), timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        out[kind] = (js, page)
    return out


def toy_figures(result: dict) -> list:
    """Two figures drawn from the result's own numbers (a line of its numeric top-level values, a bar
    of how many keys it has), so each has real matplotlib paths, clip paths and glyphs."""
    from parasim.report.figures import Figure, new_figure, to_svg

    nums = [float(v) for v in result.values() if isinstance(v, (int, float)) and not isinstance(v, bool)][:20] or [0.0]
    fig = new_figure(6.0, 3.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(range(len(nums)), nums, marker="o", label="values")
    ax.set_xlabel("key index (-)")
    ax.set_ylabel("value (as saved)")
    ax.set_title(f"toy: {result.get('command')}")
    ax.legend()
    line = Figure("numbers <of> the result", to_svg(fig), "what a caption says & why")
    fig2 = new_figure(5.0, 2.6)
    ax2 = fig2.add_subplot(1, 1, 1)
    ax2.bar(["keys", "numbers"], [len(result), len(nums)])
    ax2.set_ylabel("count (-)")
    return [line, Figure("counts", to_svg(fig2), "")]


def use_toy_figures(monkeypatch) -> None:
    """Every kind of result draws the toy figures (the real sets are put back after the test)."""
    from parasim.report import figures
    from parasim.report.headline import RESULT_COMMANDS

    figures._load()
    for command in RESULT_COMMANDS:
        monkeypatch.setitem(figures._SETS, command, toy_figures)
