"""Hostile files: every file parasim reads (model configs and model YAML, traces in each format,
length files, validation case files) turns any bad value into exit 2 and one stderr line naming
the file or field, never a traceback, a hang or a silently accepted answer.

The property tests drive the CLI in-process (`parasim.cli.main.main`) for speed; a few cases go
through a subprocess as a user would. The regression tests each name an input that crashed, hung
or slipped through before these checks.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import parasim.cli.main as cli_main
from parasim.cli.main import main
from parasim.errors import InputError
from parasim.serving.plan import ServingPlan
from parasim.specs.model import ModelSpec
from parasim.training.plan import TrainingPlan
from tests.conftest import make_model, run_cli

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def cli(*args: str) -> tuple[int, str]:
    """(exit code, stderr) of `parasim ARGS` run in this process. `main` registers the commands
    on every call (adding them again to the one app, which grows slower call by call); here
    they are registered once."""
    if not cli_main.app.registered_commands:
        cli_main._register()
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
            mock.patch.object(cli_main, "_register", lambda: None):
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


def refused(code: int, err: str, *names: str) -> bool:
    """Exit 2 with one `parasim: error:` line on stderr that names one of `names`."""
    lines = err.strip().splitlines()
    return (code == 2 and len(lines) == 1 and lines[0].startswith("parasim: error: ")
            and "Traceback" not in err and any(n in lines[0] for n in names))


# --- values no size, count or measurement may take -------------------------------------------
NOT_A_COUNT = st.one_of(
    st.integers(max_value=0),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x) if math.isfinite(x) else True),
    st.integers(min_value=10**16, max_value=10**30),
    st.booleans(),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
NOT_A_MEASUREMENT = st.one_of(
    st.floats(max_value=0), st.just(float("nan")), st.just(float("inf")), st.booleans(),
    st.text(max_size=8), st.lists(st.floats(), max_size=2), st.none(),
)


def write(path: Path, content: str | bytes) -> str:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


# --- model configs ---------------------------------------------------------------------------
HF_LLAMA = {"model_type": "llama", "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
            "num_hidden_layers": 2, "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 4096}
HF_REQUIRED = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "vocab_size")
MODEL_YAML = {"family": "llama", "layers": 2, "hidden": 256, "heads": 4, "kv_heads": 2, "ffn_hidden": 512,
              "vocab": 1000}


def test_the_base_files_of_the_properties_are_valid(tmp_path):
    """The properties below break one value of these files; unbroken, each one is accepted."""
    assert cli("inspect", "--model", write(tmp_path / "config.json", json.dumps(HF_LLAMA)))[0] == 0
    assert cli("inspect", "--model", write(tmp_path / "m.yaml", json.dumps(MODEL_YAML)))[0] == 0
    assert cli("validate", write(tmp_path / "c.yaml", json.dumps({"cases": [SERVING_CASE]})))[0] == 0


@FAST
@given(key=st.sampled_from(HF_REQUIRED), value=st.one_of(NOT_A_COUNT, st.none()))
def test_a_bad_size_in_a_hugging_face_config_is_refused_naming_the_key(tmp_path, key, value):
    path = write(tmp_path / "config.json", json.dumps({**HF_LLAMA, key: value}))
    assert refused(*cli("inspect", "--model", path), key)


@FAST
@given(key=st.sampled_from(("layers", "hidden", "heads", "kv_heads", "ffn_hidden", "vocab", "max_seq_len",
                            "experts", "sliding_window", "gated_mlp", "name", "family", "source")),
       value=NOT_A_COUNT)
def test_a_bad_field_in_a_model_yaml_is_refused_naming_the_field(tmp_path, key, value):
    if key in ("experts",) and value in (0, False):  # experts: 0 is a dense model
        value = -1
    if key in ("name", "source") and isinstance(value, str):
        value = [value]
    if key == "gated_mlp" and (isinstance(value, bool) or str(value).strip().lower() in ("true", "false")):
        value = 1
    if key == "family" and value in ("gpt", "llama", "moe"):
        value = "bert"
    path = write(tmp_path / "m.yaml", json.dumps({**MODEL_YAML, key: value}))
    assert refused(*cli("inspect", "--model", path), key)


@FAST
@given(content=st.binary(min_size=1, max_size=200))
def test_arbitrary_bytes_as_a_model_file_are_refused(tmp_path, content):
    for name in ("config.json", "m.yaml"):
        code, err = cli("inspect", "--model", write(tmp_path / name, content))
        assert refused(code, err, name, "model")


# --- traces ----------------------------------------------------------------------------------
FORMATS = {"parasim": ("arrival_s", "prompt_tokens", "output_tokens"),
           "vidur": ("arrived_at", "num_prefill_tokens", "num_decode_tokens"),
           "azure": ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
           "burstgpt": ("Timestamp", "Request tokens", "Response tokens")}
SERVE = ("serve", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--gpus", "1")
BAD_COUNT_TEXT = st.sampled_from(["nan", "NaN", "inf", "-Infinity", "-3", "2.5", "1e400", "1e30", "abc", "0x10",
                                  "1_000", "", " ", "\u0665", "true", "999999999999"])
BAD_ARRIVAL_TEXT = st.sampled_from(["nan", "inf", "-1", "1e300", "abc", "true", "", "2023-13-45 00:00:00",
                                   "2023-11-16 18:15:46+99:99"])


@FAST
@given(fmt=st.sampled_from(sorted(FORMATS)), column=st.integers(0, 2), data=st.data())
def test_a_bad_cell_in_a_csv_trace_is_refused_naming_the_file_and_line(tmp_path, fmt, column, data):
    cells = ["1.5", "100", "10"]
    cells[column] = data.draw(BAD_ARRIVAL_TEXT if column == 0 else BAD_COUNT_TEXT)
    text = ",".join(FORMATS[fmt]) + "\n" + ",".join(cells) + "\n"
    assert refused(*cli(*SERVE, "--trace", write(tmp_path / "t.csv", text)), "t.csv")


BAD_JSON_VALUES = st.one_of(st.sampled_from(["NaN", "Infinity", "-Infinity", "true", "null", '"12"', "[1]",
                                             '{"a": 1}', "-5", "2.5", "1e400", "1e30"]),
                            st.text(max_size=5).map(json.dumps))


@FAST
@given(key=st.sampled_from(FORMATS["parasim"]), raw=BAD_JSON_VALUES)
def test_a_bad_value_in_a_jsonl_trace_is_refused_naming_the_file_and_line(tmp_path, key, raw):
    if key == "arrival_s" and raw == "2.5":  # a valid arrival
        raw = "-2.5"
    row = {"arrival_s": "0", "prompt_tokens": "100", "output_tokens": "10", key: raw}
    line = "{" + ", ".join(f'"{k}": {v}' for k, v in row.items()) + "}"
    assert refused(*cli(*SERVE, "--trace", write(tmp_path / "t.jsonl", line + "\n")), "t.jsonl")


@FAST
@given(content=st.binary(min_size=0, max_size=300), suffix=st.sampled_from([".csv", ".jsonl", ".txt"]))
def test_arbitrary_bytes_as_a_trace_are_refused(tmp_path, content, suffix):
    assert refused(*cli(*SERVE, "--trace", write(tmp_path / f"t{suffix}", content)), f"t{suffix}", "trace")


# --- length files ----------------------------------------------------------------------------
@FAST
@given(line=st.one_of(BAD_COUNT_TEXT.filter(lambda s: bool(s.strip())),
                      st.sampled_from(["5,nan", "5,inf", "5,-1", "5,x", "5 6 7"])),
       option=st.sampled_from(["--prompt-dist", "--output-dist"]))
def test_a_bad_line_in_a_length_file_is_refused_naming_the_line(tmp_path, line, option):
    path = write(tmp_path / "lengths.txt", f"100\n{line}\n")
    assert refused(*cli(*SERVE, "--rate", "1", "--requests", "3", option, path), "lengths.txt line 2")


TRAIN = ("train", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--gpus", "8", "--global-batch", "8",
         "--seq-len", "2048")


@pytest.mark.parametrize("content", ["inf\n", "1e30\n", "2.5\n", "5,3,1\n", "5,-1\n", "12".encode("utf-16"),
                                     bytes(range(256))])
def test_a_bad_document_length_file_is_refused(tmp_path, content):
    """inf and binary files were tracebacks; 1e30 was accepted, 2.5 read as 2. A second column is a
    histogram count (length,count), so a third column or a negative count is refused."""
    assert refused(*cli(*TRAIN, "--seq-len-dist", write(tmp_path / "docs.txt", content)), "docs.txt", "seq-len-dist")


# --- validation cases ------------------------------------------------------------------------
SERVING_CASE = {"id": "s", "kind": "serving", "software": "vllm 0.10.1", "model": {"catalog": "llama-3.1-8b"},
                "hardware": {"accelerator": "h100-sxm", "gpus": 1, "gpus_per_node": 8},
                "plan": {"tp": 1, "pp": 1, "replicas": 1, "weights": "bf16", "max_batch": None},
                "workload": {"requests": 10, "prompt_tokens": 64, "output_tokens": 8, "arrival": "burst"},
                "measured": {"output_tokens_per_s": 1000.0}}
CASE_PATHS = [("measured", "output_tokens_per_s"), ("workload", "prompt_tokens"), ("workload", "output_tokens"),
              ("workload", "requests"), ("hardware", "gpus"), ("hardware", "gpus_per_node"), ("plan", "tp"),
              ("plan", "max_batch")]


@FAST
@given(path=st.sampled_from(CASE_PATHS), data=st.data())
def test_a_bad_value_in_a_case_file_is_refused_naming_the_case_and_field(tmp_path, path, data):
    section, key = path
    value = data.draw(NOT_A_MEASUREMENT if section == "measured" else NOT_A_COUNT)
    if value is None and key in ("gpus_per_node", "max_batch"):  # null = not published
        value = 0
    case = json.loads(json.dumps(SERVING_CASE))
    case[section][key] = value
    f = write(tmp_path / "c.yaml", json.dumps({"cases": [case]}, allow_nan=True).replace("NaN", ".nan")
              .replace("-Infinity", "-.inf").replace("Infinity", ".inf"))
    assert refused(*cli("validate", f), f"case s.{section}.{key}")


@FAST
@given(content=st.binary(min_size=0, max_size=300))
def test_arbitrary_bytes_as_a_case_file_are_refused(tmp_path, content):
    code, err = cli("validate", write(tmp_path / "c.yaml", content))
    assert code == 2 and "Traceback" not in err and err.startswith("parasim: error: ")


# --- the specs validate themselves -----------------------------------------------------------
@FAST
@given(field=st.sampled_from(("layers", "hidden", "heads", "kv_heads", "head_dim", "vocab", "max_seq_len")),
       value=NOT_A_COUNT)
def test_a_model_spec_built_in_python_refuses_a_bad_size(field, value):
    with pytest.raises(InputError) as e:
        make_model(**{field: value})
    assert e.value.field == f"model.{field}"


#: plans bound their degrees against the cluster (check), not on their own: huge counts are left out
NOT_A_PLAN_COUNT = NOT_A_COUNT.filter(lambda v: not (isinstance(v, int) and not isinstance(v, bool) and v >= 1))


@FAST
@given(field=st.sampled_from(("tp", "pp", "replicas", "block_size", "max_batch", "token_budget")),
       value=NOT_A_PLAN_COUNT)
def test_a_serving_plan_built_in_python_refuses_a_bad_count(field, value):
    with pytest.raises(InputError) as e:
        ServingPlan(**{field: value})
    assert e.value.field == field


@FAST
@given(field=st.sampled_from(("tp", "pp", "dp", "micro_batch", "global_batch", "seq_len", "zero")),
       value=NOT_A_PLAN_COUNT)
def test_a_training_plan_built_in_python_refuses_a_bad_count(field, value):
    if field == "zero" and value in (0,) and not isinstance(value, bool):
        value = -1
    with pytest.raises(InputError) as e:
        TrainingPlan(**{field: value})
    assert e.value.field == field.replace("_", "-")


# --- regressions: each of these crashed, hung or was accepted before ---------------------------
def model_yaml(tmp_path, **changes) -> str:
    return write(tmp_path / "m.yaml", json.dumps({**MODEL_YAML, **changes}))


@pytest.mark.parametrize("changes, field", [
    ({"source": [1]}, "m.yaml.source"),  # TypeError: unhashable type
    ({"notes": {"a": 1}}, "m.yaml.notes"),  # accepted
    ({"name": 5}, "m.yaml.name"),  # accepted
    ({"family": "moe", "experts": 4, "experts_per_token": 1, "dense_layers": 5}, "m.yaml.dense_layers"),  # < 0 params
    ({"hidden": 250, "heads": 4}, "m.yaml.heads"),  # head_dim silently 62
    ({"experts_per_token": 2}, "m.yaml.experts_per_token"),  # ignored on a dense model
    ({"family": "moe", "experts": 4, "experts_per_token": 1, "mla": {"kv_lora_rank": 8}}, "m.yaml.mla."),
    ({"family": "moe", "experts": 4, "experts_per_token": 1,
      "mla": {"kv_lora_rank": 8, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 8, "rank": 1}},
     "m.yaml.mla.rank"),
])
def test_model_yaml_regressions(tmp_path, changes, field):
    assert refused(*cli("inspect", "--model", model_yaml(tmp_path, **changes)), field)


def test_a_dense_model_with_dense_layers_has_no_negative_parameters(tmp_path):
    """dense_layers >= layers made moe_layers negative and params_total smaller than one layer."""
    path = model_yaml(tmp_path, family="moe", experts=4, experts_per_token=1, dense_layers=2)
    assert refused(*cli("inspect", "--model", path), "dense_layers")


@pytest.mark.parametrize("key, value", [("resid_pdrop", "x"), ("resid_pdrop", 1.0), ("resid_pdrop", -0.1)])
def test_a_gpt2_dropout_must_be_a_probability(tmp_path, key, value):
    cfg = {"model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_layer": 2, "vocab_size": 100, key: value}
    assert refused(*cli("inspect", "--model", write(tmp_path / "config.json", json.dumps(cfg))), key)


def test_the_layer_limit_can_be_raised_from_the_environment(tmp_path, monkeypatch):
    path = write(tmp_path / "config.json", json.dumps({**HF_LLAMA, "num_hidden_layers": 20_000}))
    assert refused(*cli("inspect", "--model", path), "PARASIM_MAX_LAYERS")
    monkeypatch.setenv("PARASIM_MAX_LAYERS", "30000")
    assert cli("inspect", "--model", path)[0] == 0
    monkeypatch.setenv("PARASIM_MAX_LAYERS", "lots")
    assert refused(*cli("inspect", "--model", path), "PARASIM_MAX_LAYERS")


def test_specs_built_in_python_refuse_strings_and_nan():
    """Strings that look like numbers and NaN passed the old int()/float() checks."""
    with pytest.raises(InputError, match="model.layers"):
        make_model(layers="32")
    with pytest.raises(InputError, match="gpu_memory_utilization"):
        ServingPlan(gpu_memory_utilization="0.9")
    with pytest.raises(InputError, match="iteration_overhead_s"):
        ServingPlan(iteration_overhead_s=float("nan"))
    with pytest.raises(InputError, match="^tp"):
        TrainingPlan(tp="2")
    with pytest.raises(InputError, match="^tp"):
        TrainingPlan.from_mapping({"tp": "2"})
    with pytest.raises(InputError, match="sequence-parallel"):
        TrainingPlan.from_mapping({"sequence_parallel": "yes"})
    with pytest.raises(InputError, match="model.experts"):
        ModelSpec(name="m", family="moe", layers=2, hidden=64, heads=2, kv_heads=2, head_dim=32, ffn_hidden=64,
                  vocab=10)


def test_a_huge_global_batch_is_refused_instead_of_exhausting_memory():
    code, err = cli(*TRAIN[:-4], "--global-batch", str(8 * 10**12), "--seq-len", "2048")
    # the option's own cap (PARASIM_MAX_BATCH) answers first; a plan built in Python meets the
    # micro-batch cap (PARASIM_MAX_MICRO_BATCHES): either way the message says how to go past it
    assert refused(code, err, "global-batch") and ("PARASIM_MAX_BATCH" in err or "PARASIM_MAX_MICRO_BATCHES" in err)


@pytest.mark.parametrize("rows, name", [
    ("2023-11-16 18:15:46+99:99,5,5\n", "+99:99"),  # an impossible UTC offset was read
    ("0001-01-01 00:00:00,5,5\n9999-12-31 23:59:59,5,5\n", "span"),  # 10,000 years of arrivals
])
def test_date_time_traces_refuse_impossible_zones_and_spans(tmp_path, rows, name):
    path = write(tmp_path / "azure.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n" + rows)
    assert refused(*cli(*SERVE, "--trace", path), "azure.csv")


@pytest.mark.parametrize("content", ["nan\n", "inf\n", "1e30\n", "5,nan\n", "5,inf\n", "12\n".encode("utf-16")])
def test_length_file_regressions(tmp_path, content):
    """Each was a traceback (ValueError, OverflowError, UnicodeDecodeError)."""
    path = write(tmp_path / "p.txt", content)
    assert refused(*cli(*SERVE, "--rate", "1", "--requests", "3", "--prompt-dist", path), "p.txt", "prompt")


def case_file(tmp_path, **changes) -> str:
    case = json.loads(json.dumps(SERVING_CASE))
    for dotted, value in changes.items():
        section, _, key = dotted.partition("__")
        if key:
            if value is ...:
                case[section].pop(key)
            else:
                case[section][key] = value
        else:
            case[section] = value
    return write(tmp_path / "c.yaml", json.dumps({"cases": [case]}).replace('"NAN"', ".nan"))


@pytest.mark.parametrize("changes, field", [
    ({"measured__output_tokens_per_s": "12.5"}, "case s.measured.output_tokens_per_s"),  # silently unscored
    ({"measured__output_tokens_per_s": "NAN"}, "case s.measured.output_tokens_per_s"),  # error nan
    ({"measured__output_tokens_per_s": -3}, "case s.measured.output_tokens_per_s"),  # error of the wrong sign
    ({"measured__output_tokens_per_s": 0}, "case s.measured.output_tokens_per_s"),  # silently unscored
    ({"workload__prompt_tokens": ...}, "case s.workload.prompt_tokens"),  # KeyError traceback
    ({"workload__prompt_tokens": "12.5"}, "case s.workload.prompt_tokens"),  # ValueError traceback
    ({"workload__prompt_tokens": 12.5}, "case s.workload.prompt_tokens"),  # read as 12
    ({"plan__tp": "x"}, "case s.plan.tp"),  # ValueError traceback
    ({"hardware__gpus_per_node": "8"}, "case s.hardware.gpus_per_node"),  # read as 8
    ({"hardware__overrides": {"tdp_w": "x"}}, "case s.hardware.overrides.tdp_w"),  # ValueError traceback
    ({"workload__arrival": {"poisson_rate": "fast"}}, "case s.workload.arrival.poisson_rate"),  # traceback
    ({"workload__prompt_token": 5}, "case s.workload.prompt_token"),  # a typo, silently ignored
    ({"workload": {"trace": "missing.jsonl"}}, "missing.jsonl"),  # exit 0 with nothing run
])
def test_case_file_regressions(tmp_path, changes, field):
    assert refused(*cli("validate", case_file(tmp_path, **changes)), field)


def test_a_training_case_with_a_string_number_in_its_plan_is_refused(tmp_path):
    """`tp: "1"` was read as 1 and the case scored."""
    case = {"id": "t", "kind": "training", "software": "megatron-lm", "model": {"catalog": "llama-3.1-8b"},
            "hardware": {"accelerator": "h100-sxm", "gpus": 8}, "plan": {"tp": "1", "pp": 1, "seq_len": 2048},
            "measured": {"tflops_per_gpu": 400}}
    assert refused(*cli("validate", write(tmp_path / "c.yaml", json.dumps({"cases": [case]}))), "case t", "tp")


BOMB = ("a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n"
                                                for p, n in zip("abcdef", "bcdefg"))
        + "cases: [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n")


def test_a_case_file_alias_bomb_is_refused_quickly(tmp_path):
    """A few hundred bytes that expand to 9^8 nodes hung yaml.safe_load."""
    assert len(BOMB) < 400
    assert refused(*cli("validate", write(tmp_path / "bomb.yaml", BOMB)), "alias")


# --- a few through a subprocess, as a user runs them --------------------------------------------
@pytest.mark.parametrize("args, content, name", [
    (("validate",), ("cases: []\n").encode("utf-16"), "c.yaml"),
    (SERVE + ("--rate", "1", "--requests", "3", "--prompt-dist"), b"nan\n", "c.yaml"),
    (("inspect", "--model"), json.dumps({**MODEL_YAML, "source": [1]}).encode(), "c.yaml"),
])
def test_hostile_files_through_the_installed_command(tmp_path, args, content, name):
    path = write(tmp_path / name, content)
    r = run_cli(*args, path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("parasim: error: ") and "Traceback" not in r.stderr
    assert name in r.stderr


def test_a_control_character_in_a_trace_header_keeps_the_error_on_one_line(tmp_path):
    """The header's names were echoed raw: a vertical tab split the message over two lines."""
    code, err = cli(*SERVE, "--trace", write(tmp_path / "t.csv", "a\x0bb,c\n1,2\n"))
    assert refused(code, err, "t.csv") and "'a\\x0bb'" in err


# --- calibration profiles (--profile) ------------------------------------------------------------
PROFILE = {"parasim_profile": 1, "entries": [{"software": "*", "accelerator": "h100-sxm",
                                              "factors": {"gemm_efficiency": 0.9, "iteration_overhead_s": 0.001}}]}
TRAIN_ARGS = ("train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "8")


def test_the_base_profile_of_the_properties_is_valid(tmp_path):
    assert cli(*TRAIN_ARGS, "--profile", write(tmp_path / "p.yaml", json.dumps(PROFILE)))[0] == 0


@FAST
@given(factor=st.sampled_from(("gemm_efficiency", "iteration_overhead_s")),
       value=st.one_of(NOT_A_MEASUREMENT.filter(lambda v: not (isinstance(v, float) and -2e-3 <= v <= 0.05)),
                       st.sampled_from([0.1, 1.6, 100.0, -1.0])))
def test_a_bad_factor_in_a_profile_is_refused_naming_it(tmp_path, factor, value):
    prof = json.loads(json.dumps(PROFILE))
    prof["entries"][0]["factors"][factor] = value
    f = write(tmp_path / "p.yaml", json.dumps(prof, allow_nan=True).replace("NaN", ".nan")
              .replace("-Infinity", "-.inf").replace("Infinity", ".inf"))
    assert refused(*cli(*TRAIN_ARGS, "--profile", f), f"entries[0].factors.{factor}")


@pytest.mark.parametrize("change, field", [
    (lambda p: p.pop("parasim_profile"), "parasim_profile"),
    (lambda p: p.update(parasim_profile=2), "parasim_profile"),
    (lambda p: p.update(entries=[]), "entries"),
    (lambda p: p.update(entries="x"), "entries"),
    (lambda p: p["entries"][0]["factors"].update(flops_efficiency=0.9), "entries[0].factors.flops_efficiency"),
    (lambda p: p["entries"][0].update(accelerator="h900"), "entries[0].accelerator"),
    (lambda p: p["entries"][0].update(software=""), "entries[0].software"),
    (lambda p: p["entries"][0].update(factors={}), "entries[0].factors"),
    (lambda p: p["entries"][0].update(colour="red"), "entries[0].colour"),
    (lambda p: p["entries"].append(dict(p["entries"][0])), "entries[1]"),
])
def test_profile_regressions(tmp_path, change, field):
    prof = json.loads(json.dumps(PROFILE))
    change(prof)
    assert refused(*cli(*TRAIN_ARGS, "--profile", write(tmp_path / "p.yaml", json.dumps(prof))), field)


@FAST
@given(content=st.binary(min_size=0, max_size=300))
def test_arbitrary_bytes_as_a_profile_are_refused(tmp_path, content):
    code, err = cli(*TRAIN_ARGS, "--profile", write(tmp_path / "p.yaml", content))
    assert code == 2 and "Traceback" not in err and err.startswith("parasim: error: "), err


@pytest.mark.parametrize("text,written", [("2e-05", "2.0e-05"), ("-3E4", "-3.0e+4"), ("1e+3", "1.0e+3"), ("2.5e3", "2.5e+3")])
def test_a_bare_exponent_in_yaml_is_refused_with_how_to_write_it(tmp_path, text, written):
    """PyYAML (YAML 1.1) reads an exponent with no decimal point as text: the message names the field and
    gives the spelling YAML reads as a number, which then passes the edge's own parse."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: llama-3-8b\ngpu: h100-sxm\nrequests: 10\nhost_s_per_sequence: {text}\n")
    r = run_cli("serve", "-c", str(cfg))
    assert r.returncode == 2 and "host_s_per_sequence" in r.stderr and f"write {written}" in r.stderr
    import yaml
    assert isinstance(yaml.safe_load(f"x: {written}")["x"], float)
