"""The registry interface's guarantees (``runtime._registry.Registry``), checked on the
embedded backend; a distributed backend must pass the same tests (they take a ``registry``)."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime._registry import EmbeddedRegistry, InstanceRecord, Registry, StandbyRecord
from tests.logutil import finishes_within, stopped_inside_lmdb_write


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    backend = EmbeddedRegistry(tmp_path / "registry")
    yield backend
    backend.close()


def _record(name: str, port: int, epoch: int = 1) -> InstanceRecord:
    return InstanceRecord(name, "127.0.0.1", port, epoch, "", "app.py:A", "v", 1, time.time())


def test_the_epoch_moves_only_by_compare_and_set_from_the_value_read(registry: Registry) -> None:
    assert registry.epoch("a") == 0
    assert registry.compare_and_set_epoch("a", 0, 1)
    assert not registry.compare_and_set_epoch("a", 0, 2)  # read 0, but it is 1 now
    assert registry.epoch("a") == 1
    with pytest.raises(ValueError, match="only grows"):
        registry.compare_and_set_epoch("a", 1, 1)  # never sideways or down


def test_taking_the_primary_role_bumps_the_epoch_and_respects_a_live_lease(
    registry: Registry,
) -> None:
    first = registry.take_primary("a", "p1", expected_epoch=0, ttl=30, holder_dead=False)
    assert first is not None and first.epoch == 1 and first.holder == "p1"
    assert registry.take_primary("a", "p2", expected_epoch=0, ttl=30, holder_dead=False) is None
    assert registry.take_primary("a", "p2", expected_epoch=1, ttl=30, holder_dead=False) is None
    second = registry.take_primary("a", "p2", expected_epoch=1, ttl=30, holder_dead=True)
    assert second is not None and second.epoch == 2  # the lock proved p1 dead
    assert registry.renew(first, 30) is None  # p1 lost the role: it must stop releasing
    renewed = registry.renew(second, 30)
    assert renewed is not None and renewed.expires >= second.expires
    assert registry.lease("a") == renewed


def test_a_lapsed_lease_may_be_taken(registry: Registry) -> None:
    old = registry.take_primary("a", "p1", expected_epoch=0, ttl=0.05, holder_dead=False)
    assert old is not None
    time.sleep(0.1)
    new = registry.take_primary("a", "p2", expected_epoch=1, ttl=30, holder_dead=False)
    assert new is not None and new.epoch == 2
    assert registry.renew(old, 30) is None


def _race(path: Path, holder: str, ready: Any, out: multiprocessing.Queue[str]) -> None:
    backend = EmbeddedRegistry(path)
    epoch = backend.epoch("a")
    ready.wait()  # every racer has read the same epoch: now they race
    won = backend.take_primary("a", holder, expected_epoch=epoch, ttl=30, holder_dead=True)
    out.put(holder if won is not None else "")
    backend.close()


def test_of_racing_takers_exactly_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "registry"
    EmbeddedRegistry(path).close()
    context = multiprocessing.get_context("fork")
    for _round in range(5):
        out: multiprocessing.Queue[str] = context.Queue()
        ready = context.Barrier(3)
        racers = [context.Process(target=_race, args=(path, f"s{i}", ready, out)) for i in range(3)]
        for racer in racers:
            racer.start()
        winners = [out.get(timeout=60) for _ in racers]
        for racer in racers:
            racer.join(20)
        assert len([w for w in winners if w]) == 1, winners


def test_watch_returns_as_soon_as_the_record_changes(registry: Registry) -> None:
    registry.register(_record("a", 1000))
    seen = registry.lookup("a")

    async def scenario() -> tuple[float, InstanceRecord | None]:
        async def move() -> None:
            await asyncio.sleep(0.05)
            registry.register(_record("a", 2000, epoch=2))

        mover = asyncio.ensure_future(move())
        started = time.monotonic()
        found = await registry.watch("a", seen, timeout=5)
        await mover
        return time.monotonic() - started, found

    waited, found = asyncio.run(scenario())
    assert found is not None and found.port == 2000
    assert waited < 1.0  # found promptly, not at the timeout
    assert asyncio.run(registry.watch("a", found, timeout=0.05)) == found  # unchanged: timeout


def test_standby_reports_expire_and_can_be_dropped(registry: Registry) -> None:
    now = time.time()
    registry.report_standby(StandbyRecord("a", "1@h", 1, 10, 12, 3.0, now, 0))
    registry.report_standby(StandbyRecord("a", "2@h", 2, 5, 12, 9.0, now - 60, 0))
    registry.report_standby(StandbyRecord("ab", "3@h", 3, 1, 1, 0.0, now, 0))  # another name
    assert [s.holder for s in registry.standbys("a", fresh_within=10)] == ["1@h"]
    registry.drop_standby("a", "1@h")
    assert registry.standbys("a", fresh_within=10) == []


def test_a_reservation_names_its_holder_until_it_lapses_or_ends(registry: Registry) -> None:
    assert registry.reservation("a") is None
    registry.reserve("a", "taker@h", ttl=30)
    assert registry.reservation("a") == "taker@h"
    assert registry.reservation("b") is None  # per name
    registry.reserve("a", "taker@h", ttl=0)  # ended
    assert registry.reservation("a") is None
    registry.reserve("a", "taker@h", ttl=0.05)
    time.sleep(0.1)
    assert registry.reservation("a") is None  # lapsed


def test_a_process_stopped_inside_a_registry_write_blocks_no_takeover(tmp_path: Path) -> None:
    """The role and the reports are written several times a second: a stop landing in one of
    those writes used to freeze every takeover under the home (lmdb's writer lock)."""
    path = tmp_path / "registry"
    backend = EmbeddedRegistry(path)
    backend.register(_record("a", 1000))  # the lmdb environment exists
    first = backend.take_primary("a", "p1", expected_epoch=0, ttl=0.05, holder_dead=False)
    assert first is not None
    time.sleep(0.1)  # p1's lease lapses

    def role_and_reports() -> tuple[object, ...]:
        second = backend.take_primary("a", "p2", expected_epoch=1, ttl=30, holder_dead=False)
        assert second is not None
        renewed = backend.renew(second, 30)
        backend.report_standby(StandbyRecord("a", "9@h", 9, 1, 1, 0.0, time.time(), 0))
        return renewed, backend.standbys("a", fresh_within=10), backend.epoch("a")

    try:
        with stopped_inside_lmdb_write(path, max_dbs=4):
            renewed, reports, epoch = finishes_within(5, role_and_reports)
        assert renewed is not None and epoch == 2
        assert [s.holder for s in reports] == ["9@h"]  # type: ignore[attr-defined]
    finally:
        backend.close()
