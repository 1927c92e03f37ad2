"""`plan train` with a token budget: each plan runs the batch nearest it that its layout can split.

The README's example (16,000,000 tokens at 8192 = 1953.125 sequences) used to round to 1953
sequences, which no DP degree of 16,384 GPUs divides, so nothing was evaluated.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parasim.errors import InputError
from parasim.search.plan_train import cluster_for
from parasim.search.prune import REASONS, Pruned
from parasim.search.space import default_train_choices, enumerate_train
from parasim.specs.catalog import get_model
from tests.conftest import run_cli

README = ["plan", "train", "--model", "llama-3.1-405b", "--gpu", "h100-sxm", "--gpus", "16384",
          "--global-batch-tokens", "16000000", "--seq-len", "8192"]


def nearest_by_scan(tokens: int, seq_len: int, granule: int) -> int:
    """Every multiple of the granule up to one past the budget, nearest first, smaller on a tie."""
    top = tokens // seq_len // granule + 2
    return min((k * granule for k in range(1, top + 1)), key=lambda b: (abs(b * seq_len - tokens), b))


def _target(**kw):
    from parasim.search.train_batch import BatchTarget  # imported late: the CLI tests also run on older code

    return BatchTarget(**kw)


def test_readme_budget_by_hand():
    from parasim.search.train_batch import BatchTarget

    # 16e6 / 8192 = 1953.125 sequences: DP 128 splits 1920 (-1.7 %) or 2048 (+4.9 %); interleaved
    # over 16 stages needs multiples of 128*16 = 2048
    t = BatchTarget.from_request(seq_len=8192, global_batch=None, global_batch_tokens=16_000_000, tolerance=None)
    assert t.tolerance == 0.05
    assert t.pick(128) == 1920
    assert t.pick(128 * 16) == 2048
    assert t.pick(1) == 1953
    tight = _target(seq_len=8192, tokens=16_000_000, tolerance=0.04)
    assert tight.pick(128) == 1920 and tight.pick(2048) is None


@given(tokens=st.integers(1, 10**9), seq_len=st.integers(1, 2**17), granule=st.integers(1, 4096),
       tol=st.floats(0, 0.5))
def test_pick_is_the_nearest_multiple_within_the_tolerance(tokens, seq_len, granule, tol):
    if tokens < seq_len:
        tokens = seq_len
    t = _target(seq_len=seq_len, tokens=tokens, tolerance=tol)
    got = t.pick(granule)
    best = nearest_by_scan(tokens, seq_len, granule) if tokens // seq_len // granule < 10**4 else None
    if best is None:  # too many multiples to scan: check local optimality instead
        if got is not None:
            assert got % granule == 0 and abs(got * seq_len - tokens) <= tol * tokens
            for other in (got - granule, got + granule):
                if other >= granule:
                    assert abs(other * seq_len - tokens) >= abs(got * seq_len - tokens)
        return
    if abs(best * seq_len - tokens) <= tol * tokens:
        assert got == best
    else:
        assert got is None


@given(seqs=st.integers(1, 10**6), granule=st.integers(1, 4096))
def test_an_exact_global_batch_is_never_moved(seqs, granule):
    t = _target(seq_len=4096, sequences=seqs)
    assert t.pick(granule) == (seqs if seqs % granule == 0 else None)


def test_enumeration_counts_add_up_and_every_batch_is_splittable_and_near_the_budget():
    model = get_model("llama-3.1-405b")
    cluster = cluster_for("h100-sxm", 16384)
    choices = default_train_choices(model, cluster, 8192)
    t = _target(seq_len=8192, tokens=16_000_000, tolerance=0.05)
    pruned = Pruned()
    found = list(enumerate_train(model, cluster, batch=t, seq_len=8192, choices=choices, pruned=pruned))
    assert found
    assert len(found) + sum(pruned.values()) == choices.size
    assert set(pruned) <= set(REASONS)
    for d in found:
        granule = d["dp"] * d["micro_batch"] * (d["pp"] if d["schedule"] == "interleaved" else 1)
        assert d["global_batch"] % granule == 0
        assert abs(d["global_batch"] * 8192 - 16_000_000) <= 0.05 * 16_000_000
    # the Llama 3 paper's layout survives enumeration, interleaved at 2048 sequences
    assert any((d["tp"], d["pp"], d["dp"], d["schedule"], d["global_batch"]) == (8, 16, 128, "interleaved", 2048)
               for d in found)


def test_readme_example_ranks_plans_with_the_llama3_layout():
    # the whole space runs in the README tour test (exit 0); here PP 16 only, to keep it short
    r = run_cli(*README, "--json", "--workers", "2", "--pp", "16")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ranked"] and out["best"] == out["ranked"][0]
    assert (out["global_batch_tokens"], out["global_batch"], out["batch_tolerance"]) == (16_000_000, None, 0.05)
    assert out["defaults"] == {"batch_tolerance": 0.05}
    for row in out["ranked"]:
        assert row["global_batch_tokens"] == row["global_batch"] * 8192
        assert abs(row["global_batch_tokens"] - 16_000_000) <= 0.05 * 16_000_000
    assert any((r["tp"], r["pp"], r["dp"]) == (8, 16, 128) for r in out["ranked"])


def test_table_shows_the_batch_rule_and_a_gb_column():
    r = run_cli(*README, "--workers", "2", "--tp", "8", "--pp", "16", "--top", "3")
    assert r.returncode == 0, r.stderr
    assert " gb " in r.stdout and "--batch-tolerance 0.05" in r.stdout and "16,000,000 tokens" in r.stdout


def test_nothing_within_the_tolerance_is_exit_1_and_says_why():
    # a zero tolerance asks for exactly 1953.125 sequences: no plan can run that
    r = run_cli(*README, "--batch-tolerance", "0", "--json")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["best"] is None and out["pruned"] == {"batch_divisibility": out["space_size"]}


@pytest.mark.parametrize("extra,field", [
    (["--batch-tolerance", "0.6"], "batch-tolerance"),
    (["--batch-tolerance", "nan"], "batch-tolerance"),
    (["--batch-tolerance", "-0.1"], "batch-tolerance"),
])
def test_bad_tolerance_exits_2_naming_it(extra, field):
    r = run_cli(*README, *extra)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in r.stderr


def test_tolerance_with_an_exact_batch_is_an_input_error_not_ignored():
    from parasim.search.train_batch import BatchTarget

    with pytest.raises(InputError) as e:
        BatchTarget.from_request(seq_len=8192, global_batch=2048, global_batch_tokens=None, tolerance=0.1)
    assert e.value.field == "batch-tolerance"
    r = run_cli("plan", "train", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--gpus", "8", "--global-batch",
                "64", "--seq-len", "4096", "--batch-tolerance", "0.1")
    assert r.returncode == 2 and "batch-tolerance" in r.stderr
