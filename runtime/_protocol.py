"""One connection's protocol state machine, with no sockets (h11's sans-IO style).

Bytes in (``receive_data``) give events out; calls like ``send_messages`` give bytes to write.
The asyncio transport in ``_node.py`` only moves bytes. docs/PROTOCOL.md is the specification.

States and transitions (anything else is a protocol error and closes the connection)::

    initiator: SENT_HELLO --welcome ok--> WAIT_READY --ready--> OPEN   (sends auth on the way)
    acceptor:  WAIT_HELLO --hello ok--> WAIT_AUTH --auth ok--> OPEN   (sends welcome, ready)
    any state  --error / bad bytes--> CLOSED

Handshake (nonces are 16 random bytes, macs are HMAC-SHA256 with the home's cluster secret over
a label and the transcript T = (version, nonce_a, nonce_b, name_a, name_b, epoch_a, epoch_b)):

    -> hello   {v, name, epoch, nonce_a}            name is None for an outside caller
    <- welcome {v, name, epoch, nonce_b, mac_b}     mac_b = H("welcome", T)
    -> auth    {mac_a, last}                        mac_a = H("auth", T, last)
    <- ready   {last, mac_r}                        mac_r = H("ready", T, last)

``last`` is the highest sequence number the sender has *durably logged* from the other side (the
coordinator's ``durable_from``, never merely executed): each side then forgets its messages up to
the other's ``last`` and resends the ones above it. Once OPEN, every frame in each direction is
sealed (``_wire.seal_message``) with that direction's session key, H("key a->b", T) or
H("key b->a", T), and numbered 0, 1, 2, ...: a frame altered, replayed, reordered, dropped or
injected in flight is refused and closes the connection. Until OPEN, frames are limited to
``PRE_AUTH_MESSAGE`` bytes. The messages once OPEN:

    msgs {b: [message, ...]}   peer messages, a batch per flush (calls and replies, numbered)
    ack  {upto}                the receiver's steps up to ``upto`` are durable
    call {id, m, a}            an outside caller's call, with its idempotency key
    result {id, ok, v}         the answer to it
    ping {} / pong {}          liveness
    error {why}                the sender is closing the connection because of ``why``
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from logformat import ValueCodecError

from ._errors import ProtocolError, WireError
from ._schema import (
    PROTOCOL_VERSION,
    PeerMessage,
    auth,
    error,
    hello,
    msgs,
    read_auth,
    read_error,
    read_hello,
    read_ready,
    read_welcome,
    ready,
    welcome,
)
from ._wire import MAX_MESSAGE, PRE_AUTH_MESSAGE, MessageDecoder, encode_message, seal_message

__all__ = [
    "PROTOCOL_VERSION",
    "Closed",
    "Connection",
    "Event",
    "Opened",
    "ProtocolError",
    "Received",
]


class State(Enum):
    SENT_HELLO = "sent-hello"
    WAIT_READY = "wait-ready"
    WAIT_HELLO = "wait-hello"
    WAIT_AUTH = "wait-auth"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Opened:
    """The handshake finished: ``peer`` (None for an outside caller) has executed up to ``last``."""

    peer: str | None
    epoch: int
    last: int


@dataclass(frozen=True, slots=True)
class Received:
    """Any message after the handshake (``msgs``, ``ack``, ``call``, ``result``, ``ping``...)."""

    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Closed:
    reason: str


Event = Opened | Received | Closed


def _mac(secret: bytes, label: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA256(secret, each of label and parts preceded by its length as u32 LE)."""
    h = hmac.new(secret, digestmod=hashlib.sha256)
    for part in (label, *parts):
        h.update(len(part).to_bytes(4, "little"))
        h.update(part)
    return h.digest()


def _name_bytes(name: str | None) -> bytes:
    return b"" if name is None else name.encode()


def _int_bytes(n: int) -> bytes:
    """An integer in a transcript: decimal ASCII (no width to overflow)."""
    return str(n).encode()


class Connection:
    """The protocol for one connection, on either side."""

    def __init__(
        self,
        *,
        me: str | None,
        epoch: int,
        secret: bytes,
        initiator: bool,
        last_from: Any = None,
        nonce: bytes | None = None,
    ) -> None:
        """``last_from(peer) -> int`` answers "what have I durably logged from peer" for the
        handshake."""
        self.me = me
        self.epoch = epoch
        self.peer: str | None = None
        self.peer_epoch = 0
        self._secret = secret
        self._nonce = nonce if nonce is not None else os.urandom(16)
        self._peer_nonce = b""
        self._transcript: tuple[bytes, ...] = ()
        self._send_key = b""
        self._sent = 0  # the counter of the next sealed frame we send
        self._last_from = last_from or (lambda _peer: 0)
        self._decoder = MessageDecoder(max_message=PRE_AUTH_MESSAGE)
        self.initiator = initiator
        self.state = State.SENT_HELLO if initiator else State.WAIT_HELLO
        self.close_reason: str | None = None

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    # -- outgoing --------------------------------------------------------------------------------

    def start(self) -> bytes:
        """The initiator's first bytes (empty for the acceptor, who waits for hello)."""
        if not self.initiator:
            return b""
        return encode_message(hello(self.me, self.epoch, self._nonce))

    def send(self, message: Mapping[str, Any]) -> bytes:
        """One message once open, sealed with our direction's key and numbered."""
        if self.state is not State.OPEN:
            raise RuntimeError(f"cannot send {message.get('t')!r} before the connection is open")
        data = seal_message(message, self._send_key, self._sent)
        self._sent += 1
        return data

    def send_messages(self, batch: list[PeerMessage]) -> bytes:
        """Peer messages as sealed ``msgs`` frames, as many as the wire's size limit needs (a
        batch of large messages can exceed it though each message fits on its own)."""
        try:
            return self.send(msgs(batch))
        except ValueCodecError:
            if len(batch) <= 1:
                raise
            half = len(batch) // 2
            return self.send_messages(batch[:half]) + self.send_messages(batch[half:])

    def send_error(self, why: str) -> bytes:
        """Bytes telling the peer why we close; the connection is closed afterwards."""
        data = self.send(error(why)) if self.state is State.OPEN else encode_message(error(why))
        self.state = State.CLOSED
        self.close_reason = why
        return data

    # -- incoming --------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> tuple[list[Event], bytes]:
        """Take received bytes; return the events they complete and bytes to send in answer."""
        if self.state is State.CLOSED:
            return [], b""
        self._decoder.feed(data)
        events: list[Event] = []
        reply = bytearray()
        try:
            while not self.closed:
                message = self._decoder.next_message()
                if message is None:
                    break
                reply += self._handle(message, events)
        except (WireError, ProtocolError) as exc:
            reply += self.send_error(str(exc))
            events.append(Closed(str(exc)))
        return events, bytes(reply)

    def _handle(self, m: dict[str, Any], events: list[Event]) -> bytes:
        t = m["t"]
        if t == "error":
            self.state = State.CLOSED
            self.close_reason = f"peer closed: {read_error(m)}"
            events.append(Closed(self.close_reason))
            return b""
        if self.state is State.OPEN:
            events.append(Received(m))
            return b""
        if self.state is State.WAIT_HELLO and t == "hello":
            return self._on_hello(m)
        if self.state is State.SENT_HELLO and t == "welcome":
            return self._on_welcome(m)
        if self.state is State.WAIT_AUTH and t == "auth":
            return self._on_auth(m, events)
        if self.state is State.WAIT_READY and t == "ready":
            return self._on_ready(m, events)
        raise ProtocolError(f"unexpected {t!r} message during the handshake ({self.state.value})")

    def _set_transcript(self, peer_nonce: bytes) -> None:
        """What every handshake mac and both session keys cover, once both hellos are known."""
        if self.initiator:
            names, epochs = (self.me, self.peer), (self.epoch, self.peer_epoch)
            nonces = (self._nonce, peer_nonce)
        else:
            names, epochs = (self.peer, self.me), (self.peer_epoch, self.epoch)
            nonces = (peer_nonce, self._nonce)
        self._peer_nonce = peer_nonce
        self._transcript = (
            _int_bytes(PROTOCOL_VERSION),
            *nonces,
            *map(_name_bytes, names),
            *map(_int_bytes, epochs),
        )

    def _handshake_mac(self, label: bytes, *more: bytes) -> bytes:
        return _mac(self._secret, label, *self._transcript, *more)

    def _open(self) -> None:
        """Both sides proved they know the secret: from now on every frame is sealed."""
        mine, theirs = (b"key a->b", b"key b->a") if self.initiator else (b"key b->a", b"key a->b")
        self._send_key = self._handshake_mac(mine)
        self._decoder.authenticate(self._handshake_mac(theirs))
        self._decoder.set_limit(MAX_MESSAGE)
        self.state = State.OPEN

    def _on_hello(self, m: dict[str, Any]) -> bytes:
        theirs = read_hello(m)
        self.peer, self.peer_epoch = theirs["name"], theirs["epoch"]
        self._set_transcript(theirs["nonce"])
        self.state = State.WAIT_AUTH
        mac = self._handshake_mac(b"welcome")
        return encode_message(welcome(self.me, self.epoch, self._nonce, mac))

    def _on_welcome(self, m: dict[str, Any]) -> bytes:
        theirs = read_welcome(m)
        self.peer, self.peer_epoch = theirs["name"], theirs["epoch"]
        self._set_transcript(theirs["nonce"])
        if not hmac.compare_digest(theirs["mac"], self._handshake_mac(b"welcome")):
            raise ProtocolError(
                "authentication failed: the peer does not know the cluster secret, or the "
                "handshake was altered in flight"
            )
        self.state = State.WAIT_READY
        name = self.peer
        last = self._last_from(name) if name is not None else 0
        return encode_message(auth(self._handshake_mac(b"auth", _int_bytes(last)), last))

    def _on_auth(self, m: dict[str, Any], events: list[Event]) -> bytes:
        theirs = read_auth(m)
        expected = self._handshake_mac(b"auth", _int_bytes(theirs["last"]))
        if not hmac.compare_digest(theirs["mac"], expected):
            raise ProtocolError(
                "authentication failed: the peer does not know the cluster secret, or the "
                "handshake was altered in flight"
            )
        mine = self._last_from(self.peer) if self.peer is not None else 0
        data = encode_message(ready(mine, self._handshake_mac(b"ready", _int_bytes(mine))))
        self._open()
        events.append(Opened(self.peer, self.peer_epoch, theirs["last"]))
        return data

    def _on_ready(self, m: dict[str, Any], events: list[Event]) -> bytes:
        theirs = read_ready(m)
        expected = self._handshake_mac(b"ready", _int_bytes(theirs["last"]))
        if not hmac.compare_digest(theirs["mac"], expected):
            raise ProtocolError("authentication failed: the ready message was altered in flight")
        self._open()
        events.append(Opened(self.peer, self.peer_epoch, theirs["last"]))
        return b""
