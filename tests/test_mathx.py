"""parasim.mathx.cdiv: ceiling division, checked against exact rational arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
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
