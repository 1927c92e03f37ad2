"""The NIM 1.x profile (engines/nim.py): which texts it takes, what its admission rule implies at
saturation against NVIDIA's published table, and `parasim serve --engine nim` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_cli
from parasim.engines.lookup import profile_for
from parasim.specs.validation_case import load_cases
from parasim.validation.serving import predict_case

NIM_FILE = Path(__file__).resolve().parents[1] / "validation" / "nim-llama33-70b-h100.yaml"


def test_which_texts_are_nim():
    assert profile_for("nvidia nim 1.8.0 (llama-3.3-70b-instruct container; engine not named)").name == "nim"
    # a NIM profile name that spells out its TensorRT-LLM engine is still NIM's build, not a trtllm-bench flow
    assert profile_for("NIM 1.8 tensorrt_llm-h100-fp8-tp2-pp1-throughput").name == "nim"
    # NIM's vLLM profiles, and NIM 2.x (vLLM its only backend), are not this profile's
    assert profile_for("NIM 1.8 vllm-bf16-tp2 profile").name == "vllm"
    assert profile_for("nvidia nim 2.0.1").name == "default"
    assert profile_for("animation server 1.8").name == "default"  # the word, not the letters


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="ascii"), max_size=40))
def test_text_without_the_word_nim_is_never_nim(text):
    if "nim" not in text.lower():
        assert profile_for(text).name != "nim"


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 15), st.integers(0, 20))
def test_every_nim_1x_release_is_nim(minor, patch):
    assert profile_for(f"NVIDIA NIM 1.{minor}.{patch}").name == "nim"


def test_saturated_decode_batch_matches_the_published_table():
    """GUARANTEED_NO_EVICT admits a request only beside KV for its whole output, so past saturation the
    number decoding is what the KV pool holds. The published conc-250 row implies it by Little's law:
    throughput x ITL = 920.12 tok/s x 0.0932 s = 85.8 requests decoding at once. The prediction's
    throughput x TPOT must be within 15 % (the engine's build sizes, hence its buffers, are not published)."""
    case = next(c for c in load_cases(NIM_FILE) if c.id.endswith("conc250"))
    published = 920.12 * 0.0932
    res = predict_case(case)
    assert res.status == "ok"
    decoding = res.predicted["output_tokens_per_s"] * res.predicted["tpot_mean_s"]
    assert abs(decoding - published) / published < 0.15, decoding


SERVE = ["serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--rate", "4", "--requests", "40",
         "--prompt-tokens", "700", "--output-tokens", "40", "--json"]


def test_serve_engine_nim_runs_and_reports_its_defaults():
    r = run_cli(*SERVE, "--engine", "nim==1.8")
    assert r.returncode == 0, r.stderr
    eng = json.loads(r.stdout)["inputs"]["engine"]
    assert eng["engine"] == "nim 1.8" and eng["defaults"]["kv_reservation"] == "full"


def test_serve_engine_nim_2_is_exit_2():
    r = run_cli(*SERVE, "--engine", "nim==2.0")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == ("parasim: error: engine: unknown nim release '2.0'; known: nim 1.0 - 1.15 "
                                "(or no version: the current defaults)")
