"""The value codec: types survive exactly; bad input is the codec's own error."""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import math
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from logformat import ValueCodecError, pack_value, unpack_value
from tests.strategies import values


def _same(a: Any, b: Any) -> bool:
    """Equal, with types, all the way down (1 == 1.0 == True would hide a lost type)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@given(values)
def test_round_trip_preserves_values_and_types(value: Any) -> None:
    assert _same(unpack_value(pack_value(value)), value)


def test_tuples_stay_tuples_nested_and_aware_datetimes_keep_their_offset() -> None:
    tz = dt.timezone(dt.timedelta(hours=-3))
    value = {"t": (1, (2, [3, (4,)])), "when": dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=tz)}
    back = unpack_value(pack_value(value))
    assert back == value
    assert type(back["t"][1]) is tuple and type(back["t"][1][1][1]) is tuple
    assert back["when"].utcoffset() == dt.timedelta(hours=-3)


def test_special_floats() -> None:
    assert math.isnan(unpack_value(pack_value(float("nan"))))
    assert unpack_value(pack_value(float("-inf"))) == float("-inf")


def test_subclasses_of_plain_types_are_stored_as_their_base() -> None:
    class Colour(enum.IntEnum):
        RED = 1

    class Bag(dict[str, int]):
        pass

    back = unpack_value(pack_value([Colour.RED, Bag(a=1)]))
    assert back == [1, {"a": 1}]
    assert type(back[0]) is int and type(back[1]) is dict


@pytest.mark.parametrize("bad", [object(), print, lambda: 1, {1: object()}])
def test_unstorable_values_name_the_type(bad: Any) -> None:
    with pytest.raises(ValueCodecError, match="cannot"):
        pack_value(bad)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_the_codec_error(data: bytes) -> None:
    with contextlib.suppress(ValueCodecError):
        unpack_value(data)


@pytest.mark.parametrize(
    "payload",
    [
        msgpack.ExtType(99, b""),  # unknown extension
        msgpack.ExtType(7, b"short"),  # a UUID needs 16 bytes
        msgpack.ExtType(5, b"not-a-date"),
        msgpack.ExtType(6, b"1..2"),
        msgpack.ExtType(1, b"\xc1"),  # not msgpack inside
    ],
)
def test_bad_extension_payloads_raise_the_codec_error(payload: msgpack.ExtType) -> None:
    with pytest.raises(ValueCodecError):
        unpack_value(msgpack.packb(payload))
