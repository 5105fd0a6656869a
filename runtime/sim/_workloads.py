"""Workloads, what a run observes, and the invariants checked against a failure-free run.

A workload is a set of instances (name -> app class) and outside callers. Caller instances
take their plan from their names (``who-kind-target-count``, see ``_apps.Caller``). The number
of calls scales with the seed, and so do the checkpoint settings, so that checkpoints are taken
mid-run (and wait for suspended handlers) in most seeds.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._coordinator import CoordinatorConfig
from .._executor import app_state
from ._apps import Caller, Counter, Relay, Worker
from ._world import Faults, World


@dataclass(frozen=True)
class Workload:
    name: str
    describe: str
    build: Callable[[World, random.Random], None]
    tune: Callable[[Faults, random.Random], None] | None = None  # faults of its own


def _n(rng: random.Random) -> int:
    return rng.randint(2, 12)


def _pair(world: World, rng: random.Random) -> None:
    world.add_node("server", Counter)
    world.add_node(f"client-calls-server-{_n(rng)}", Caller)


def _chain(world: World, rng: random.Random) -> None:
    world.add_node("c", Counter)
    world.add_node("b", Relay)
    # Two heads: b gets calls while its handler for another waits for c, so checkpoints due
    # at b must hold new calls until it is quiescent.
    world.add_node(f"a-calls-b-{_n(rng)}", Caller)
    world.add_node(f"z-calls-b-{_n(rng)}", Caller)


def _fanin(world: World, rng: random.Random) -> None:
    world.add_node("server", Counter)
    for who in ("c1", "c2", "c3"):
        world.add_node(f"{who}-calls-server-{_n(rng)}", Caller)


def _outside(world: World, rng: random.Random) -> None:
    world.add_node("server", Counter)
    for who in ("ext1", "ext2"):
        world.callers.append(_caller(world, who, "server", _n(rng)))


def _timers(world: World, rng: random.Random) -> None:
    world.add_node("server", Counter)
    world.add_node(f"t1-sleeps-server-{_n(rng)}", Caller)


def _posts(world: World, rng: random.Random) -> None:
    world.add_node("server", Counter)
    world.add_node(f"p1-posts-server-{_n(rng)}", Caller)


def _raises(world: World, rng: random.Random) -> None:
    world.add_node("server", Counter)
    world.add_node(f"r1-raises-server-{_n(rng)}", Caller)


def _patterns(world: World, rng: random.Random) -> None:
    world.add_node("server", Counter)
    world.add_node(f"w1-works-server-{_n(rng)}", Worker)
    world.add_node(f"w2-works-server-{_n(rng)}", Worker)


def _mixed(world: World, rng: random.Random) -> None:
    world.add_node("server", Counter)
    world.add_node("c", Counter)
    world.add_node("b", Relay)
    world.add_node(f"a-calls-b-{_n(rng)}", Caller)
    world.add_node(f"z-calls-b-{_n(rng)}", Caller)
    for kind in ("calls", "sleeps", "posts", "raises"):
        world.add_node(f"m-{kind}-server-{_n(rng)}", Caller)
    world.callers.append(_caller(world, "ext1", "server", _n(rng)))
    world.add_node(f"w1-works-server-{_n(rng)}", Worker)


def _standby(world: World, rng: random.Random) -> None:
    # A relay in the middle, so a takeover happens with calls in flight both ways; outside
    # callers, so replies to the outside are what a zombie would wrongly release.
    for name, cls in (("server", Counter), ("c", Counter), ("b", Relay)):
        world.add_node(name, cls).standby_target = rng.choice((1, 2))
    world.add_node(f"a-calls-b-{_n(rng)}", Caller)
    world.add_node(f"k-calls-server-{_n(rng)}", Caller)
    for who in ("ext1", "ext2"):
        world.callers.append(_caller(world, who, "server", _n(rng)))
    world.callers.append(_caller(world, "ext3", "b", _n(rng)))


def _standby_faults(faults: Faults, rng: random.Random) -> None:
    faults.zombies = rng.choice((0, 1, 2, 3))
    faults.standby_crashes = rng.choice((0, 0, 1, 2))
    faults.crashes = max(faults.crashes, rng.choice((0, 1, 2, 3)))


def _caller(world: World, who: str, target: str, count: int) -> Any:
    from ._host import SimCaller

    return SimCaller(world, who, target, count)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("pair", "the seed's counter pair: a client calls a server", _pair),
        Workload("chain", "a and z call b, which calls c before answering", _chain),
        Workload("fanin", "three clients call one server", _fanin),
        Workload("outside", "outside callers with retries and idempotency keys", _outside),
        Workload("timers", "a client that sleeps (durable timers) between calls", _timers),
        Workload("posts", "one-way posts, then a call", _posts),
        Workload("raises", "a handler that raises on every other call", _raises),
        Workload(
            "patterns",
            "posts to self, gather, side effects under a timeout, timer callbacks",
            _patterns,
        ),
        Workload("mixed", "all of the above against one server at once", _mixed),
        Workload(
            "standby",
            "standbys follow each log and take over; zombie primaries are fenced",
            _standby,
            _standby_faults,
        ),
    )
}


def config_for(rng: random.Random) -> CoordinatorConfig:
    """Checkpoint settings for one seed: often tiny, so checkpoints happen mid-run."""
    return CoordinatorConfig(
        checkpoint_bytes=rng.choice((256, 1024, 4096, 64 * 1024 * 1024)),
        checkpoint_seconds=rng.choice((0.02, 0.2, 60.0)),
        quiescence_timeout=rng.choice((0.05, 0.5, 5.0)),
        ack_delay=rng.choice((0.0, 0.005, 0.05)),
        result_cache=rng.choice((1, 3, 100_000)),  # small: old keys are looked up in the log
        look_up_keys=True,
    )


@dataclass
class Observation:
    """What the world saw of one run."""

    states: dict[str, Any] = field(default_factory=dict)
    emits: dict[str, list[Any]] = field(default_factory=dict)  # deduplicated by (lsn, index)
    answers: dict[str, list[Any]] = field(default_factory=dict)  # outside key -> every answer
    charges: list[Any] = field(default_factory=list)  # what the side effects' service charged
    problems: list[str] = field(default_factory=list)  # found while observing
    settled: bool = False


def settled(world: World) -> bool:
    """Every instance up, caught up, acknowledged and released; every caller finished."""
    for caller in world.callers:
        if not caller.done:
            return False
    for node in world.nodes.values():
        c = node.coordinator
        if not node.alive or c is None:
            return False
        if not c.idle or not c.replica.quiescent or c.released_lsn < c.durable_lsn:
            return False
        if any(c.streams.unacknowledged(peer) for peer in c.streams.peers()):
            return False
        app = c.executor.app
        if app is None:
            return False
        if isinstance(app, Caller) and len(app.results) < int(node.name.rsplit("-", 1)[1]):
            return False
        if isinstance(app, Worker) and not app.finished(int(node.name.rsplit("-", 1)[1])):
            return False
    return True


def observe(world: World, finished: bool) -> Observation:
    seen = Observation(settled=finished)
    for name, node in sorted(world.nodes.items()):
        c = node.coordinator
        app = c.executor.app if c is not None else None
        seen.states[name] = app_state(app) if app is not None else None
        printed: dict[tuple[int, int], Any] = {}
        for lsn, index, value in node.printed:
            earlier = printed.get((lsn, index), _MISSING)
            if earlier is not _MISSING and earlier != value:
                seen.problems.append(
                    f"{name}: emit line (LSN {lsn}, #{index}) printed as {earlier!r} and {value!r}"
                )
            printed[(lsn, index)] = value
        seen.emits[name] = [printed[k] for k in sorted(printed)]
    for caller in world.callers:
        for key, got in caller.answers.items():
            seen.answers[key] = got
    seen.charges = sorted(world.ledger.by_key.values())
    seen.problems += world.ledger.conflicts + world.problems
    requested = {
        key
        for node in world.nodes.values()
        for r in node.log.records
        for _, key, _ in r.get("fx", ())
    }
    for key in world.ledger.by_key:
        if key not in requested:  # it ran for a step no log kept: it ran before being durable
            seen.problems.append(f"side effect {key!r} ran, but no durable step asked for it")
    return seen


_MISSING = object()


def compare(reference: Observation, run: Observation) -> list[str]:
    """Every way the run differs from the failure-free reference (empty: it held)."""
    problems = list(run.problems)
    if not run.settled:
        problems.append("liveness: the instances did not settle after faults stopped")
    for name, expected in reference.states.items():
        actual = run.states.get(name)
        if actual != expected:
            problems.append(f"state of {name}: expected {expected!r}, got {actual!r}")
    for name, expected in reference.emits.items():
        actual = run.emits.get(name, [])
        if actual != expected:
            problems.append(f"emits of {name}: expected {expected!r}, got {actual!r}")
    if run.charges != reference.charges:
        problems.append(f"side effects charged {run.charges!r}, expected {reference.charges!r}")
    for key, expected in reference.answers.items():
        actual = run.answers.get(key, [])
        if not actual:
            problems.append(f"outside call {key}: never answered")
        elif any(answer != expected[0] for answer in actual):
            problems.append(f"outside call {key}: expected {expected[0]!r}, got {actual!r}")
    return problems
