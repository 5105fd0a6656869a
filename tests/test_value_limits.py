"""Values too large for the wire fail where they are produced, and nothing poison is logged.

A result or a call argument over ``MAX_VALUE_BYTES`` used to be logged, then never delivered:
the caller timed out on every retry and a link looped on a reply it could not send.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from logformat import LogReader
from runtime import RemoteError, connect
from runtime._executor import Executor
from runtime._schema import MAX_VALUE_BYTES
from tests._instances import Cluster
from tests.apps.big import HUGE, Asker, Big


def test_a_result_too_large_is_an_error_outcome() -> None:
    ex = Executor(Big, name="big")
    ex.execute({"k": "start"}, lsn=1)
    record = ex.execute({"k": "call", "id": "k", "m": "blob", "a": [HUGE]}, lsn=2)
    (key, ok, value) = record["rep"][0]
    assert (key, ok, value[0]) == ("k", False, "ValueCodecError")
    assert f"{MAX_VALUE_BYTES:,}" in value[1]
    fine = ex.execute({"k": "call", "id": "j", "m": "blob", "a": [1000]}, lsn=3)
    assert fine["rep"][0][1] is True


def test_a_call_argument_too_large_raises_in_the_handler() -> None:
    ex = Executor(Asker, name="asker")
    record = ex.execute({"k": "start"}, lsn=1)
    assert [m[:3] for m in record["out"]] == [["big", 1, "c"]]  # the first call: a small size
    reply = ex.execute(
        {"k": "reply", "from": "big", "seq": 1, "re": 1, "err": ["ValueCodecError", "too big"]},
        lsn=2,
    )
    assert reply["emit"][0] == ["reply refused", "ValueCodecError"]
    assert reply["emit"][1] == ["call refused", "ValueCodecError"]
    assert [m[3] for m in reply["out"]] == ["count"]  # the huge call was never sent


@pytest.mark.slow
def test_end_to_end_the_caller_gets_an_error_promptly(home: Path, cluster: Cluster) -> None:
    big = cluster.start("tests/apps/big.py:Big", "big")
    with connect(home, timeout=20) as caller, pytest.raises(RemoteError, match="ValueCodecError"):
        caller.call("big", "blob", HUGE)
    asker = cluster.start("tests/apps/big.py:Asker", "asker")
    until = time.monotonic() + 30
    while len(asker.stdout) < 3 and time.monotonic() < until:
        time.sleep(0.05)
    assert [json.loads(line) for line in asker.stdout] == [
        ["reply refused", "ValueCodecError"],
        ["call refused", "ValueCodecError"],
        ["after", 2],
    ]
    assert big.stop() == 0 and asker.stop() == 0
    with LogReader(home / "logs" / "big") as reader:
        biggest = max(len(json.dumps(r.value, default=str)) for r in reader.records(1))
    assert biggest < 10_000  # nothing huge was logged


def test_a_batch_too_large_for_one_frame_goes_out_as_several(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Each message fits the wire, a batch of them may not: it is split, in order (a link once
    failed to send such a batch at all)."""
    import runtime._wire as wire
    from runtime._protocol import Connection, Received

    a = Connection(me="a", epoch=1, secret=b"s" * 32, initiator=True)
    b = Connection(me="b", epoch=1, secret=b"s" * 32, initiator=False)
    data = a.start()
    while data:
        _events, reply = b.receive_data(data)
        _events, data = a.receive_data(reply)
    monkeypatch.setattr(wire, "MAX_MESSAGE", 10_000)
    batch = [["b", seq, "c", "inc", ["x" * 3000], True] for seq in range(1, 11)]
    frames = a.send_messages(batch)
    events, _ = b.receive_data(frames)
    got = [m for e in events if isinstance(e, Received) for m in e.message["b"]]
    assert got == batch
    assert len(events) >= 4  # no frame over the limit
