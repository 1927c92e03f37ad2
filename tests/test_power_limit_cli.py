"""`--power-limit-w` on `parasim train` and `parasim plan train` (issue 18 item 1: sustained clocks
under a stated power limit), through the CLI in subprocesses.

* a limit equal to the part's rated TDP changes nothing but the keys that state it;
* a lower one slows the step in the law's direction and by no more than the clock it implies,
  the clock factor derived here by hand from the law's definition;
* the winner of `plan train --power-limit-w W` is what `train --power-limit-w W` gives its layout;
* hostile values, as flags and as `-c` keys, exit 2 in one line naming the option; on a mixed
  cluster every part's own range is checked.
"""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_cli
from test_hostile_cli import _run as run_in_process

TRAIN = ["train", "-m", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--json"]
#: the H100 SXM's catalog figures (specs/data/accelerators.yaml): rated TDP and idle draw
H100_TDP_W, H100_IDLE_W = 700.0, 90.0
POWER_KEYS = ("power_limit_w", "power_limit_clock_ratio")


def _json(proc) -> dict:
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def _clock_by_hand(limit_w: float, n: float) -> float:
    """The clock f / f_rated at which idle + (TDP - idle) (f / f_rated)^n equals the limit."""
    return ((limit_w - H100_IDLE_W) / (H100_TDP_W - H100_IDLE_W)) ** (1.0 / n)


def test_limit_at_the_rated_tdp_changes_nothing():
    plain = _json(run_cli(*TRAIN))
    capped = _json(run_cli(*TRAIN, "--power-limit-w", str(H100_TDP_W)))
    assert capped["power_limit_w"] == H100_TDP_W and capped["power_limit_clock_ratio"] == {"h100-sxm": 1.0}
    assert {k: v for k, v in capped.items() if k not in POWER_KEYS} == plain
    assert not set(POWER_KEYS) & set(plain)


def test_lower_limit_slows_the_step_by_at_most_the_clock():
    from parasim.specs.accelerator import POWER_CLOCK_EXPONENT

    plain = _json(run_cli(*TRAIN))
    capped = _json(run_cli(*TRAIN, "--power-limit-w", "500"))
    f = _clock_by_hand(500.0, POWER_CLOCK_EXPONENT)
    assert capped["power_limit_clock_ratio"]["h100-sxm"] == pytest.approx(f, rel=1e-12)
    # compute-bound work slows by 1/f, memory-bound work and the network not at all
    assert plain["step_time_s"] < capped["step_time_s"] <= plain["step_time_s"] / f * (1 + 1e-9)
    assert capped["breakdown"]["compute"] > plain["breakdown"]["compute"]
    assert capped["memory"] == plain["memory"]


def test_table_states_the_clock():
    out = run_cli(*TRAIN[:-1], "--power-limit-w", "500")
    assert out.returncode == 0, out.stderr
    assert "power limit 500 W: sustained clock 0.74 of rated (h100-sxm)" in out.stdout


def test_config_key_equals_the_flag(tmp_path):
    cfg = tmp_path / "power.yaml"
    cfg.write_text(yaml.safe_dump({"power_limit_w": 450}))
    assert _json(run_cli(*TRAIN, "-c", str(cfg))) == _json(run_cli(*TRAIN, "--power-limit-w", "450"))


def test_plan_train_winner_matches_train_with_the_same_limit(tmp_path):
    from test_plan_train_stack import BASE, _train_argv

    limit = ["--power-limit-w", "450"]
    plan = _json(run_cli(*BASE, "--gpus", "8", "--zero", "1", *limit, "--json"))
    assert plan["node"] == {"power_limit_w": 450.0}
    best = plan["best"]
    train = _json(run_cli(*_train_argv(best, best["gpus"]), *limit, "--json"))
    assert train["step_time_s"] == best["metrics"]["step_time_s"]
    plain = _json(run_cli(*_train_argv(best, best["gpus"]), "--json"))
    assert plain["step_time_s"] < train["step_time_s"]
    emitted = tmp_path / "best.yaml"  # the winner's config keeps the limit
    assert run_cli(*BASE, "--gpus", "8", "--zero", "1", *limit, "--emit-yaml", str(emitted)).returncode == 0
    assert yaml.safe_load(emitted.read_text())["power_limit_w"] == 450.0


# --- hostile values ------------------------------------------------------------------------------
QUICK_TRAIN = ["train", "-m", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "8"]
QUICK_PLAN = ["plan", "train", "-m", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--seq-len", "2048",
              "--global-batch", "16", "--workers", "1"]
#: not finite, not positive, past any board, not a number, above the rated TDP, at and below idle
HOSTILE = ["nan", "inf", "-1", "0", "1e9", "watts", str(H100_TDP_W + 1), str(H100_IDLE_W), "45"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.sampled_from(HOSTILE), base=st.sampled_from([QUICK_TRAIN, QUICK_PLAN]), as_config=st.booleans())
def test_hostile_limit_exits_2_naming_the_option(tmp_path_factory, value, base, as_config):
    argv = [*base, "--power-limit-w", value]
    if as_config:
        path = tmp_path_factory.mktemp("cfg") / "power.yaml"
        path.write_text(f"power_limit_w: {value}\n")
        argv = [*base, "-c", str(path)]
    code, _, err = run_in_process(argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("parasim: error: ") and "Traceback" not in err
    assert "power-limit-w" in lines[0] or "power_limit_w" in lines[0], err


@pytest.mark.parametrize("base", [QUICK_TRAIN[:3], QUICK_PLAN[:4] + QUICK_PLAN[8:]], ids=["train", "plan-train"])
def test_mixed_cluster_checks_each_part(base):
    """450 W is inside the H100 SXM's range but above the A100's 400 W rated TDP: refused, naming it."""
    code, _, err = run_in_process([*base, "--gpu", "h100-sxm:8,a100-sxm-80gb:8", "--power-limit-w", "450"])
    assert code == 2, err
    assert "power-limit-w" in err and "a100-sxm-80gb" in err and "400]" in err
