"""`plan serve`'s goodput bound skips GPU-count waves by screened goodputs; where the full-size
winner does not beat the skipped layouts' ceiling, they are screened after all, so the bound can
never change the answer. Checked against a search run without the bound."""

from __future__ import annotations

from parasim.search import plan_serve as ps

REQ = dict(model="llama-3-8b", gpu=("h100-sxm",), max_gpus=4, rate=6.0, prompt_tokens=1000, output_tokens=200,
           slo_ttft=2.0, slo_tpot=0.1, requests=300, screen_requests=150, schedulers=("sarathi",), pp=(1,),
           precisions=(("bf16", None),), token_budgets=(2048,), max_batches=(256,), workers=1)


def _winner(out: dict) -> tuple:
    return ps.plan_key(out["best"]), out["best"]["goodput_per_gpu"]


def test_a_bound_that_cannot_be_proven_rescreens_to_the_unbounded_answer(monkeypatch):
    real = ps._max_goodput_rps
    calls = []

    def screen_bound_then_no_bound(wl, step_s):
        calls.append(len(wl))
        # the screen's bound as computed; the whole workload's made unprovable (infinite ceiling)
        return real(wl, step_s) if len(calls) == 1 else float("inf")

    monkeypatch.setattr(ps, "_max_goodput_rps", screen_bound_then_no_bound)
    bounded = ps.run_search(ps.ServeSearch(**REQ))
    check = bounded["stages"]["goodput_bound"]
    assert check["winner_above"] is False and check["rescreened"] == check["skipped"] > 0
    assert "goodput_bound" not in bounded["pruned"]  # every skipped layout ran after all

    monkeypatch.setattr(ps, "_max_goodput_rps", lambda wl, step_s: float("inf"))  # no bound at all
    unbounded = ps.run_search(ps.ServeSearch(**REQ))
    assert unbounded["stages"]["goodput_bound"] is None
    assert _winner(bounded) == _winner(unbounded)


def test_the_bound_is_an_upper_bound_on_goodput():
    """No plan completes requests faster than the bound allows: every full-size plan's goodput per
    GPU stays at or below the whole workload's bound over its GPUs."""
    out = ps.run_search(ps.ServeSearch(**REQ))
    check = out["stages"]["goodput_bound"]
    assert check is not None and check["skipped"] > 0  # this search does skip waves
    full_max_rps = check["ceiling_per_gpu"] * check["fewest_gpus"]
    rows = [r for r in out["ranked"] if r["fidelity"] == "full"]
    assert rows
    for row in rows:
        assert row["goodput_per_gpu"] <= full_max_rps / row["gpus"] * (1 + 1e-12)
