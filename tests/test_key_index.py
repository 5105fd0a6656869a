"""The outside keys' index (``runtime._keys.KeyIndex``): a purge walks what expired, not what is
remembered, each purge is bounded, and an index of the earlier layout is rebuilt from the log."""

from __future__ import annotations

import time
from pathlib import Path

import lmdb

from logformat import pack_value
from runtime._keys import PURGE_BATCH, KeyIndex


def _calls(names: list[str]) -> list[dict[str, object]]:
    return [{"in": {"k": "call", "id": n, "m": "inc"}, "rep": [[n, True, 1]]} for n in names]


def _entries(log_dir: Path) -> list[bytes]:
    with lmdb.open(str(log_dir / "keys"), readonly=True, lock=False) as env, env.begin() as txn:
        return [bytes(key) for key, _value in txn.cursor()]


def test_an_append_purges_what_expired_and_a_purge_skips_what_is_remembered(
    tmp_path: Path,
) -> None:
    half_an_hour_ago = time.time() - 1800
    index = KeyIndex(tmp_path, retention=3600)
    index.add(1, _calls([f"old{i}" for i in range(10)]), wall=half_an_hour_ago)
    index.close()
    index = KeyIndex(tmp_path, retention=600)  # those ten are now past retention
    try:
        assert index.find("old3") is None  # expired keys are never answered
        index.add(11, _calls([f"new{i}" for i in range(1000)]))  # and this append drops them
        assert index.find("new3") == (14, 14)
        assert index.purge() == 0  # nothing expired: the 1,000 remembered are not walked
    finally:
        index.close()
    entries = _entries(tmp_path)
    assert not any(e.endswith(pack_value(f"old{i}")) for e in entries for i in range(10))
    assert len(entries) == 2 * 1000 + 2  # each key and its time entry; two marks


def test_each_purge_is_bounded_and_the_next_goes_on(tmp_path: Path) -> None:
    count = 2 * PURGE_BATCH + 10
    index = KeyIndex(tmp_path, retention=3600)
    index.add(1, _calls([f"k{i}" for i in range(count)]), wall=time.time() - 1800)
    index.close()
    index = KeyIndex(tmp_path, retention=600)
    try:
        assert index.purge(PURGE_BATCH) == PURGE_BATCH
        assert index.purge(PURGE_BATCH) == PURGE_BATCH
        assert index.purge() == 10
        assert index.purge() == 0
    finally:
        index.close()
    assert len(_entries(tmp_path)) == 2  # the marks


def test_an_index_of_the_earlier_layout_is_rebuilt(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    with lmdb.open(str(tmp_path / "keys")) as env, env.begin(write=True) as txn:
        txn.put(pack_value("stale"), pack_value([1, 1, time.time()]))  # no time entries
    index = KeyIndex(tmp_path)
    try:
        assert index.find("stale") is None  # dropped: the next catch-up reads the log again
    finally:
        index.close()


def test_a_mark_without_keys_spares_the_next_start_reading_the_log_again(tmp_path: Path) -> None:
    """An instance called only by its peers adds no key; its mark still moves (the node marks
    at most every second), and the next start's catch-up reads only what follows it."""
    from logformat import LogMeta, LogReader, LogWriter

    def calls(first: int, n: int) -> list[dict[str, object]]:
        return [
            {"in": {"k": "call", "from": "peer", "seq": s, "m": "inc"}}
            for s in range(first, first + n)
        ]

    log = tmp_path / "log"
    with LogWriter.open(log, create=LogMeta("peerly", "app.py:A", "v")) as writer:
        index = KeyIndex(log)
        with LogReader(log) as reader:
            assert index.catch_up(reader) == 0  # an empty log
        writer.append(calls(1, 50))  # steps without outside keys: nothing to add
        index.mark(50)
        writer.append(calls(51, 1))
    try:
        with LogReader(log) as reader:
            assert index.catch_up(reader) == 1  # only the step after the mark, not all 51
    finally:
        index.close()
