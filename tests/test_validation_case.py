"""The shared validation case format is read exactly as its README specifies."""

from __future__ import annotations

import pytest

from conftest import SHARED
from parasim.errors import InputError
from parasim.specs.validation_case import load_cases

DEV = SHARED / "validation" / "dev.yaml"
needs_shared = pytest.mark.skipif(not DEV.exists(), reason="shared/validation is not beside this checkout")


@needs_shared
def test_dev_cases_parse():
    cases = load_cases(DEV)
    assert len(cases) >= 50
    kinds = {c.kind for c in cases}
    assert kinds == {"training", "serving"}
    by_id = {c.id: c for c in cases}
    c = by_id["megatron2021-t1-1.7b"]
    assert c.cluster.gpus == 32 and c.cluster.nic_bw_bytes_per_s_per_gpu == 200e9 / 8
    assert c.model.family == "gpt" and c.model.params_total == pytest.approx(1.7e9, rel=0.05)


def _write(tmp_path, text):
    p = tmp_path / "cases.yaml"
    p.write_text(text)
    return p


CASE = """
cases:
- id: x
  kind: training
  model: {family: llama, layers: 2, hidden: 256, heads: 4, ffn_hidden: 512, vocab: 1000}
  hardware: {accelerator: %s, gpus: 8, gpus_per_node: 8, overrides: {tdp_w: 500, bf16_tflops: 100}}
  plan: {tp: 1, pp: 1, dp: 8}
  measured: {tokens_per_s: 1.0}
"""


def test_overrides_apply(tmp_path):
    (case,) = load_cases(_write(tmp_path, CASE % "h100-sxm"))
    acc = case.cluster.accelerator
    assert acc.tdp_w == 500 and acc.peak("bf16") == 100e12
    assert case.model.kv_heads == 4 and case.model.head_dim == 64


def test_catalog_model_reference(tmp_path):
    text = CASE.replace("{family: llama, layers: 2, hidden: 256, heads: 4, ffn_hidden: 512, vocab: 1000}",
                        "{catalog: llama-3-8b}") % "h100-sxm"
    (case,) = load_cases(_write(tmp_path, text))
    assert case.model.name == "llama-3-8b"


@pytest.mark.parametrize("text,field", [
    (CASE % "h1000", "hardware.accelerator"),
    ("cases: [ {id: x, kind: cooking} ]", "kind"),
    ("cases: {}", "cases.yaml"),
    ("cases: [\n - id: x\n   kind: [unclosed", "line"),
])
def test_bad_case_files_name_the_field(tmp_path, text, field):
    with pytest.raises(InputError) as e:
        load_cases(_write(tmp_path, text))
    assert field in str(e.value)
