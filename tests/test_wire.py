"""Bad input on the wire is refused with a reason; the instance keeps serving and loses nothing."""

from __future__ import annotations

import random
import socket
import struct
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime import connect
from runtime._home import Home
from runtime._protocol import PROTOCOL_VERSION, Closed, Connection, Opened, Received
from runtime._wire import MAX_MESSAGE, MessageDecoder, WireError, encode_message
from tests._instances import Instance

TALLY = "tests/apps/chatter.py:Tally"


# -- sans-IO: the decoder and the state machine, fed bytes ------------------------------------


@given(st.binary(max_size=300))
def test_arbitrary_bytes_either_decode_or_raise_the_wire_error(data: bytes) -> None:
    decoder = MessageDecoder()
    decoder.feed(data)
    try:
        decoder.messages()
    except WireError:
        with pytest.raises(WireError):  # and it stays failed
            decoder.next_message()


@given(
    st.lists(st.dictionaries(st.text(max_size=5), st.integers(), max_size=3), max_size=5), st.data()
)
def test_messages_survive_any_chunking(bodies: list[dict[str, int]], data: st.DataObject) -> None:
    messages = [{**b, "t": "msgs"} for b in bodies]  # a body may hold its own "t"
    stream = b"".join(encode_message(m) for m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = MessageDecoder()
    got = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoder.feed(stream[a:b])
        got.extend(decoder.messages())
    assert got == messages


@given(st.binary(max_size=400))
def test_the_handshake_state_machine_never_raises_on_garbage(data: bytes) -> None:
    conn = Connection(me="server", epoch=1, secret=b"s" * 32, initiator=False)
    events, _reply = conn.receive_data(data)
    assert all(isinstance(e, Opened | Received | Closed) for e in events)
    assert not any(isinstance(e, Opened) for e in events)  # garbage never authenticates


def test_a_huge_length_prefix_is_refused_before_buffering() -> None:
    decoder = MessageDecoder()
    decoder.feed(struct.pack("<I", MAX_MESSAGE + 1))
    with pytest.raises(WireError, match="exceeds"):
        decoder.next_message()


def _handshake(a: Connection, b: Connection) -> list[object]:
    events: list[object] = []
    data = a.start()
    sides = [b, a]
    turn = 0
    while data:
        got, data = sides[turn % 2].receive_data(data)
        events.extend(got)
        turn += 1
    return events


def test_wrong_secret_and_future_version_are_refused_with_a_reason() -> None:
    good = Connection(me="server", epoch=1, secret=b"right", initiator=False)
    events = _handshake(Connection(me="client", epoch=1, secret=b"wrong", initiator=True), good)
    assert any(isinstance(e, Closed) and "authentication failed" in e.reason for e in events)
    server = Connection(me="server", epoch=1, secret=b"right", initiator=False)
    hello = encode_message(
        {"t": "hello", "v": PROTOCOL_VERSION + 1, "name": "x", "epoch": 1, "nonce": b"n" * 16}
    )
    events, reply = server.receive_data(hello)
    assert isinstance(events[0], Closed) and "not supported" in events[0].reason
    assert b"not supported" in reply  # the peer is told why


# -- a live instance, attacked while an honest caller keeps using it ---------------------------




def _raw(home: Path, payload: bytes) -> bytes:
    record = Home(home).lookup("tally")
    assert record is not None
    with socket.create_connection((record.host, record.port), timeout=5) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _impostor_hello(home: Path, name: str, epoch: int, secret: bytes | None = None) -> bytes:
    """A whole handshake by a peer claiming ``name`` (with the real secret unless given one)."""
    conn = Connection(me=name, epoch=epoch, secret=secret or Home(home).secret(), initiator=True)
    record = Home(home).lookup("tally")
    assert record is not None
    with socket.create_connection((record.host, record.port), timeout=5) as sock:
        sock.sendall(conn.start())
        received = b""
        deadline = time.monotonic() + 5
        while not conn.closed and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
            _events, reply = conn.receive_data(chunk)
            if reply:
                sock.sendall(reply)
    return received


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        # A whole frame of garbage (seeded: a random length prefix between the bytes sent and
        # the size limit would leave the instance waiting for the rest, quietly).
        (
            lambda home: _raw(home, struct.pack("<I", 64) + random.Random(0).randbytes(64)),
            "dropped a connection",
        ),
        (lambda home: _raw(home, encode_message({"t": "hello", "v": 1})[:-3]), None),
        (lambda home: _raw(home, struct.pack("<I", 2**31) + b"x" * 64), "exceeds"),
        (
            lambda home: _raw(
                home,
                encode_message(
                    {"t": "hello", "v": 99, "name": "x", "epoch": 1, "nonce": b"n" * 16}
                ),
            ),
            "not supported",
        ),
        (
            lambda home: _impostor_hello(home, "client", 1, secret=b"not the cluster secret"),
            "authentication failed",
        ),
        (lambda home: _impostor_hello(home, "tally-friend", 1), "not registered"),
        (lambda home: _impostor_hello(home, "tally", 1), "which is this instance"),
    ],
)
def test_bad_peers_are_refused_and_the_instance_keeps_serving(
    tally: Instance,
    attack,
    reason: str | None,  # type: ignore[no-untyped-def]
) -> None:
    home = tally.home
    with connect(home) as honest:
        assert honest.call("tally", "inc", "honest", 1) == 1
        attack(home)
        assert honest.call("tally", "inc", "honest", 2) == 2  # same connection still served
    with connect(home) as fresh:
        assert fresh.call("tally", "state")["seen"] == {"honest": [1, 2]}  # nothing lost
    if reason is not None:
        deadline = time.monotonic() + 5
        while not any(reason in line for line in tally.stderr):
            assert time.monotonic() < deadline, tally.stderr[-5:]
            time.sleep(0.02)
    assert tally.proc is not None and tally.proc.poll() is None


def test_a_claimed_name_at_the_wrong_epoch_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    other = Instance(home, TALLY, "other")
    tally = Instance(home, TALLY, "tally")
    other.start()
    tally.start()
    try:
        _impostor_hello(home, "other", 99)  # a stale or forged "other"
        deadline = time.monotonic() + 5
        while not any("at epoch 99" in line for line in tally.stderr):
            assert time.monotonic() < deadline, tally.stderr[-5:]
            time.sleep(0.02)
        with connect(home) as honest:
            assert honest.call("tally", "inc", "x", 1) == 1
    finally:
        other.ensure_stopped()
        tally.ensure_stopped()
