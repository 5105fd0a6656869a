"""Checkpoints: round trips, pickle only on opt-in, damaged ones skipped with a reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given

from logformat import (
    CheckpointError,
    LogError,
    LogReader,
    LogWriter,
    PickleRefusedError,
    ValueCodecError,
    decode_checkpoint,
    encode_checkpoint,
)
from tests.logutil import new_meta, record
from tests.strategies import values


class Custom:
    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Custom) and other.n == self.n

    def __hash__(self) -> int:
        return self.n


@given(values)
def test_state_round_trip(state: Any) -> None:
    assert decode_checkpoint(encode_checkpoint(5, state)) == state


def _log_with_checkpoints(path: Path, lsns: list[int], *, pickled: bool = False) -> None:
    with LogWriter.open(path, create=new_meta(), sync=False) as writer:
        writer.append([record(i) for i in range(1, max(lsns) + 1)])
        for lsn in lsns:
            state = {"at": lsn, "obj": Custom(lsn)} if pickled else {"at": lsn, "t": (lsn,)}
            writer.write_checkpoint(lsn, state, use_pickle=pickled)


def test_written_checkpoints_are_listed_and_loaded(log_dir: Path) -> None:
    _log_with_checkpoints(log_dir, [3, 7])
    with LogReader(log_dir) as reader:
        assert [c.lsn for c in reader.checkpoints()] == [3, 7]
        assert reader.load_checkpoint(3) == {"at": 3, "t": (3,)}
        newest = reader.newest_checkpoint()
        assert newest is not None and newest[:2] == (7, {"at": 7, "t": (7,)})
        assert reader.newest_checkpoint(at_or_below=5) == (3, {"at": 3, "t": (3,)}, [])


def test_pickled_checkpoints_load_only_on_opt_in(log_dir: Path) -> None:
    _log_with_checkpoints(log_dir, [2], pickled=True)
    with LogReader(log_dir) as reader:
        assert reader.checkpoints()[0].pickled
        with pytest.raises(PickleRefusedError, match="runs code"):
            reader.load_checkpoint(2)
        with pytest.raises(PickleRefusedError):
            reader.newest_checkpoint()
        assert reader.load_checkpoint(2, allow_pickle=True) == {"at": 2, "obj": Custom(2)}


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1] + bytes([b[-1] ^ 1]),  # body bit
        lambda b: b[: len(b) // 2],  # cut short
        lambda b: b"garbage!" + b[8:],  # header
        lambda b: b"",  # empty file
    ],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(log_dir: Path, damage: Any) -> None:
    _log_with_checkpoints(log_dir, [3, 7])
    newest = sorted((log_dir / "checkpoints").glob("*.ckpt"))[-1]
    newest.write_bytes(damage(newest.read_bytes()))
    with LogReader(log_dir) as reader:
        found = reader.newest_checkpoint()
        assert found is not None
        lsn, state, skipped = found
        assert (lsn, state) == (3, {"at": 3, "t": (3,)})
        assert len(skipped) == 1 and "00000000000000000007" in str(skipped[0])
        with pytest.raises(CheckpointError):
            reader.load_checkpoint(7)


def test_leftover_temporary_checkpoints_are_removed_and_never_listed(log_dir: Path) -> None:
    _log_with_checkpoints(log_dir, [3])
    tmp = log_dir / "checkpoints" / "00000000000000000005.ckpt.tmp"
    tmp.write_bytes(b"half a checkpoint")
    with LogReader(log_dir) as reader:
        assert [c.lsn for c in reader.checkpoints()] == [3]
    LogWriter.open(log_dir, sync=False).close()
    assert not tmp.exists()


def test_unstorable_state_suggests_plain_data_or_pickle(log_dir: Path) -> None:
    with pytest.raises(ValueCodecError, match="pickle"):
        encode_checkpoint(1, {"x": Custom(1)})


def test_a_checkpoint_beyond_the_end_is_refused(log_dir: Path) -> None:
    with LogWriter.open(log_dir, create=new_meta(), sync=False) as writer:
        writer.append([1, 2])
        with pytest.raises(LogError, match="beyond"):
            writer.write_checkpoint(3, {})


def test_the_index_caches_the_checkpoint_list_and_follows_the_directory(log_dir: Path) -> None:
    _log_with_checkpoints(log_dir, [3, 7])
    with LogReader(log_dir) as reader:
        assert [c.lsn for c in reader.checkpoints()] == [3, 7]
        assert sorted(reader._index.checkpoints()) == [3, 7]  # cached in lmdb
        (log_dir / "checkpoints" / "00000000000000000003.ckpt").unlink()
        assert [c.lsn for c in reader.checkpoints()] == [7]
        assert sorted(reader._index.checkpoints()) == [7]
