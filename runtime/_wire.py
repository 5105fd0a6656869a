"""Network framing, with no sockets: bytes in, messages out (h11's sans-IO style).

Every message on a connection is ``u32 little-endian length`` followed by that many bytes of one
msgpack map encoded with the log's value codec (so tuples, sets, datetimes, ... cross the wire
as they are stored). The first key every map has is ``t``, the message type; docs/PROTOCOL.md
lists them. A length above ``MAX_MESSAGE`` is refused before any byte of it is buffered, so a
peer cannot make us allocate by claiming a huge frame.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final

from logformat import ValueCodecError, pack_value, unpack_value

from ._errors import WireError

MAX_MESSAGE: Final = 64 * 1024 * 1024
_LEN: Final = struct.Struct("<I")


def encode_message(message: Mapping[str, Any]) -> bytes:
    """One message as bytes on the wire. ValueCodecError if it holds an unstorable value."""
    body = pack_value(message)
    if len(body) > MAX_MESSAGE:
        raise ValueCodecError(f"message of {len(body)} bytes exceeds the {MAX_MESSAGE} limit")
    return _LEN.pack(len(body)) + body


class MessageDecoder:
    """Feed received bytes; take whole messages out. Raises WireError on garbage, then stays failed."""

    def __init__(self, *, max_message: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._max = max_message
        self._failed: WireError | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_message(self) -> dict[str, Any] | None:
        if self._failed is not None:
            raise self._failed
        if len(self._buf) < 4:
            return None
        (size,) = _LEN.unpack_from(self._buf, 0)
        if size > self._max:
            self._failed = WireError(f"message length {size} exceeds the {self._max} limit")
            raise self._failed
        if len(self._buf) < 4 + size:
            return None
        body = bytes(self._buf[4 : 4 + size])
        del self._buf[: 4 + size]
        try:
            message = unpack_value(body)
        except ValueCodecError as exc:
            self._failed = WireError(f"undecodable message: {exc}")
            raise self._failed from exc
        if not isinstance(message, dict) or not isinstance(message.get("t"), str):
            self._failed = WireError("a message must be a map with a string 't' (type) key")
            raise self._failed
        return message

    def messages(self) -> list[dict[str, Any]]:
        """All whole messages buffered now."""
        out = []
        while (message := self.next_message()) is not None:
            out.append(message)
        return out
