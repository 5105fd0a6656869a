"""Hypothesis strategies for values the log stores."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.dates(),
    st.decimals(allow_nan=False, allow_infinity=False, places=4),
    st.uuids(),
)
hashable = st.one_of(st.integers(), st.text(max_size=10), st.binary(max_size=10), st.uuids())


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=6),
        st.tuples(children, children),
        st.dictionaries(st.text(max_size=8) | st.integers(), children, max_size=6),
        st.sets(hashable, max_size=6),
        st.frozensets(hashable, max_size=6),
    )


values = st.recursive(scalars, _containers, max_leaves=25)
records = st.lists(values, min_size=1, max_size=20)

__all__ = ["Decimal", "records", "uuid", "values"]
