"""#20 item 1: zero-bubble pipeline schedules (ZB-H1, ZB-H2, ZB-V) and DualPipe.

Bubbles are checked against the papers' closed forms on synthetic op times (no transfer time):
1F1B (p-1)(F+B+W), ZB-H1 (p-1)(F+B-W), ZB-H2 and ZB-V 0 when F = B = W (Qi et al. 2024, Tables
and the ZB-V comparison "bubble rate 0 at 1x memory"); then the published ordering on a simulated
Llama step, the memory walk, the timeline, the CLI contract.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.cost.memory import activation_bytes_per_layer, weight_grad_input_bytes_per_layer, weight_params_per_gpu
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec
from parasim.training import TrainingPlan, simulate
from parasim.training import schedules as S
from parasim.training.step import SplitBackward, run_pipeline

SPLIT = ("zb-h1", "zb-h2", "zb-v", "dualpipe")


def _bubble(name: str, pp: int, m: int, f: float, b: float, w: float, ep: float = 0.0):
    """(bubble, run): the step's span on its critical rank minus the rank's work m(F+B+W); one
    micro-batch's F, B, W are the whole model's share of one rank (a chunk of v is 1/v of it,
    DualPipe's two copies each hold a whole stage)."""
    s = S.get_schedule(S.resolve_name(name, 2 if name == "interleaved" else 1))
    v = s.chunks or (2 if name == "interleaved" else 1)
    per = 1 if s.layout == "mirror" else v
    ops = S.rank_ops(s.name, pp, m, v, S.op_times(f, b, w))
    if s.splits_backward:
        bwd = [[(b / per, ep)] * v for _ in range(pp)]
        split = SplitBackward([[w / per] * v for _ in range(pp)], S.rank_pairs(s.name, pp, m, v),
                              [[ep] * v for _ in range(pp)])
    else:
        bwd, split = [[((b + w) / per, ep)] * v for _ in range(pp)], None
    run = run_pipeline(ops, pp, v, m, [[(f / per, ep)] * v for _ in range(pp)], bwd, 0.0, layout=s.layout, split=split)
    first = run.first_start_s if s.staggered else [0.0] * pp
    span = max(e - s0 for e, s0 in zip(run.end_s, first))
    return span - m * (f + b + w), run


@pytest.mark.parametrize("pp,m", [(4, 8), (4, 16), (8, 16), (8, 32)])
@pytest.mark.parametrize("f,b,w", [(1.0, 1.0, 1.0), (1.0, 1.5, 0.7), (1.0, 2.0, 1.0), (1.0, 1.2, 0.9)])
def test_1f1b_and_zb_h1_bubbles_are_the_closed_forms(pp, m, f, b, w):
    assert _bubble("1f1b", pp, m, f, b, w)[0] == pytest.approx((pp - 1) * (f + b + w))
    assert _bubble("zb-h1", pp, m, f, b, w)[0] == pytest.approx((pp - 1) * (f + b - w))


@pytest.mark.parametrize("pp,m", [(4, 8), (4, 16), (8, 16), (8, 32), (16, 64)])
def test_zb_h2_and_zb_v_have_no_bubble_when_f_b_w_are_equal(pp, m):
    for name in ("zb-h2", "zb-v"):
        assert _bubble(name, pp, m, 1.0, 1.0, 1.0)[0] == pytest.approx(0.0, abs=1e-9)
    # ZB-H1 keeps a third of 1F1B's: (p-1) against 3(p-1)
    assert _bubble("zb-h1", pp, m, 1.0, 1.0, 1.0)[0] == pytest.approx(_bubble("1f1b", pp, m, 1.0, 1.0, 1.0)[0] / 3)


@pytest.mark.parametrize("pp,m", [(4, 8), (8, 32), (16, 64)])
@pytest.mark.parametrize("f,b,w", [(1.0, 1.0, 1.0), (1.0, 1.2, 0.9), (1.0, 1.5, 0.7)])
def test_bubble_ordering_1f1b_zb_h1_zb_h2_and_dualpipe(pp, m, f, b, w):
    one, h1, h2 = (_bubble(n, pp, m, f, b, w)[0] for n in ("1f1b", "zb-h1", "zb-h2"))
    assert one > h1 >= h2 - 1e-9
    dual = _bubble("dualpipe", pp, m, f, b, w)[0]
    assert dual < one
    # DeepSeek-V3 Table 2: DualPipe's bubble (p/2 - 1)(F&B + B - 3W), here F&B = F + B (no overlap
    # to gain without communication); the order leaves at most (p/2 - 1) F more
    assert dual <= (pp / 2 - 1) * (f + 2 * b - 3 * w) + (pp / 2 - 1) * f + 1e-9


@pytest.mark.parametrize("pp,m", [(4, 8), (8, 32), (16, 64)])
def test_zb_v_bubble_below_interleaved_at_one_f1b_memory(pp, m):
    for f, b, w in ((1.0, 1.0, 1.0), (1.0, 1.2, 0.9)):
        assert _bubble("zb-v", pp, m, f, b, w)[0] < _bubble("interleaved", pp, m, f, b, w)[0]


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(SPLIT), half_pp=st.integers(1, 6), extra=st.integers(0, 24),
       times=st.tuples(st.floats(0.3, 3.0), st.floats(0.3, 3.0), st.floats(0.1, 3.0)))
def test_every_f_b_w_runs_once_per_micro_batch_and_chunk(name, half_pp, extra, times):
    s = S.get_schedule(name)
    pp = 2 * half_pp if name == "dualpipe" else half_pp + 1
    v = s.chunks or 1
    m = max(pp * 2, 2) + 2 * extra if name == "dualpipe" else 1 + extra
    ops = S.rank_ops(name, pp, m, v, S.op_times(*times))
    for rank, row in enumerate(ops):
        counts = Counter(row)
        assert set(counts.values()) == {1}
        expect = {(k, j, c) for k in "FBW" for j in range(m) for c in range(v)}
        if s.layout == "mirror":  # each micro-batch travels one way: down (chunk 0) or up (chunk 1)
            expect = {(k, j, c) for k, j, c in expect if c == (j >= m // 2)}
        assert {tuple(o) for o in row} == expect
        # a B after its F, a W after its B, on the rank
        pos = {tuple(o): i for i, o in enumerate(row)}
        assert all(pos[("F", j, c)] < pos[("B", j, c)] < pos[("W", j, c)] for _, j, c in expect)
    run = run_pipeline(ops, pp, v, m, [[(times[0], 0.0)] * v] * pp, [[(times[1], 0.0)] * v] * pp, 0.0,
                       layout=s.layout, split=SplitBackward([[times[2]] * v] * pp, S.rank_pairs(name, pp, m, v)))
    assert len(run.end_s) == pp  # ran to the end: no deadlock


def test_dualpipe_pairs_hide_each_others_expert_all_to_all():
    """An overlapped F&B pair hides each op's all-to-all behind the other's compute, less the
    OVERLAP_SLOWDOWN it costs: exposed comm falls by 2 x 0.85 x min(ep, compute) per pair."""
    from parasim.training.step import OVERLAP_SLOWDOWN

    pp, m, ep = 4, 16, 0.3
    _, paired = _bubble("dualpipe", pp, m, 1.0, 1.0, 1.0, ep=ep)
    pairs = S.rank_pairs("dualpipe", pp, m, 2)
    for r in range(pp):
        n_ops = 2 * m  # m/2 micro-batches per direction, each an F and a B carrying comm
        assert paired.busy_comm_s[r] == pytest.approx(n_ops * ep - 2 * len(pairs[r]) * ep * (1 - OVERLAP_SLOWDOWN))
    assert all(len(p) > 0 for p in pairs)


LLAMA = get_model("llama-3-70b")
H100 = ClusterSpec(accelerator=get_accelerator("h100-sxm"), gpus=64)


def _sim(schedule: str, **kw):
    base = dict(tp=8, pp=8, dp=1, micro_batch=1, global_batch=32, seq_len=4096, sequence_parallel=True,
                schedule=schedule, virtual_stages=S.get_schedule(schedule).chunks or kw.pop("v", 1))
    return simulate(LLAMA, H100, TrainingPlan(**{**base, **kw}).check(LLAMA, 64))


def test_simulated_step_ordering_throughput_and_memory():
    """ZB paper: throughput ZB-H2 >= ZB-H1 >= 1F1B; memory ZB-H1 ~ 1F1B < ZB-H2 (2p-1 micro-batches).
    ZB-H1's layers hold what 1F1B's rank 0 holds (p micro-batches on every rank); the last stage
    also keeps each deferred micro-batch's logits for the LM head's W, hence the 25 % allowance."""
    one, h1, h2 = _sim("1f1b"), _sim("zb-h1"), _sim("zb-h2")
    assert h2.step_time_s <= h1.step_time_s < one.step_time_s
    assert h1.breakdown["bubble"] < one.breakdown["bubble"]
    assert h1.memory["activations_gib"] <= 1.25 * one.memory["activations_gib"]
    assert h2.memory["activations_gib"] > 1.5 * one.memory["activations_gib"]
    # same work: the split moves weight-gradient work, it does not add any
    assert h1.breakdown["compute"] == pytest.approx(one.breakdown["compute"], rel=1e-9)


def test_simulated_zb_v_beats_interleaved_at_about_its_memory():
    zbv, inter = _sim("zb-v"), _sim("interleaved", v=2)
    assert zbv.breakdown["bubble"] < inter.breakdown["bubble"]
    assert zbv.memory["activations_gib"] <= 1.05 * inter.memory["activations_gib"]


def test_dualpipe_holds_two_copies_of_the_parameters():
    """Summed over ranks, DualPipe holds the model twice (rank r: stage r and stage pp-1-r)."""
    model = get_model("llama-3-8b")
    pp = 4
    one = sum(weight_params_per_gpu(model, pp=pp, stage=r) for r in range(pp))
    two = sum(weight_params_per_gpu(model, pp=pp, stage=r, virtual_stages=2, layout="mirror") for r in range(pp))
    assert two == pytest.approx(2 * one, rel=1e-12)
    res = _sim("dualpipe")
    plain = _sim("1f1b")
    assert res.memory["weights_gib"] > 1.9 * plain.memory["weights_gib"]


def test_weight_gradient_inputs_are_the_papers_32sbh_for_a_gpt_layer():
    """GPT-3 (ffn = 4h, plain MLP): M_W = 32 s b h bytes (Qi et al. 2024, Table 1), below the
    34 s b h of the activations B needs (M_B, FlashAttention: no score matrix)."""
    gpt = get_model("gpt-3-175b")
    s, b, h = 2048, 1, gpt.hidden
    assert weight_grad_input_bytes_per_layer(gpt, seq=s, micro_batch=b) == pytest.approx(32 * s * b * h)
    assert weight_grad_input_bytes_per_layer(gpt, seq=s, micro_batch=b) < activation_bytes_per_layer(gpt, seq=s,
                                                                                                    micro_batch=b)


def test_timeline_has_one_w_span_per_micro_batch_and_chunk():
    from parasim.training.timeline import build
    from parasim.training.step import simulate_step

    for name in SPLIT:
        plan = TrainingPlan(tp=8, pp=8, dp=1, global_batch=32, seq_len=4096, sequence_parallel=True, schedule=name,
                            virtual_stages=S.get_schedule(name).chunks or 1)
        rec = []
        timing = simulate_step(LLAMA, H100, plan, recorder=rec)
        tl = build(LLAMA, plan, timing, rec)
        for stage in tl["stages"]:
            kinds = Counter(sp[0] for sp in stage["spans"])
            # DualPipe: each micro-batch passes a rank once (one direction); the others once per chunk
            per_rank = plan.micro_batches * (1 if name == "dualpipe" else plan.virtual_stages)
            assert kinds["W"] == kinds["F"] == kinds["B"] == per_rank
        ends = max(sp[1] + sp[2] for stg in tl["stages"] for sp in stg["spans"])
        if not S.get_schedule(name).staggered:  # the trace spans the step
            assert ends == pytest.approx(timing.step_s, rel=1e-6)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "parasim", "train", "-m", "llama-3-8b", "--gpu", "h100-sxm",
                           "--gpus", "8", "--pp", "4", "--global-batch", "16", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_zb_v_implies_two_virtual_stages_and_keeps_the_bubble_key():
    out = _cli("--schedule", "zb-v", "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["plan"]["virtual_stages"] == 2 and d["plan"]["schedule"] == "zb-v"
    assert d["defaults"]["virtual_stages"] == 2
    assert "bubble" in d["breakdown"]


def test_cli_refuses_other_virtual_stages_and_odd_dualpipe():
    out = _cli("--schedule", "dualpipe", "--virtual-stages", "3")
    assert out.returncode == 2 and "virtual-stages" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "parasim", "train", "-m", "llama-3-8b", "--gpu", "h100-sxm",
                          "--gpus", "6", "--pp", "3", "--global-batch", "12", "--schedule", "dualpipe"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "pp" in out.stderr and "Traceback" not in out.stderr


def test_plan_train_space_searches_the_new_schedules_with_their_chunk_counts():
    from parasim.search.space import TrainChoices

    c = TrainChoices(tp=(1,), cp=(1,), pp=(4,), ep=(1,))
    pairs = c.sched_pairs()
    for name in SPLIT:
        vs = {v for s, v in pairs if s == name}
        assert vs == {S.get_schedule(name).chunks or 1}
    assert {v for s, v in pairs if s == "interleaved"} == {2, 3, 4, 6, 8}
