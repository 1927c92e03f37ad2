"""`plan train --reference`: unnamed fields are filled the way the search fills them, and the
resolution is reported; a bad reference is exit 2 naming the key."""

from __future__ import annotations

import pytest

from parasim.errors import InputError
from parasim.search.plan_train import TrainSearch, run_search
from tests.conftest import run_cli

SMALL = dict(model="llama-3.1-8b", gpu=("h100-sxm",), gpus=(64,), seq_len=4096, global_batch=128, workers=1,
             choices={"zero": (1, 3), "micro_batch": (1, 2), "tp": (1, 2, 4)})


def _search(reference: dict) -> dict:
    return run_search(TrainSearch(**SMALL, reference=reference))


def test_a_partial_reference_is_the_best_ranked_plan_with_those_fields():
    out = _search({"tp": 2, "pp": 2})
    ref = out["reference"]
    # independently: the first ranked row with tp 2 and pp 2
    first = next(r for r in out["ranked"] if (r["tp"], r["pp"]) == (2, 2))
    assert ref["in_ranking"] and ref["rank"] == first["rank"]
    assert ref["metrics"]["step_time_s"] == first["metrics"]["step_time_s"]
    assert ref["given"] == {"tp": 2, "pp": 2}
    assert ref["filled"]["virtual_stages"] == first["virtual_stages"] and "tp" not in ref["filled"]
    assert "best ranked plan" in ref["filled_by"]


def test_a_reference_outside_the_space_gets_trains_defaults_and_where_it_would_rank():
    out = _search({"tp": 8, "pp": 1})  # the space holds tp 1, 2, 4 only
    ref = out["reference"]
    assert not ref["in_ranking"] and "defaults" in ref["filled_by"]
    # parasim train's defaults: SP on with TP, micro-batch 1, 1F1B, ZeRO 1, no recompute, bf16
    assert (ref["sequence_parallel"], ref["micro_batch"], ref["virtual_stages"], ref["zero"], ref["recompute"],
            ref["precision"], ref["dp"], ref["global_batch"]) == (True, 1, 1, 1, "none", "bf16", 8, 128)
    assert ref["feasible"] is True
    tps = ref["metrics"]["tokens_per_s"]
    assert ref["rank"] == 1 + sum(1 for r in out["ranked"] if r["metrics"]["tokens_per_s"] >= tps)
    assert all(r["tp"] != 8 for r in out["ranked"])  # it did not enter the ranking


def test_a_reference_whose_batch_no_layout_splits_says_so():
    out = _search({"tp": 1, "pp": 1, "micro_batch": 4})  # dp 64 x mb 4 = 256 does not divide 128
    ref = out["reference"]
    assert ref["rank"] is None and ref["reason"] == "batch_divisibility"


@pytest.mark.parametrize("spec,key", [({"tp": "abc"}, "tp"), ({"foo": 1}, "foo"), ({"zero": 5}, "zero"),
                                      ({"recompute": "some"}, "recompute"), ({"gpus": 32}, "gpus"),
                                      ({"sequence_parallel": "maybe"}, "sequence_parallel")])
def test_bad_reference_fields_are_input_errors_naming_the_key(spec, key):
    with pytest.raises(InputError) as e:
        _search(spec)
    assert e.value.field == "reference" and key in e.value.message


@pytest.mark.parametrize("spec,key", [("tp=abc", "tp"), ("tp=8,bogus=1", "bogus")])
def test_bad_reference_through_the_cli_is_exit_2(spec, key):
    r = run_cli("plan", "train", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--gpus", "8", "--global-batch", "8",
                "--seq-len", "2048", "--reference", spec)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "reference" in lines[0] and key in lines[0] and "Traceback" not in r.stderr


def test_the_table_prints_what_the_reference_resolved_to():
    r = run_cli("plan", "train", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--gpus", "64", "--global-batch",
                "128", "--seq-len", "4096", "--tp", "1,2", "--zero", "1", "--micro-batch", "1", "--workers", "1",
                "--reference", "tp=2,pp=2")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "reference plan tp=2,pp=2: rank" in text and "filled from the best ranked plan" in text
