"""Helpers for tests that read the wire's bytes: whole frames out of a byte string."""

from __future__ import annotations

import struct

_LEN = struct.Struct("<I")


def split_frames(data: bytes) -> list[bytes]:
    """The whole frames (length prefix included) that ``data`` holds, in order."""
    out = []
    while data:
        (size,) = _LEN.unpack_from(data, 0)
        out.append(data[: 4 + size])
        data = data[4 + size :]
    return out
