"""A serving plan's fields are declared once, on ServingPlan: every field is a `serve -c` key and
has an option rule, and a key that is no field (nor a workload/SLO/output key) is refused."""

from __future__ import annotations

import dataclasses

import pytest

from parasim.cli import limits
from parasim.cli.serve_cmd import load_config
from parasim.errors import InputError
from parasim.serving.plan import ServingPlan


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(ServingPlan)])
def test_every_plan_field_is_a_config_key_with_a_rule(tmp_path, name):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"{name}: null\n")
    assert name in load_config(cfg)
    assert name in limits.SERVE


def test_a_key_that_is_no_field_is_refused_naming_it(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tensor_parallel: 2\n")
    with pytest.raises(InputError, match=r"c\.yaml:tensor_parallel"):
        load_config(cfg)
