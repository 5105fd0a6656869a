"""The value codec shared by log records and checkpoints: msgpack plus a few extension types.

msgpack alone loses Python types that state commonly holds (a tuple comes back as a list, a set
cannot be encoded at all). Each such type gets a msgpack extension code whose payload is itself
msgpack or a fixed text form, so another language can decode it without Python. Pickle is not
part of this codec: it lives in the checkpoint module behind an explicit opt-in.

Extension codes (payload in brackets; see FORMAT.md for the byte-level rules):

    1 tuple      [msgpack array of the items]
    2 set        [msgpack array of the items]
    3 frozenset  [msgpack array of the items]
    4 datetime   [ISO-8601 text, UTF-8; an aware datetime keeps its UTC offset, not its zone name]
    5 date       [ISO-8601 text, UTF-8]
    6 Decimal    [decimal text, UTF-8]
    7 UUID       [16 raw bytes]
    8 int        [two's-complement big-endian bytes] for integers beyond msgpack's 64 bits

Big integers are rare, so they cost nothing on the common path: packing is attempted as is,
and only when msgpack reports an integer out of range is the value rewritten with type 8.
"""

from __future__ import annotations

import datetime as _dt
import uuid as _uuid
from decimal import Decimal
from typing import Any

import msgpack

from ._errors import ValueCodecError

EXT_TUPLE = 1
EXT_SET = 2
EXT_FROZENSET = 3
EXT_DATETIME = 4
EXT_DATE = 5
EXT_DECIMAL = 6
EXT_UUID = 7
EXT_BIGINT = 8


_PLAIN_BASES: tuple[Any, ...] = (bool, int, float, str, bytes, list, dict)


def _default(obj: Any) -> Any:
    # strict_types=True sends tuples and subclasses of builtins here, so order matters:
    # exact container types first, then scalars. datetime is a subclass of date.
    if isinstance(obj, tuple):
        return msgpack.ExtType(EXT_TUPLE, _pack_inner(list(obj)))
    if isinstance(obj, frozenset):
        return msgpack.ExtType(EXT_FROZENSET, _pack_inner(list(obj)))
    if isinstance(obj, set):
        return msgpack.ExtType(EXT_SET, _pack_inner(list(obj)))
    if isinstance(obj, _dt.datetime):
        return msgpack.ExtType(EXT_DATETIME, obj.isoformat().encode())
    if isinstance(obj, _dt.date):
        return msgpack.ExtType(EXT_DATE, obj.isoformat().encode())
    if isinstance(obj, Decimal):
        return msgpack.ExtType(EXT_DECIMAL, str(obj).encode())
    if isinstance(obj, _uuid.UUID):
        return msgpack.ExtType(EXT_UUID, obj.bytes)
    # Subclasses of plain types (an IntEnum, a str subclass) are stored as their base value.
    for base in _PLAIN_BASES:
        if isinstance(obj, base):
            return base(obj)
    raise TypeError(f"cannot encode a value of type {type(obj).__qualname__}")


def _ext_hook(code: int, data: bytes) -> Any:
    try:
        if code == EXT_TUPLE:
            return tuple(_unpack_inner(data))
        if code == EXT_SET:
            return set(_unpack_inner(data))
        if code == EXT_FROZENSET:
            return frozenset(_unpack_inner(data))
        if code == EXT_DATETIME:
            return _dt.datetime.fromisoformat(data.decode())
        if code == EXT_DATE:
            return _dt.date.fromisoformat(data.decode())
        if code == EXT_DECIMAL:
            return Decimal(data.decode())
        if code == EXT_UUID:
            return _uuid.UUID(bytes=data)
        if code == EXT_BIGINT:
            if not data:
                raise ValueCodecError("empty payload for a big integer")
            return int.from_bytes(data, "big", signed=True)
    except ValueCodecError:
        raise
    except Exception as exc:
        raise ValueCodecError(f"bad payload for extension type {code}: {exc}") from exc
    raise ValueCodecError(f"unknown extension type {code}")


def _pack_inner(value: Any) -> bytes:
    try:
        return _packb(value)
    except OverflowError:
        return _packb(widen_big_ints(value))


def _packb(value: Any) -> bytes:
    return msgpack.packb(value, default=_default, strict_types=True, use_bin_type=True)  # type: ignore[no-any-return]


_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def widen_big_ints(value: Any) -> Any:
    """``value`` with every integer beyond 64 bits replaced by its extension-type form."""
    if type(value) is int:
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value
        size = (value.bit_length() + 8) // 8
        return msgpack.ExtType(EXT_BIGINT, value.to_bytes(size, "big", signed=True))
    if type(value) is list:
        return [widen_big_ints(v) for v in value]
    if type(value) is dict:
        return {widen_big_ints(k): widen_big_ints(v) for k, v in value.items()}
    if type(value) is tuple:
        return tuple(widen_big_ints(v) for v in value)
    if type(value) in (set, frozenset):
        return type(value)(widen_big_ints(v) for v in value)
    return value


def _unpack_inner(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


def new_packer() -> msgpack.Packer:
    """A reusable packer with this codec's rules (reuse it on hot paths: it keeps its buffer)."""
    return msgpack.Packer(default=_default, strict_types=True, use_bin_type=True)


def new_unpacker() -> msgpack.Unpacker:
    """A streaming unpacker with this codec's rules, fed with ``feed()``."""
    return msgpack.Unpacker(
        None, ext_hook=_ext_hook, raw=False, strict_map_key=False, max_buffer_size=2**31 - 1
    )


def pack_value(value: Any) -> bytes:
    """Encode one value; raises :class:`ValueCodecError` naming the type that cannot be stored."""
    try:
        return _pack_inner(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueCodecError(f"cannot store value: {exc}") from exc


def unpack_value(data: bytes) -> Any:
    """Decode exactly one value; trailing bytes or bad input raise :class:`ValueCodecError`."""
    try:
        return _unpack_inner(data)
    except ValueCodecError:
        raise
    except Exception as exc:
        raise ValueCodecError(f"cannot decode value: {exc}") from exc


def unpack_nth(data: bytes, index: int) -> Any:
    """Decode only value number ``index`` (from 0) of a concatenation; skipping is cheap."""
    unpacker = new_unpacker()
    unpacker.feed(data)
    try:
        for _ in range(index):
            unpacker.skip()
        return unpacker.unpack()
    except ValueCodecError:
        raise
    except Exception as exc:
        raise ValueCodecError(f"cannot decode record {index}: {exc}") from exc


def unpack_values(data: bytes, count: int) -> list[Any]:
    """Decode exactly ``count`` concatenated values (a frame body)."""
    unpacker = new_unpacker()
    unpacker.feed(data)
    out: list[Any] = []
    try:
        for _ in range(count):
            out.append(unpacker.unpack())
    except msgpack.OutOfData as exc:
        raise ValueCodecError(f"body holds fewer than {count} records") from exc
    except ValueCodecError:
        raise
    except Exception as exc:
        raise ValueCodecError(f"cannot decode record: {exc}") from exc
    if unpacker.tell() != len(data):
        raise ValueCodecError(f"{len(data) - unpacker.tell()} stray bytes after {count} records")
    return out
