"""The released mark carries a checksum; a mark that cannot be trusted re-releases, never skips.

Issue 12, item 4: a damaged ``released`` file (no checksum, only ever raised) lost an emit
for good. Now damage means printing again (at least once, tagged), never skipping.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from runtime._released import SIZE, decode, encode
from tests._instances import Cluster

COUNTER = "samples/counter/counter.py"


@given(st.integers(0, 2**64 - 1))
def test_a_mark_reads_back(lsn: int) -> None:
    assert decode(encode(lsn)).lsn == lsn


@given(st.integers(0, 2**40), st.integers(0, SIZE * 8 - 1))
def test_any_flipped_bit_is_noticed(lsn: int, bit: int) -> None:
    raw = bytearray(encode(lsn))
    raw[bit // 8] ^= 1 << (bit % 8)
    mark = decode(bytes(raw))
    assert mark.lsn is None and mark.problem


def test_the_unchecked_layout_of_earlier_versions_is_read() -> None:
    assert decode((41).to_bytes(8, "little")).lsn == 41
    assert decode(b"").lsn == 0
    assert decode(b"\x01\x02\x03").lsn is None


def _wait_lines(instance, count: int) -> list[str]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 30
    while len(instance.stdout) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return list(instance.stdout)


def test_a_damaged_mark_prints_again_instead_of_skipping(home: Path, cluster: Cluster) -> None:
    cluster.start(f"{COUNTER}:Server", "server")
    client = cluster.start(f"{COUNTER}:Client", "client", "--emit-tagged")
    first = [json.loads(line) for line in _wait_lines(client, 2)]
    assert [line["value"] for line in first] == [1, 2]
    client.kill()
    mark = client.log_dir() / "released"
    raw = bytearray(mark.read_bytes())
    raw[5] ^= 0xFF  # the LSN's low byte: unchecked, it would read as "everything released"
    mark.write_bytes(bytes(raw))
    client.start()
    again = [json.loads(line) for line in _wait_lines(client, 4)]
    assert again[2:] == first  # printed again, same tags: a consumer drops the repeats
    assert any("released" in line and "printing" in line for line in client.stderr)


def test_a_mark_beyond_the_log_is_refused(home: Path, cluster: Cluster) -> None:
    cluster.start(f"{COUNTER}:Server", "server")
    client = cluster.start(f"{COUNTER}:Client", "client")
    _wait_lines(client, 2)
    client.kill()
    (client.log_dir() / "released").write_bytes(encode(10_000))
    client.start(wait=False)
    assert client.proc is not None and client.proc.wait(30) == 2
    last = client.stderr[-1]
    assert "released" in last and "10000" in last and "missing" in last
