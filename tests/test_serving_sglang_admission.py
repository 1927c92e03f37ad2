"""SGLang's admission (`kv_reservation` estimated): the PrefillAdder rule worked by hand, the
decoders' remaining-output sum against a brute-force count, and the SGLang profile's choice."""

from __future__ import annotations

from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as hst

from parasim.serving import ServingPlan, generate, simulate
from parasim.serving.engine import Instance
from parasim.serving.kvcache import KVPool
from parasim.serving.reqstate import DECODE, ReqState
from parasim.serving.schedulers.policies import SGLang
from parasim.serving.simulate import iteration_cost
from parasim.specs.catalog import get_accelerator, get_model
from parasim.specs.cluster import ClusterSpec

MODEL = get_model("llama-3-8b")
H100 = get_accelerator("h100-sxm")


def _instance(capacity: int, prompts: list[int], outputs: list[int], *, estimated: bool) -> Instance:
    n = len(prompts)
    st = ReqState([0.0] * n, prompts, outputs, [-1] * n, [0] * n)
    cost = iteration_cost(MODEL, ClusterSpec(accelerator=H100, gpus=1), ServingPlan(scheduler="sglang").resolved(MODEL),
                          tp=1, pp=1)
    inst = Instance(0, replica=0, role="mixed", cost=cost, kv=KVPool(capacity, 1), scheduler=SGLang(8192, 256),
                    st=st, reserve_full=False, gpus=1, reserve_estimated=estimated)
    for rid in range(n):
        st.instance[rid] = 0  # routed here
    inst.waiting = deque(range(n))
    return inst


def test_admission_books_prompt_and_output_by_hand():
    """1,000 free tokens, prompts of 300 with 100 output tokens, nothing running: SGLang admits a
    prompt while prompt + output < what is left, and each admitted one books 300 + 100, so
    400 < 1000 (admit, 600 left), 400 < 600 (admit, 200 left), 400 >= 200 (stop): two. Admitting
    on the prompt alone (vLLM's rule, 1 % watermark = 10 blocks) takes three (900 + 10 <= 1000)."""
    sched = SGLang(8192, 256)
    est = _instance(1000, [300] * 5, [100] * 5, estimated=True)
    inc = _instance(1000, [300] * 5, [100] * 5, estimated=False)
    assert sched.schedule(est).admit == 2
    assert sched.schedule(inc).admit == 3


def test_running_requests_book_their_output_at_the_ratio():
    """Four decoders with 500 tokens still to make at new_token_ratio 0.7 book 4 x 500 x 0.7 =
    1,400 tokens; with 2,000 free, a 300 + 100 prompt fits (400 < 600) and a second does not
    (400 >= 200)."""
    inst = _instance(3000, [100] * 4 + [300] * 2, [600] * 4 + [100] * 2, estimated=True)
    st = inst.st
    inst.waiting = deque([4, 5])
    for rid in range(4):  # 100 tokens cached each, 100 of 600 emitted: 500 to go
        st.state[rid] = DECODE
        st.emitted[rid] = 100
        inst.kv.alloc(100)
        inst._become_decoder(rid, 100)
    inst.kv.alloc(inst.kv.free - 2000)  # 2,000 tokens free
    assert inst.decode_tokens_left() == 4 * 500
    assert abs(inst.new_token_ratio() - 0.7) < 1e-12
    assert SGLang(8192, 256).schedule(inst).admit == 1


@settings(max_examples=25, deadline=None)
@given(hst.lists(hst.tuples(hst.integers(1, 400), hst.integers(2, 300)), min_size=1, max_size=25),
       hst.integers(200, 3000))
def test_decode_tokens_left_matches_a_brute_force_count(reqs, capacity):
    """Through a whole run (joins, finishes, retractions), the O(1) sum equals the decoders'
    output_tokens - tokens emitted so far, counted one by one."""
    prompts = [p for p, _ in reqs]
    outputs = [o for _, o in reqs]
    capacity = max(capacity, max(p + o for p, o in reqs) + 1)
    inst = _instance(capacity, prompts, outputs, estimated=True)
    st = inst.st
    sched = inst.sched
    done = []
    t = 0.0
    for _ in range(20_000):
        if not (inst.waiting or inst.prefilling or inst.n_dec):
            break
        b = sched.schedule(inst)
        t += inst.start(b, t)
        inst.end(b, t, lambda rid, tt, what: done.append(rid))
        brute = sum(st.output_tokens[r] - (st.emitted[r] + inst.decode_step - st.join_step[r])
                    for r in range(st.n) if st.state[r] == DECODE)
        assert inst.decode_tokens_left() == brute
        assert 0.098 - 1e-12 <= inst.new_token_ratio() <= 1.0
    assert sorted(done) == list(range(st.n))


def test_sglang_profile_admits_with_the_estimate():
    from parasim.engines.apply import engine_defaults

    wl = generate(requests=40, burst=True, prompt_tokens=2000, output_tokens=200, seed=1)
    _, fields, _ = engine_defaults("sglang==0.3.0", MODEL, H100, {"tp": 1}, wl)
    assert fields["kv_reservation"] == "estimated"
    plan = ServingPlan(**{k: v for k, v in fields.items() if k in ServingPlan.__dataclass_fields__}, tp=1)
    res = simulate(MODEL, ClusterSpec(accelerator=H100, gpus=1), plan, wl)
    assert res.summary["completed"] == 40


def test_retraction_leaves_twenty_tokens_per_remaining_request():
    """Four decoders of 10 cached tokens, 2 tokens free, one new token each next step (page 1).
    Retracting the latest frees 10: the step fits (3 <= 12), which is where the vLLM rule stops.
    SGLang's retract_decode goes on until 20 tokens per remaining request are free: 12 < 60,
    22 < 40, 32 >= 20, so three are retracted."""
    def decoders(estimated: bool) -> Instance:
        inst = _instance(42, [10] * 4, [600] * 4, estimated=estimated)
        inst.waiting = deque()
        for rid in range(4):
            inst.st.state[rid] = DECODE
            inst.st.emitted[rid] = 1
            inst.kv.alloc(10)
            inst._become_decoder(rid, 10)
        return inst

    assert len(SGLang(8192, 256).decode_victims(decoders(True))[0]) == 3
    assert len(SGLang(8192, 256).decode_victims(decoders(False))[0]) == 1
