"""Hostile values for every option of every command and every key of a -c config file.

The options are found by walking the CLI's own parameters, so a new option is fuzzed (and must
have a rule in cli.limits) without touching this file. Each bad value must end as exit 2 with one
line `parasim: error: ...` naming the option, and no traceback; output paths that cannot be
written end as exit 1 with the path and the reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import typing
from pathlib import Path

import pytest
import typer.main
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SHARED, run_cli
from parasim.cli import limits
from parasim.cli.main import _register, app, main

MODEL = ["-m", "llama-3-8b", "--gpu", "h100-sxm"]
#: one valid, quick invocation per command; a bad value is appended (click keeps the last one)
BASE: dict[str, list[str]] = {
    "serve": ["serve", *MODEL, "--rate", "5", "--requests", "4", "--prompt-tokens", "32", "--output-tokens", "4"],
    "train": ["train", *MODEL, "--gpus", "8"],
    "plan train": ["plan", "train", *MODEL, "--gpus", "8", "--seq-len", "2048", "--global-batch-tokens", "65536",
                   "--workers", "1"],
    "plan serve": ["plan", "serve", *MODEL, "--max-gpus", "1", "--rate", "2", "--prompt-tokens", "32",
                   "--output-tokens", "4", "--requests", "4", "--screen-requests", "4", "--slo-ttft", "1",
                   "--workers", "1"],
    "inspect": ["inspect", "-m", "llama-3-8b"],
    "models": ["models"],
    "gpus": ["gpus"],
    "validate": ["validate", str(SHARED / "validation" / "dev.yaml"), "--kind", "training"],
    "calibrate": ["calibrate", str(Path(__file__).parent / "data" / "calib-mpt-h100.yaml"), "-o",
                  str(Path(__file__).parent / "data" / "never-written-profile.yaml")],
    "report": ["report", str(Path(__file__).parent / "data" / "report-train-result.json"), "-o",
               str(Path(__file__).parent / "data" / "never-written-report.html")],
}
#: options where 0 is a value (a seed, a ZeRO stage, a context of no tokens, a cost of no time)
ZERO_OK = {"seed", "zero", "context", "iteration_overhead_s", "eager_prefill_layer_s", "output_delay_s", "timeline_requests",
           "batch_tolerance", "refine_steps", "restart_s", "autoscale_startup_s", "autoscale_down_delay_s"}
OUTPUT_OPTIONS = {"json_out", "requests_out", "bench_json", "emit_yaml", "markdown", "error_table", "out", "timeline",
                  "report"}


def _commands() -> dict[str, typing.Any]:
    _register()
    root = typer.main.get_command(app)
    out = {}
    for name, cmd in root.commands.items():
        for sub, c in getattr(cmd, "commands", {}).items():
            out[f"{name} {sub}"] = c
        if not hasattr(cmd, "commands"):
            out[name] = cmd
    return out


def _key(param) -> str:
    """The option's long flag with underscores (its config-file key), or an argument's name."""
    longs = [o for o in param.opts if o.startswith("--")]
    return max(longs, key=len)[2:].replace("-", "_") if longs else param.name


def _kind(param) -> str:
    ann = param.type_descriptor.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    base = args[0] if args else ann
    if typing.get_origin(base) is list:
        base = typing.get_args(base)[0]
    return {int: "int", float: "float", str: "str", bool: "bool", Path: "path"}[base]


PARAMS = [(cmd, p) for cmd, c in _commands().items() for p in c.params if p.name != "help"]
FUZZED = [(cmd, p) for cmd, p in PARAMS if _kind(p) != "bool"]

HUGE = "1" + "0" * 40
BAD = {
    "int": ["-1", HUGE, "1e20", "nan", "", "abc", "1-", "٣", "0"],
    "float": ["nan", "inf", "-inf", "1e20", "-1", "", "fast", "0"],
    "str": ["", "\x00", "\x1b[31m", "é" * 5000, "1-", "tp=abc", "☃"],
    "path": ["", "\x00", "/dev/null/parasim/x.yaml", "/"],
}


def _bad_values(cmd: str, param) -> list[str]:
    key, kind = _key(param), _kind(param)
    if kind == "path" and key in OUTPUT_OPTIONS:
        return ["\x00"]  # bad input (an unwritable path is an output failure: test_unwritable_outputs)
    return [v for v in BAD[kind] if not (v == "0" and key in ZERO_OK)]


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def _argv(cmd: str, param, value: str) -> list[str]:
    base = list(BASE[cmd])
    if param.param_type_name == "argument":
        return [*cmd.split(), value, *base[len(cmd.split()) + 1:]]
    return [*base, max((o for o in param.opts), key=len), value]


def _assert_refused(cmd: str, param, value: str) -> None:
    code, _, err = _run(_argv(cmd, param, value))
    key = _key(param)
    names = {key, key.replace("_", "-"), param.name, param.name.replace("_", "-")}
    assert code == 2, (cmd, key, value, code, err)
    assert "Traceback" not in err
    lines = err.rstrip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("parasim: error: "), err
    assert any(n in lines[0] for n in names), (key, err)


def test_every_option_has_a_rule():
    """A new option without a rule in cli.limits fails here, not in a user's hands."""
    missing = [(cmd, _key(p)) for cmd, p in PARAMS if _key(p) not in limits.TABLES[cmd]]
    assert not missing


@pytest.mark.parametrize("cmd,param", FUZZED, ids=[f"{c}:{_key(p)}" for c, p in FUZZED])
def test_each_option_refuses_a_malformed_value(cmd, param):
    """Every option, at least its type's most hostile value: NaN, a 41-digit integer, NUL, a missing file."""
    first = {"int": HUGE, "float": "nan", "str": "\x00", "path": "\x00"}[_kind(param)]
    _assert_refused(cmd, param, first)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bad_values_exit_2_naming_the_option(data):
    cmd, param = data.draw(st.sampled_from(FUZZED), label="option")
    value = data.draw(st.sampled_from(_bad_values(cmd, param)), label="value")
    _assert_refused(cmd, param, value)


# --- config files ------------------------------------------------------------------------------------
SERVE_CFG = {"model": "llama-3-8b", "gpu": "h100-sxm", "rate": 5, "requests": 4, "prompt_tokens": 32,
             "output_tokens": 4}
TRAIN_CFG = {"model": "llama-3-8b", "gpu": "h100-sxm", "gpus": 8}
WRONG = {"int": ["eight", 8.5, True, [1], {"a": 1}, float("nan"), -1, 10**30, "8"],
         "float": ["fast", float("nan"), float("inf"), True, [1.0], -1.0, "0.5"],
         "bool": ["maybe", 1, "no", [True]],
         "text": [5, True, ["a"], "", "\x07"],
         "path": [5, ["a"], ""]}
CFG_KEYS = [(cmd, k, r) for cmd, table in (("serve", limits.SERVE), ("train", limits.TRAIN))
            for k, r in table.items() if k not in ("config", "json") and r.kind in ("int", "float", "bool", "text", "path",
                                                                                 "out", "columns", "version")]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_config_keys_of_the_wrong_type_exit_2_naming_the_key(tmp_path_factory, data):
    cmd, key, rule = data.draw(st.sampled_from(CFG_KEYS), label="key")
    kind = {"out": "path", "columns": "text", "version": "text"}.get(rule.kind, rule.kind)
    value = data.draw(st.sampled_from([v for v in WRONG[kind] if not (v == -1 and rule.lo == 0 and rule.kind == "float")]),
                      label="value")
    cfg = dict(SERVE_CFG if cmd == "serve" else TRAIN_CFG)
    cfg[key] = value
    path = tmp_path_factory.mktemp("cfg") / "run.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    code, _, err = _run([cmd, "-c", str(path)])
    assert code == 2, (key, value, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"run.yaml:{key}" in err, err


@pytest.mark.parametrize("text,key", [("trace: 5", "trace"), ("gpus_per_node: eight", "gpus_per_node"),
                                      ("slo_ttft: fast", "slo_ttft"), ("gpus: 8.5", "gpus")])
def test_config_regressions_name_the_key(tmp_path, text, key):
    path = tmp_path / "serve.yaml"
    path.write_text("model: llama-3-8b\ngpu: h100-sxm\nrate: 5\nrequests: 4\n" + text + "\n")
    code, _, err = _run(["serve", "-c", str(path)])
    assert code == 2 and f"serve.yaml:{key}:" in err, err


def test_train_config_gpus_8_5_does_not_run_8(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("model: llama-3-8b\ngpu: h100-sxm\ngpus: 8.5\n")
    code, out, err = _run(["train", "-c", str(path), "--json"])
    assert code == 2 and "train.yaml:gpus: must be a whole number" in err and out == ""


def test_burst_given_as_the_string_false_runs_no_burst(tmp_path):
    """`burst: 'false'` is the same run as `burst: false` (and not the burst `bool('false')` would make)."""
    runs = {}
    for name, value in (("quoted", "'false'"), ("plain", "false"), ("burst", "true")):
        path = tmp_path / f"{name}.yaml"
        path.write_text("model: llama-3-8b\ngpu: h100-sxm\nrate: 0.5\nrequests: 6\nprompt_tokens: 32\n"
                        f"output_tokens: 4\nburst: {value}\n")
        code, out, err = _run(["serve", "-c", str(path), "--json"])
        assert code == 0, err
        runs[name] = json.loads(out)["summary"]
    drop = lambda s: {k: v for k, v in s.items() if "wall" not in k}  # noqa: E731
    assert drop(runs["quoted"]) == drop(runs["plain"]) != drop(runs["burst"])


def test_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        lines.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 10) + "]")
    lines.append("model: llama-3-8b")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    for cmd in ("serve", "train"):
        r = run_cli(cmd, "-c", str(path))  # the message proves the bound stopped it, not a clock
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("parasim: error: bomb.yaml: YAML expands to more than"), r.stderr


# --- the cases of issue #16 item 10, each a traceback, a hang or a silent answer on b07df33 -------------
@pytest.mark.parametrize("args,field", [
    (["serve", *MODEL, "--arrival", "gamma", "--cv", "inf", "--rate", "5", "--requests", "4"], "cv"),
    (["train", *MODEL, "--tp", "0", "--gpus", "8"], "tp"),
    (["plan", "train", *MODEL, "--gpus", "1-", "--seq-len", "2048", "--global-batch-tokens", "65536"], "gpus"),
    (["plan", "train", *MODEL, "--gpus", "1e20", "--seq-len", "2048", "--global-batch-tokens", "65536"], "gpus"),
    (["train", *MODEL, "--gpus", "8", "--inter-node-gbps", "nan"], "inter-node-gbps"),
    (["serve", *MODEL, "--rate", "5", "--requests", "4", "--iteration-overhead-s", "nan"], "iteration_overhead_s"),
    (["serve", *MODEL, "--rate", "5", "--requests", "4", "--output-delay-s", "inf"], "output_delay_s"),
    (["serve", *MODEL, "--rate", "5", "--requests", "1000000000000"], "requests"),
    (["serve", *MODEL, "--rate", "5", "--requests", "4", "--replicas", "100000000000000000000"], "replicas"),
    (["plan", "serve", *MODEL, "--max-gpus", "1", "--rate", "2", "--prompt-tokens", "32", "--output-tokens", "4",
      "--requests", "0", "--slo-ttft", "1"], "requests"),
    (["train", *MODEL, "--gpus", "8", "--seq-len", "100000000000"], "seq-len"),
    (["plan", "train", *MODEL, "--gpus", "8", "--seq-len", "2048", "--global-batch-tokens", "65536",
      "--ray-address", "auto"], "ray-address"),
])
def test_issue_cases_exit_2_in_one_line(args, field):
    r = run_cli(*args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"parasim: error: {field}: ") and r.stderr.count("\n") == 1, r.stderr


def test_caps_say_how_to_go_past_them_and_the_env_var_raises_them(monkeypatch):
    argv = [*BASE["serve"], "--requests", "7"]
    monkeypatch.setenv("PARASIM_MAX_REQUESTS", "6")
    code, _, err = _run(argv)
    assert code == 2 and "requests: must be at most 6, got 7; set PARASIM_MAX_REQUESTS" in err
    monkeypatch.setenv("PARASIM_MAX_REQUESTS", "7")
    assert _run([*argv, "--json"])[0] == 0
    monkeypatch.setenv("PARASIM_MAX_REQUESTS", "lots")
    code, _, err = _run(argv)
    assert code == 2 and err.startswith("parasim: error: PARASIM_MAX_REQUESTS: must be a positive whole number")


def test_ray_that_cannot_start_is_one_line_exit_2(monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)

    def fail(**kw):
        raise TimeoutError("Timed out after 60 seconds waiting for the GCS to start\nmore detail")

    monkeypatch.setattr(ray, "init", fail)
    for extra, field in (([], "executor"), (["--ray-address", "10.0.0.1:6379"], "ray-address")):
        code, _, err = _run([*BASE["plan train"], "--executor", "ray", *extra])
        assert code == 2, err
        assert err.startswith(f"parasim: error: {field}: ") and "TimeoutError: Timed out" in err
        assert err.count("\n") == 1


@pytest.mark.parametrize("cmd", ["serve", "train", "inspect", "models"])
def test_unwritable_outputs_exit_1_with_path_and_reason(tmp_path, cmd):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for target, reason in ((tmp_path, "Is a directory"), (blocker / "out.json", "Not a directory")):
        code, _, err = _run([*BASE[cmd], "--json-out", str(target)])
        assert code == 1 and err == f"parasim: error: cannot write {target}: {reason}" + err[err.index(reason) + len(reason):]
        assert err.count("\n") == 1


def test_requests_out_under_a_regular_file_exits_1(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _run([*BASE["serve"], "--requests-out", str(blocker / "r.csv")])
    assert code == 1 and f"cannot write {blocker / 'r.csv'}: Not a directory" in err


def test_docs_list_every_option_and_cap():
    """docs/limits.md is the user's copy of the tables: every cap with its variable, every option."""
    from parasim.specs import edge

    text = (Path(__file__).resolve().parents[1] / "docs" / "limits.md").read_text()
    for name, default in edge.CAPS.items():
        assert f"| `{name}` | {default:,} | `PARASIM_MAX_{name.upper()}` |" in text
    for cmd, table in limits.TABLES.items():
        section = text.split(f"### `parasim {'models' if cmd == 'gpus' else cmd}`", 1)[1].split("###", 1)[0]
        assert all(f"| `{key}` |" in section for key in table), cmd


@pytest.mark.parametrize("value,ok", [("{a: 1}", False), ("true", False), ("[]", False), ("4", True), ("[1, 8, 64]", True),
                                      ("'1,8,64'", True)])
def test_config_integer_list_forms(tmp_path, value, ok):
    """A comma-list option in a config file takes a YAML list, a comma string or one whole number; anything
    else is refused with a message that names both list forms (not "must be a non-empty string")."""
    path = tmp_path / "serve.yaml"
    path.write_text(f"model: llama-3-8b\ngpu: h100-sxm\nrate: 5\nrequests: 4\ncuda_graph_batch_sizes: {value}\n")
    code, _, err = _run(["serve", "-c", str(path), "--json"])
    if ok:
        assert code == 0, err
    else:
        assert code == 2 and "serve.yaml:cuda_graph_batch_sizes:" in err and "comma list" in err, err


def test_a_release_given_as_a_yaml_number_says_to_quote_it(tmp_path):
    """`cudnn_version: 9.2` in YAML is the number 9.2, which cannot tell 9.2 from 9.20: refused with the fix."""
    path = tmp_path / "train.yaml"
    path.write_text("model: llama-3-8b\ngpu: b200\ngpus: 8\ncudnn_version: 9.2\n")
    code, out, err = _run(["train", "-c", str(path), "--json"])
    assert code == 2 and out == "" and "train.yaml:cudnn_version: must be quoted text such as '9.18'" in err, err
