"""Every message after the handshake is authenticated, and the handshake itself is bounded.

Sans-IO first: two ``Connection`` objects and the bytes between them, with a relay in the middle
that does not know the cluster secret and flips, replays, reorders, drops or injects frames, or
alters the ``last`` values and epochs of the handshake. Then real instance processes: a
man-in-the-middle relay on loopback that rewrites a call after the handshake, and a flood of
connections that never finish the handshake (docs/PROTOCOL.md sections 1 and 2).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from runtime import connect
from runtime._home import Home
from runtime._link import HANDSHAKE_SECONDS, MAX_UNAUTHENTICATED
from runtime._protocol import PROTOCOL_VERSION, Closed, Connection, Opened, Received, State
from runtime._schema import ack, call, msgs
from runtime._wire import (
    PRE_AUTH_MESSAGE,
    MessageDecoder,
    encode_message,
    seal_message,
)
from tests._instances import Instance
from tests.wireutil import split_frames

SECRET = b"k" * 32
TALLY = "tests/apps/chatter.py:Tally"
_LEN = struct.Struct("<I")


def _decode(frame: bytes) -> dict[str, Any]:
    decoder = MessageDecoder()
    decoder.feed(frame)
    (message,) = decoder.messages()
    return message


def _handshake_frames(
    a: Connection, b: Connection, tamper: Any = None
) -> tuple[list[Any], list[Any]]:
    """Run the handshake, passing each frame through ``tamper(kind, frame) -> frame``."""
    a_events: list[Any] = []
    b_events: list[Any] = []
    to_b = a.start()
    while to_b and not (a.closed and b.closed):
        if tamper is not None:
            to_b = b"".join(tamper(_decode(f)["t"], f) for f in split_frames(to_b))
        events, to_a = b.receive_data(to_b)
        b_events += events
        if not to_a:
            break
        if tamper is not None and not b.closed:
            to_a = b"".join(tamper(_decode(f)["t"], f) for f in split_frames(to_a))
        events, to_b = a.receive_data(to_a)
        a_events += events
    return a_events, b_events


def _pair(**b_options: Any) -> tuple[Connection, Connection]:
    a = Connection(me="alice", epoch=3, secret=SECRET, initiator=True, last_from=lambda _p: 7)
    b = Connection(
        me="bob", epoch=5, secret=SECRET, initiator=False, last_from=lambda _p: 9, **b_options
    )
    a_events, b_events = _handshake_frames(a, b)
    assert a_events == [Opened("bob", 5, 9)] and b_events == [Opened("alice", 3, 7)]
    return a, b


def _refused(conn: Connection, data: bytes, why: str) -> None:
    """``conn`` must refuse ``data``: no message gets through, it answers error and closes."""
    events, reply = conn.receive_data(data)
    assert not any(isinstance(e, Received) for e in events), events
    assert isinstance(events[-1], Closed) and why in events[-1].reason, events
    assert conn.state is State.CLOSED and conn.close_reason == events[-1].reason
    assert reply  # the error, for an honest peer to read


# -- after the handshake: a relay without the secret ---------------------------------------------


def test_an_honest_exchange_passes_both_ways() -> None:
    a, b = _pair()
    for n in range(3):
        events, _ = b.receive_data(a.send(msgs([["bob", n + 1, "c", "inc", [], True]])))
        assert events == [Received(msgs([["bob", n + 1, "c", "inc", [], True]]))]
        events, _ = a.receive_data(b.send(ack(n + 1)))
        assert events == [Received(ack(n + 1))]


@pytest.mark.parametrize("where", ["length", "counter", "body", "tag"])
@pytest.mark.parametrize("direction", ["a->b", "b->a"])
@pytest.mark.parametrize("size", [20, 8000], ids=["small frame", "large frame"])  # both MACs
def test_a_flipped_byte_anywhere_in_a_message_is_refused(
    where: str, direction: str, size: int
) -> None:
    a, b = _pair()
    sender, receiver = (a, b) if direction == "a->b" else (b, a)
    frame = bytearray(sender.send(msgs([["bob", 1, "c", "inc", ["x" * size], True]])))
    if where == "length":  # a length the receiver would wait for: make it huge instead
        frame[3] ^= 0x40
        _refused(receiver, bytes(frame), "exceeds")
        return
    frame[{"counter": 4, "body": 20, "tag": len(frame) - 1}[where]] ^= 0x01
    _refused(receiver, bytes(frame), "authentication failed")


def test_a_shortened_frame_is_refused() -> None:
    a, b = _pair()
    frame = a.send(ack(4))
    (size,) = _LEN.unpack_from(frame, 0)
    _refused(b, _LEN.pack(size - 1) + frame[4:-1], "authentication failed")


def test_a_replayed_message_is_refused() -> None:
    """An ack replayed later (or any message) would be a second, different meaning."""
    a, b = _pair()
    first = b.send(ack(1))
    assert a.receive_data(first)[0] == [Received(ack(1))]
    _refused(a, first, "replayed, reordered or dropped")


def test_reordered_messages_are_refused() -> None:
    a, b = _pair()
    one, two = a.send(msgs([])), a.send({"t": "ping"})
    _refused(b, two + one, "number 1 arrived where 0 was due")


def test_a_dropped_message_is_noticed_at_the_next_one() -> None:
    a, b = _pair()
    a.send(msgs([["bob", 1, "c", "inc", [], True]]))  # lost in flight
    _refused(b, a.send(msgs([["bob", 2, "c", "inc", [], True]])), "arrived where 0 was due")


def test_a_message_from_another_session_is_refused() -> None:
    """Same secret, same names, an earlier connection: its keys differ (fresh nonces)."""
    old_a, _old_b = _pair()
    recorded = old_a.send(msgs([["bob", 1, "c", "inc", [], True]]))
    _a, b = _pair()
    _refused(b, recorded, "authentication failed")


@pytest.mark.parametrize(
    "forged",
    [
        encode_message(ack(10**6)),  # an unsealed ack: "forget everything"
        encode_message({"t": "error", "why": "go away"}),
        seal_message(ack(10**6), b"not the session key", 0),  # a relay's own key
        b"\x05\x00\x00\x00\x81\xa1t\xa1x",  # too short to be sealed
    ],
    ids=["plain-ack", "plain-error", "wrong-key", "short"],
)
def test_an_injected_message_is_refused(forged: bytes) -> None:
    a, _b = _pair()
    _refused(a, forged, "")
    assert a.close_reason is not None and not a.close_reason.startswith("peer closed")


def test_an_unstorable_message_does_not_use_up_a_number() -> None:
    a, b = _pair()
    with pytest.raises(Exception, match="cannot store"):
        a.send({"t": "msgs", "b": [object()]})
    assert b.receive_data(a.send({"t": "ping"}))[0] == [Received({"t": "ping"})]


# -- the handshake: last values and epochs are covered -------------------------------------------


def _rewrite(kind: str, field: str, value: Any) -> Any:
    def tamper(t: str, frame: bytes) -> bytes:
        if t != kind:
            return frame
        message = _decode(frame)
        message[field] = value
        return encode_message(message)

    return tamper


@pytest.mark.parametrize(
    ("kind", "field", "value", "refuser"),
    [
        ("auth", "last", 10**9, "acceptor"),  # "I have everything of yours": bob would forget
        ("auth", "last", 0, "acceptor"),
        ("ready", "last", 10**9, "initiator"),
        ("ready", "last", 0, "initiator"),
        ("hello", "epoch", 99, "initiator"),  # bob signs what he saw: alice sees the change
        ("welcome", "epoch", 99, "initiator"),
        ("hello", "name", "mallory", "initiator"),
        ("welcome", "name", "mallory", "initiator"),
    ],
)
def test_an_altered_handshake_field_is_refused(
    kind: str, field: str, value: Any, refuser: str
) -> None:
    a = Connection(me="alice", epoch=3, secret=SECRET, initiator=True, last_from=lambda _p: 7)
    b = Connection(me="bob", epoch=5, secret=SECRET, initiator=False, last_from=lambda _p: 9)
    a_events, b_events = _handshake_frames(a, b, _rewrite(kind, field, value))
    refusing = a_events if refuser == "initiator" else b_events
    assert isinstance(refusing[-1], Closed) and "authentication failed" in refusing[-1].reason
    if refuser == "initiator":
        assert not any(isinstance(e, Opened) for e in a_events)
    else:
        assert b_events == [refusing[-1]] and a.state is not State.OPEN


def test_a_stripped_ready_mac_is_refused() -> None:
    def tamper(t: str, frame: bytes) -> bytes:
        if t != "ready":
            return frame
        message = _decode(frame)
        del message["mac"]
        return encode_message(message)

    a = Connection(me="alice", epoch=3, secret=SECRET, initiator=True)
    b = Connection(me="bob", epoch=5, secret=SECRET, initiator=False)
    a_events, _ = _handshake_frames(a, b, tamper)
    assert isinstance(a_events[-1], Closed) and "mac" in a_events[-1].reason


def test_the_version_is_two() -> None:
    assert PROTOCOL_VERSION == 2
    assert _decode(Connection(me="a", epoch=1, secret=SECRET, initiator=True).start())["v"] == 2


# -- the pre-authentication size limit -----------------------------------------------------------


def test_a_big_frame_before_authentication_is_refused_and_allowed_after() -> None:
    fresh = Connection(me="bob", epoch=5, secret=SECRET, initiator=False)
    _refused(fresh, _LEN.pack(PRE_AUTH_MESSAGE + 1), f"exceeds the {PRE_AUTH_MESSAGE} limit")
    a, b = _pair()
    big = msgs([["bob", 1, "c", "inc", ["x" * (2 * PRE_AUTH_MESSAGE)], True]])
    assert b.receive_data(a.send(big))[0] == [Received(big)]


# -- a real instance behind a man-in-the-middle relay ---------------------------------------------




def _address(home: Path) -> tuple[str, int]:
    record = Home(home).lookup("tally")
    assert record is not None
    return record.host, record.port


class Relay:
    """A TCP relay on loopback between a caller and the instance, without the secret: it counts
    the caller's frames and rewrites ``old`` into ``new`` (same length) in the ones after the
    handshake (hello and auth are the caller's first two frames)."""

    def __init__(self, target: tuple[str, int], old: bytes, new: bytes) -> None:
        self.target, self.old, self.new = target, old, new
        self.rewritten = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self._sockets = [self._server]
        self.port = self._server.getsockname()[1]
        self._threads = [threading.Thread(target=self._serve, daemon=True)]
        self._threads[0].start()

    def _serve(self) -> None:
        caller, _ = self._server.accept()
        instance = socket.create_connection(self.target)
        self._sockets += [caller, instance]
        back = threading.Thread(target=self._pipe, args=(instance, caller, False), daemon=True)
        self._threads.append(back)
        back.start()
        self._pipe(caller, instance, True)

    def close(self) -> None:
        for thread in self._threads:
            thread.join(5)
        for sock in self._sockets:
            sock.close()

    def _pipe(self, src: socket.socket, dst: socket.socket, rewrite: bool) -> None:
        buf = b""
        frames = 0
        try:
            while chunk := src.recv(65536):
                buf += chunk
                while len(buf) >= 4 and len(buf) >= 4 + _LEN.unpack_from(buf, 0)[0]:
                    size = _LEN.unpack_from(buf, 0)[0]
                    frame, buf = buf[: 4 + size], buf[4 + size :]
                    frames += 1
                    if rewrite and frames > 2 and self.old in frame:
                        frame = frame.replace(self.old, self.new)
                        self.rewritten += 1
                    dst.sendall(frame)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def _wait_for(instance: Instance, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in instance.stderr:
            if text in line:
                return line
        time.sleep(0.02)
    raise AssertionError(f"{text!r} not logged: {instance.stderr[-5:]}")


def test_a_call_rewritten_by_a_relay_is_not_executed(tally: Instance) -> None:
    home = tally.home
    relay = Relay(_address(home), b"victim", b"attack")
    conn = Connection(me=None, epoch=0, secret=Home(home).secret(), initiator=True)
    events: list[Any] = []
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as sock:
        sock.sendall(conn.start())
        while conn.state is not State.OPEN:
            got, reply = conn.receive_data(sock.recv(65536))
            events += got
            if reply:
                sock.sendall(reply)
        sock.sendall(conn.send(call("k1", "inc", ["victim", 1])))
        while not conn.closed:
            data = sock.recv(65536)
            if not data:
                break
            got, _reply = conn.receive_data(data)
            events += got
    relay.close()
    assert relay.rewritten == 1
    assert not any(isinstance(e, Received) and e.message["t"] == "result" for e in events)
    line = _wait_for(tally, "message authentication failed")
    assert "dropped a connection from an outside caller" in line
    with connect(home) as honest:
        assert honest.call("tally", "inc", "honest", 1) == 1  # the rewritten call never ran
        assert honest.call("tally", "state")["seen"] == {"honest": [1]}
    assert tally.proc is not None and tally.proc.poll() is None


# -- connections that never finish the handshake --------------------------------------------------


def test_a_flood_of_idle_connections_is_bounded_and_honest_callers_are_served(
    tally: Instance,
) -> None:
    home = tally.home
    address = _address(home)
    hello = Connection(me=None, epoch=0, secret=b"x", initiator=True).start()
    flood = []
    opened = time.monotonic()
    for i in range(200):
        sock = socket.create_connection(address, timeout=10)
        if i % 2:
            sock.sendall(hello[: len(hello) // 2])  # half a hello, then nothing
        flood.append(sock)
    with connect(home, timeout=10) as honest:
        started = time.monotonic()
        assert honest.call("tally", "inc", "honest", 1) == 1
        assert time.monotonic() - started < 2.0  # served at once, not after the deadline
    assert f"over the cap of {MAX_UNAUTHENTICATED}" in _wait_for(tally, "over the cap")

    # A pre-authentication frame over the small limit is refused at its length.
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(_LEN.pack(PRE_AUTH_MESSAGE + 1) + b"x" * 1000)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert f"exceeds the {PRE_AUTH_MESSAGE} limit" in _decode(answer)["why"]

    # Every idle connection is closed by the deadline (the oldest ones earlier, to make room).
    for sock in flood:
        sock.settimeout(max(0.1, opened + HANDSHAKE_SECONDS + 3 - time.monotonic()))
        # closed with our half hello unread, the kernel answers with a reset instead of EOF
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(100) == b""
        sock.close()
    assert time.monotonic() - opened < HANDSHAKE_SECONDS + 3
    _wait_for(tally, f"past the {HANDSHAKE_SECONDS:g} s handshake deadline")
    with connect(home) as honest:
        assert honest.call("tally", "inc", "honest", 2) == 2
    assert tally.proc is not None and tally.proc.poll() is None
