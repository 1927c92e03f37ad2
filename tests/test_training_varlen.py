"""Variable-length data: length laws, CP zigzag under per-document masks, balancing strategies.

Directions from the papers: ByteScale (arXiv:2502.21231, up to 7.89x), Zeppelin
(arXiv:2509.21841, 2.80x on average) and FlexSP (arXiv:2412.01523, up to 1.98x) all beat static
packing on long-tailed lengths; on equal lengths there is nothing to balance.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.errors import InputError
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.training import TrainingPlan, simulate
from parasim.training.length_dist import SAMPLE_DOCS, load_lengths
from parasim.training.varlen import packed_pieces, piece_pairs, zigzag_pairs
from parasim.training.varlen_balance import STRATEGIES, Pool

H100 = get_accelerator("h100-sxm")
LLAMA8 = get_model("llama-3-8b")
DYNAMIC = ("bytescale", "zeppelin", "flexsp")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "parasim", *args], capture_output=True, text=True, timeout=120)


# --- length laws ------------------------------------------------------------------------------
def test_a_histogram_file_is_sampled_at_its_quantiles(tmp_path):
    f = tmp_path / "hist.csv"
    f.write_text("length,count\n100,3\n8000,1\n")
    docs = load_lengths(str(f))
    assert len(docs) == SAMPLE_DOCS
    assert docs.count(100) == 3 * SAMPLE_DOCS // 4 and docs.count(8000) == SAMPLE_DOCS // 4


def test_a_plain_length_file_keeps_its_order(tmp_path):
    f = tmp_path / "docs.txt"
    f.write_text("5\n9\n2\n")
    assert load_lengths(str(f)) == (5, 9, 2)


def test_named_laws_are_deterministic_and_the_seed_only_reorders():
    a = load_lengths("lognormal:median=2000,sigma=1.5")
    assert a == load_lengths("lognormal:median=2000,sigma=1.5")
    b = load_lengths("lognormal:median=2000,sigma=1.5,seed=7")
    assert a != b and sorted(a) == sorted(b)
    assert sorted(a)[SAMPLE_DOCS // 2] == pytest.approx(2000, rel=0.01)  # the median is the median
    assert load_lengths("fixed:length=4096") == (4096,)
    assert max(load_lengths("pareto:min=100,alpha=1.1,max=50000")) == 50000  # clipped at max


@pytest.mark.parametrize("spec", ["lognormal:sigma=1", "lognormal:median=-5,sigma=1", "lognormal:median=nan,sigma=1",
                                  "lognormal:median=10,sigma=1,mu=3", "pareto:min=10,alpha=0", "fixed:length=0",
                                  "fixed:length=2.5", "lognormal:median=10,sigma=1,seed=-1", "lognormal:median"])
def test_bad_named_laws_name_the_option(spec):
    with pytest.raises(InputError) as e:
        load_lengths(spec)
    assert "seq-len-dist" in e.value.field


# --- CP zigzag with per-document masks ---------------------------------------------------------
def test_zigzag_balances_one_causal_document_exactly():
    assert zigzag_pairs([4096], 4) == [piece_pairs(4096) / 4] * 4


def test_zigzag_is_imbalanced_by_documents_by_hand():
    """seq 8 over cp 2: chunks [0,2) [2,4) [4,6) [6,8); rank 0 holds chunks 0 and 3, rank 1 chunks 1 and 2.
    Documents of 6 and 2 tokens: rank 0 = (1+2) + (1+2), rank 1 = (3+4) + (5+6)."""
    assert zigzag_pairs([6, 2], 2) == [6.0, 18.0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 500), min_size=1, max_size=12), st.sampled_from([1, 2, 4, 8]))
def test_zigzag_conserves_pairs(pieces, cp):
    assert sum(zigzag_pairs(pieces, cp)) == pytest.approx(sum(piece_pairs(p) for p in pieces))


# --- strategies conserve tokens and pairs ------------------------------------------------------
def _pool(lengths, seq_len, dp, cp, mb, m):
    seqs = packed_pieces(tuple(lengths), seq_len, dp * mb * m)
    return Pool(seqs, seq_len, mb, dp, cp, token_s=1e-9, pair_s=1e-12, ring_s=lambda x, c: (c - 1) * x * 1e-10,
                a2a_s=lambda x, c: x * 1e-10 if c > 1 else 0.0, remap_s=lambda x: x * 1e-10, node_ranks=4,
                overlap_slowdown=0.15)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=40), st.sampled_from([1, 2, 4]),
       st.sampled_from([1, 2, 4]), st.sampled_from([1, 2]), st.integers(1, 3), st.sampled_from(sorted(STRATEGIES.names())))
def test_every_strategy_conserves_tokens_and_attention(lengths, dp, cp, mb, m, name):
    seq_len = 1024
    pool = _pool(lengths, seq_len, dp, cp, mb, m)
    loads = STRATEGIES.get(name)().place(pool)
    assert len(loads) == dp * cp
    assert sum(x.tokens for x in loads) == pytest.approx(dp * mb * m * seq_len)
    assert sum(x.pairs for x in loads) == pytest.approx(sum(piece_pairs(p) for s in pool.sequences for p in s))
    assert all(x.tokens >= 0 and x.pairs >= 0 for x in loads)


# --- the step: no gain on equal lengths, gains on long tails ------------------------------------
def _step(spec, balance, *, gpus=64, tp=2, cp=4, seq=32768, gb=64):
    cluster = ClusterSpec(accelerator=H100, gpus=gpus)
    plan = TrainingPlan(tp=tp, cp=cp, dp=gpus // (tp * cp), micro_batch=1, global_batch=gb, seq_len=seq,
                        seq_len_dist=spec, varlen_balance=balance)
    return simulate(LLAMA8, cluster, plan)


def test_equal_lengths_leave_nothing_to_balance():
    plain = simulate(LLAMA8, ClusterSpec(accelerator=H100, gpus=64),
                     TrainingPlan(tp=2, cp=4, dp=8, micro_batch=1, global_batch=64, seq_len=32768)).step_time_s
    for name in ("static", "bytescale", "zeppelin"):  # one document per sequence: the plan's own CP ring
        assert _step("fixed:length=32768", name).step_time_s == pytest.approx(plain, rel=1e-12)
    for name in STRATEGIES.names():  # without CP, equal documents balance themselves
        assert _step("fixed:length=4096", name, cp=1).step_time_s == pytest.approx(
            _step("fixed:length=4096", "static", cp=1).step_time_s, rel=1e-12)


def test_balancing_beats_static_packing_on_long_tailed_lengths():
    """256K sequences over CP 16 (two nodes), lognormal documents (median 8K, sigma 2)."""
    kw = dict(gpus=256, tp=8, cp=16, seq=262144, gb=16)
    static = _step("lognormal:median=8000,sigma=2", "static", **kw)
    assert static.varlen["dp_cp_imbalance"] > 0.2  # zigzag no longer balances packed documents
    for name in DYNAMIC:
        res = _step("lognormal:median=8000,sigma=2", name, **kw)
        assert res.varlen["static_step_time_s"] == pytest.approx(static.step_time_s)
        assert 1.15 < res.varlen["speedup_vs_static"] < 7.89  # ByteScale's largest reported gain
        assert res.varlen["dp_cp_imbalance"] < static.varlen["dp_cp_imbalance"] / 10


# --- CLI ------------------------------------------------------------------------------------------
TRAIN = ("train", "-m", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--cp", "2", "--seq-len", "8192",
         "--global-batch", "8")


@pytest.mark.parametrize("args, field", [
    (("--seq-len-dist", "lognormal:median=2000,sigma=1", "--varlen-balance", "roundrobin"), "varlen-balance"),
    (("--varlen-balance", "bytescale"), "varlen-balance"),
    (("--seq-len-dist", "lognormal:median=2000,sigma=1", "--varlen-balance", ""), "varlen-balance"),
    (("--seq-len-dist", "lognormal:median=2000,sigma=99"), "seq-len-dist"),
    (("--seq-len-dist", "pareto:alpha=1"), "seq-len-dist"),
])
def test_hostile_varlen_options_exit_2_naming_the_option(args, field):
    r = _run(*TRAIN, *args)
    assert r.returncode == 2 and field in r.stderr and "Traceback" not in r.stderr


def test_a_config_file_sets_the_strategy_like_the_flag(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("seq_len_dist: lognormal:median=2000,sigma=1.5\nvarlen_balance: zeppelin\n")
    by_file = json.loads(_run(*TRAIN, "-c", str(cfg), "--json").stdout)
    by_flag = json.loads(_run(*TRAIN, "--seq-len-dist", "lognormal:median=2000,sigma=1.5", "--varlen-balance",
                              "zeppelin", "--json").stdout)
    assert by_file["step_time_s"] == by_flag["step_time_s"]
    assert by_file["plan"]["varlen_balance"] == "zeppelin" and "speedup_vs_static" in by_file["varlen"]


def test_plan_train_searches_every_strategy_and_a_balanced_one_wins():
    r = _run("plan", "train", "-m", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "64", "--seq-len", "32768",
             "--global-batch", "64", "--seq-len-dist", "lognormal:median=2000,sigma=1.5", "--tp", "2", "--cp", "1,4",
             "--pp", "1", "--micro-batch", "1", "--zero", "1", "--recompute", "full", "--json")
    out = json.loads(r.stdout)
    ranked = out["ranked"]
    assert {row["varlen_balance"] for row in ranked} == set(STRATEGIES.names())
    assert len(ranked) == 2 * len(STRATEGIES.names())  # cp 1 and 4, each under every strategy
    assert ranked[0]["varlen_balance"] != "static"
    assert out["baseline"]["varlen_balance"] == "static" and out["baseline"]["seq_len_dist"]
    for row in ranked:  # a row's strategy is what its step was simulated with
        assert row["metrics"]["plan"]["varlen_balance"] == row["varlen_balance"]


def test_plan_train_refuses_a_strategy_without_documents():
    r = _run("plan", "train", "-m", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "64", "--seq-len", "8192",
             "--varlen-balance", "zeppelin")
    assert r.returncode == 2 and "varlen-balance" in r.stderr
