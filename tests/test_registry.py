"""The one registry shape (schedulers, routers, pipeline schedules): unknown names, toy entries
accepted everywhere without other edits, CLI help and docs tables derived from the registries."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO, make_model, run_cli
from parasim.cli.main import main
from parasim.errors import InputError
from parasim.registry import Registry
from parasim.search.space import SERVE_SCHEDULERS, TrainChoices
from parasim.serving.plan import ServingPlan
from parasim.serving.routers import ROUTERS, RoundRobin
from parasim.serving.schedulers import SCHEDULERS
from parasim.serving.schedulers.policies import Continuous
from parasim.training.plan import TrainingPlan
from parasim.training.schedules import SCHEDULES, GPipe, Op, rank_ops

REGISTRIES = {"schedule": SCHEDULES, "scheduler": SCHEDULERS, "router": ROUTERS}


# --- the class itself ---------------------------------------------------------------------------
def test_register_rejects_duplicates_and_nameless_classes_and_unregister_removes():
    reg: Registry = Registry("widget")

    class A:
        name = "a"

    class Nameless:
        name = ""

    assert reg.register(A) is A
    with pytest.raises(ValueError, match="already registered"):
        reg.register(type("B", (), {"name": "a"}))
    with pytest.raises(ValueError, match="name"):
        reg.register(Nameless)
    assert reg.names() == ("a",) and "a" in reg and reg.get("a") is A
    reg.unregister("a")
    assert "a" not in reg and len(reg) == 0


def test_a_near_miss_gets_the_close_match():
    with pytest.raises(InputError) as e:
        SCHEDULERS.get("sarathy")
    assert "did you mean sarathi?" in e.value.message


@given(kind=st.sampled_from(sorted(REGISTRIES)), name=st.text(max_size=24))
@settings(max_examples=80, deadline=None)
def test_unknown_names_name_the_field_and_list_every_allowed_name(kind, name):
    reg = REGISTRIES[kind]
    if name in reg:
        return
    with pytest.raises(InputError) as e:
        reg.get(name)
    assert e.value.field == kind
    allowed = e.value.message.rsplit("allowed: ", 1)[1].split(", ")
    assert allowed == list(reg.names())


@given(name=st.text(min_size=1, max_size=16).filter(lambda s: s not in SCHEDULES and s not in SCHEDULERS
                                                  and s not in ROUTERS))
@settings(max_examples=40, deadline=None)
def test_the_plan_validators_reject_unknown_names_by_field(name):
    fields = []
    for build in (lambda: TrainingPlan(schedule=name, pp=2, global_batch=4).check(make_model()),
                  lambda: ServingPlan(scheduler=name), lambda: ServingPlan(router=name)):
        with pytest.raises(InputError) as e:
            build()
        fields.append(e.value.field)
    assert fields == ["schedule", "scheduler", "router"]


def test_cli_unknown_router_is_one_line_and_exit_2():
    r = run_cli("serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--rate", "1", "--requests", "5",
                "--router", "roundrobin")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"parasim: error: router: unknown router 'roundrobin'; did you mean round_robin?; "
        f"allowed: {', '.join(ROUTERS.names())}"]


# --- a toy entry needs no edit outside its own class ----------------------------------------------
class ToySchedule(GPipe):
    """All forwards, then the backwards in forward order (a valid, different op order)."""

    name = "toy-flush"

    def ops(self, rank: int, pp: int, m: int, v: int) -> list[Op]:
        return [Op("F", j, 0) for j in range(m)] + [Op("B", j, 0) for j in range(m)]


class ToyScheduler(Continuous):
    name = "toy-orca"


class ToyRouter(RoundRobin):
    name = "toy_rr"


@pytest.fixture
def toys():
    for reg, cls in ((SCHEDULES, ToySchedule), (SCHEDULERS, ToyScheduler), (ROUTERS, ToyRouter)):
        reg.register(cls)
    yield
    for reg, cls in ((SCHEDULES, ToySchedule), (SCHEDULERS, ToyScheduler), (ROUTERS, ToyRouter)):
        reg.unregister(cls.name)
    rank_ops.cache_clear()


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_a_toy_schedule_is_validated_planned_and_run(toys, capsys):
    plan = TrainingPlan(schedule="toy-flush", pp=2, global_batch=4).check(make_model())
    assert plan.schedule_name == "toy-flush"
    with pytest.raises(InputError) as e:  # a schedule without chunks, with chunks: its base rule
        TrainingPlan(schedule="toy-flush", pp=2, virtual_stages=2, global_batch=4).check(make_model())
    assert e.value.field == "virtual-stages"
    assert TrainChoices(tp=(1,), cp=(1,), pp=(2,), ep=(1,), virtual_stages=(1, 2),
                        schedules=("toy-flush", "interleaved")).sched_pairs() == [
        ("toy-flush", 1), ("interleaved", 2)]
    code, out, err = _main(capsys, "train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--tp", "2",
                           "--pp", "2", "--global-batch", "16", "--schedule", "toy-flush", "--json")
    assert code == 0, err
    assert json.loads(out)["plan"]["schedule"] == "toy-flush"


def test_a_toy_scheduler_and_router_are_accepted_and_run(toys, capsys):
    code, out, err = _main(capsys, "serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--replicas", "2",
                           "--scheduler", "toy-orca", "--router", "toy_rr", "--rate", "4", "--requests", "40",
                           "--prompt-tokens", "200", "--output-tokens", "20", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["inputs"]["plan"]["scheduler"], result["inputs"]["plan"]["router"]) == ("toy-orca", "toy_rr")
    assert result["summary"]["completed"] == 40


def test_help_lists_the_registries_including_a_new_entry(toys, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    for argv, names in ((("train", "--help"), SCHEDULES.names()), (("plan", "train", "--help"), SCHEDULES.names()),
                        (("serve", "--help"), SCHEDULERS.names() + ROUTERS.names()),
                        (("plan", "serve", "--help"), SCHEDULERS.names())):
        code, out, _ = _main(capsys, *argv)
        assert code == 0
        assert not re.search(r"\{[A-Z_]+\}", out)  # every placeholder filled
        for n in names:
            assert re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", out), (argv, n)


# --- docs tables list exactly the registries ------------------------------------------------------
def _table_names(path: str, heading: str) -> list[str]:
    text = (REPO / path).read_text()
    section = text.split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)


def _row_names(path: str, flag: str) -> list[str]:
    row = next(line for line in (REPO / path).read_text().splitlines() if line.startswith(f"| `{flag}` |"))
    return re.findall(r"`([^`]+)`", row.split("|")[2])


def test_docs_tables_list_exactly_the_registered_names():
    assert _table_names("docs/serving.md", "## Schedulers") == list(SCHEDULERS.names())
    assert _row_names("docs/serving.md", "--scheduler") == list(SCHEDULERS.names())
    assert _row_names("docs/serving.md", "--router") == list(ROUTERS.names())
    assert _table_names("docs/training.md", "## Pipeline schedules") == list(SCHEDULES.names())


def test_the_planners_default_schedulers_are_registered_and_documented():
    assert set(SERVE_SCHEDULERS) <= set(SCHEDULERS.names())
    doc = (REPO / "docs/planner.md").read_text()
    listed = re.search(r"x scheduler \(([^)]*)\)", doc.replace("\n", " ")).group(1)
    assert listed.split(", ") == list(SERVE_SCHEDULERS)
