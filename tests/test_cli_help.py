"""Every command's --help renders (rich markup in help strings once broke `plan serve --help`)."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize("cmd", [[], ["train"], ["serve"], ["plan"], ["plan", "train"], ["plan", "serve"],
                                 ["validate"], ["inspect"], ["models"], ["gpus"]])
def test_help_renders(cmd):
    r = run_cli(*cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "Usage" in r.stdout
