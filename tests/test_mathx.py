"""parasim.mathx.cdiv: ceiling division, checked against exact rational arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parasim.mathx import cdiv


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-10**30, max_value=10**30), st.integers(min_value=1, max_value=10**20))
def test_cdiv_is_the_exact_ceiling_for_integers_of_any_size(a, b):
    assert cdiv(a, b) == math.ceil(Fraction(a, b))


def test_cdiv_on_numpy_arrays_is_elementwise():
    tokens = np.array([0, 1, 15, 16, 17, 33], dtype=np.int64)
    assert cdiv(tokens, 16).tolist() == [0, 1, 1, 1, 2, 3]
    assert cdiv(tokens, 16).dtype == np.int64


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=50),
       st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]))
def test_quantile_is_numpys_linear_quantile(xs, q):
    """The validation reports' median / p90 rule agrees with numpy's default (linear) method."""
    import numpy as np

    from parasim.mathx import quantile

    assert quantile(sorted(xs), q) == pytest.approx(float(np.quantile(xs, q)), rel=1e-12, abs=1e-9)
