"""How the SQLite backend splits a batch of rows into multi-row INSERT statements (pure)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.storage import insert_sql
from gateway.storage.sqlite import statement_sizes


@pytest.mark.parametrize("rows, most, expected", [
    (0, 64, []),
    (1, 64, [1]),
    (63, 64, [32, 16, 8, 4, 2, 1]),
    (64, 64, [64]),
    (65, 64, [64, 1]),
    (1000, 64, [64] * 15 + [32, 8]),
    (100, 41, [41, 41, 16, 2]),  # SQLite before 3.32: 999 variables, 24 columns
    (3, 1, [1, 1, 1]),
])
def test_statement_sizes(rows, most, expected):
    assert statement_sizes(rows, most) == expected


@given(st.integers(0, 20_000), st.integers(1, 600))
def test_every_row_once_in_few_shapes(rows, most):
    sizes = statement_sizes(rows, most)
    assert sum(sizes) == rows and all(0 < s <= most for s in sizes)
    # SQLite caches each prepared shape: whatever the batch, at most log2(most) + 2 of them
    assert {s for s in sizes} <= {most} | {1 << k for k in range(most.bit_length())}


def test_insert_sql():
    assert insert_sql("t", ("a", "b"), 1) == "INSERT INTO t (a, b) VALUES (?, ?)"
    assert insert_sql("t", ("a",), 3) == "INSERT INTO t (a) VALUES (?), (?), (?)"
