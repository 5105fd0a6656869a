"""One simulated world per seed: the clock, the scheduler, the registry, and the faults.

Everything random comes from one ``random.Random(seed)``: fault settings (a different mix per
seed, as TigerBeetle's VOPR chooses a swarm of configurations rather than one), latencies,
crash points, what a torn append keeps. Events run in (time, arrival) order on a simulated
clock that jumps, so a run takes milliseconds of real time and the same seed always gives the
same run. A run has two phases: faults until ``heal_at``; then every instance is restarted,
partitions heal, and no new fault happens, so the instances must settle (liveness).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._coordinator import Coordinator, CoordinatorConfig
from ._apps import Ledger
from ._host import SimCaller, SimNode
from ._net import Network

START = 1_000_000.0  # the simulated wall clock at the start of every run


@dataclass
class Faults:
    """The fault mix of one seed (all zero: a failure-free run)."""

    crash_per_action: float = 0.0  # chance to die before carrying out an action
    crash_after_handshake: float = 0.0  # chance to die within an fsync of a link opening
    crashes: int = 0  # extra crashes at random moments
    pauses: int = 0  # processes stopped for a while (SIGSTOP) and continued
    loss: float = 0.0  # per packet; the connection then breaks
    duplicate: float = 0.0  # per packet
    reorder: float = 0.0  # per packet
    partitions: int = 0
    resets: int = 0
    heal_at: float = 0.0  # seconds after the start when faults stop
    zombies: int = 0  # primaries paused past their lease while a standby takes over
    standby_crashes: int = 0  # standbys killed at random moments

    @classmethod
    def swarm(cls, rng: random.Random) -> Faults:
        def maybe(high: float) -> float:
            return rng.uniform(0, high) if rng.random() < 0.5 else 0.0

        return cls(
            crash_per_action=maybe(0.03),
            crash_after_handshake=maybe(0.3),
            crashes=rng.choice((0, 0, 1, 2, 4)),
            pauses=rng.choice((0, 0, 1, 2)),
            loss=maybe(0.05),
            duplicate=maybe(0.1),
            reorder=maybe(0.1),
            partitions=rng.choice((0, 0, 1, 2)),
            resets=rng.choice((0, 0, 2, 5, 20)),
            heal_at=rng.uniform(0.5, 4.0),
        )

    def describe(self) -> str:
        parts = [f"{k}={v:.3g}" for k, v in vars(self).items() if v]
        return ", ".join(parts) or "none"


class World:
    """The scheduler, the network, the registry and every instance of one run."""

    def __init__(
        self,
        seed: int,
        *,
        faults: Faults,
        config: CoordinatorConfig,
        coordinator_cls: type[Coordinator] = Coordinator,
        trace: Callable[[str], None] | None = None,
        node_cls: type[SimNode] = SimNode,
    ) -> None:
        self.node_cls = node_cls
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults = faults
        self.config = config
        self.coordinator_cls = coordinator_cls
        self.now = START
        self.network = Network(self)
        self.nodes: dict[str, SimNode] = {}
        self.callers: list[SimCaller] = []
        self._queue: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._count = 0
        self._epochs: dict[str, int] = {}
        self._registered: dict[str, SimNode] = {}
        self._trace = trace
        self._base_latency = self.rng.uniform(0.0002, 0.002)
        # A slow disk in some seeds: the longer a step waits for its fsync, the likelier a
        # reconnect lands in between (the window that dedup and durable promises guard).
        slow = self.rng.random() < 0.3
        self._fsync = self.rng.uniform(0.005, 0.03) if slow else self.rng.uniform(0.0003, 0.004)
        self.events = 0
        self.ledger = Ledger.current = Ledger()  # the outside service of side effects
        self.problems: list[str] = []  # rules a driver saw broken in the actions it was given
        self.poll_interval = self.rng.uniform(0.002, 0.02)  # how often a standby reads the log
        self.takeovers = 0
        self.zombies = 0
        self.releases: list[tuple[float, str, int, str]] = []  # (time, instance, epoch, what)

    # -- the clock and the scheduler -----------------------------------------------------------

    @property
    def faulty(self) -> bool:
        return self.now < START + self.faults.heal_at

    def at(self, when: float, fn: Callable[..., Any], *args: Any) -> None:
        self._count += 1
        heapq.heappush(self._queue, (max(when, self.now), self._count, fn, args))

    def after(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        self.at(self.now + delay, fn, *args)

    def latency(self) -> float:
        return self._base_latency * self.rng.uniform(0.5, 2.0)

    def fsync_latency(self) -> float:
        return self._fsync * self.rng.uniform(0.5, 3.0)

    def nonce(self) -> bytes:
        return self.rng.getrandbits(128).to_bytes(16, "little")

    def trace(self, text: str) -> None:
        if self._trace is not None:
            self._trace(f"{self.now - START:10.6f} {text}")

    def run_until(self, done: Callable[[], bool], deadline: float) -> bool:
        """Run events until ``done()`` (checked between events) or the clock passes ``deadline``
        (seconds after the start); True if done."""
        limit = START + deadline
        while self._queue:
            if done():
                return True
            when, _n, fn, args = heapq.heappop(self._queue)
            if when > limit:
                heapq.heappush(self._queue, (when, _n, fn, args))
                break
            self.now = when
            self.events += 1
            fn(*args)
        return done()

    # -- instances and the registry ------------------------------------------------------------

    def coordinator_config(self) -> CoordinatorConfig:
        return self.config

    def add_node(self, name: str, app_cls: Any) -> SimNode:
        node = self.nodes[name] = self.node_cls(self, name, app_cls, self.coordinator_cls)
        return node

    def registry_next_epoch(self, name: str) -> int:
        self._epochs[name] = self._epochs.get(name, 0) + 1
        return self._epochs[name]

    def registry_register(self, name: str, epoch: int, node: SimNode) -> None:
        self._registered[name] = node

    def registry_lookup(self, name: str | None) -> SimNode | None:
        return self._registered.get(name) if name is not None else None

    def registry_epoch(self, name: str | None) -> int | None:
        node = self.registry_lookup(name)
        return node.epoch if node is not None else None

    def note_release(self, node: SimNode, action: Any) -> None:
        """``node`` is about to let the world see ``action``: record it with its epoch, and
        flag it if a higher epoch had claimed the log by then (a zombie that was not fenced)."""
        what = type(action).__name__
        self.releases.append((self.now, node.name, node.epoch, what))
        claim = node.log.claimed_above(node.epoch)
        if claim is not None:
            self.problems.append(
                f"{node.name}: epoch {node.epoch} released {action!r} at "
                f"{self.now - START:.6f} after epoch {claim} claimed the log"
            )

    # -- faults ----------------------------------------------------------------------------------

    def crash_now(self, node: SimNode) -> bool:
        """Whether ``node`` dies at this action boundary."""
        return self.faulty and self.rng.random() < self.faults.crash_per_action

    def after_handshake(self, node: SimNode) -> None:
        """A link of ``node`` just opened: perhaps die while the steps that the handshake's
        numbers speak of are still on their way to the disk (the window the rules guard)."""
        if self.faulty and self.rng.random() < self.faults.crash_after_handshake:
            self.after(self.rng.uniform(0, 2 * self._fsync), node.crash_at, node.incarnation)

    def schedule_restart(self, node: SimNode) -> None:
        delay = self.rng.uniform(0.001, 0.3)
        heal = START + self.faults.heal_at
        self.at(min(self.now + delay, max(heal, self.now)), self._restart, node)

    def _restart(self, node: SimNode) -> None:
        if not node.alive:
            node.start()

    def plan_faults(self) -> None:
        """Schedule the seed's crashes, pauses, partitions and resets within the fault phase."""
        f = self.faults
        names = sorted(self.nodes)
        span = f.heal_at

        def moment() -> float:
            return START + self.rng.uniform(0, span)

        for _ in range(f.crashes):
            self.at(moment(), self._crash_someone, self.rng.choice(names))
        for _ in range(f.pauses):
            self.at(moment(), self._pause, self.rng.choice(names), self.rng.uniform(0.05, 1.5))
        for _ in range(f.partitions):
            if len(names) >= 2:
                x, y = self.rng.sample(names, 2)
                self.at(moment(), self._partition, x, y, self.rng.uniform(0.05, 1.0))
        for _ in range(f.resets):
            self.at(moment(), self.network.reset_random)
        followed = [name for name in names if self.nodes[name].standby_target]
        if followed:
            for _ in range(f.zombies):
                self.at(moment(), self._zombie, self.rng.choice(followed), 0)
            for _ in range(f.standby_crashes):
                self.at(moment(), self._crash_standby, self.rng.choice(followed))

    def _crash_someone(self, name: str) -> None:
        self.nodes[name].crash("at a random moment")

    def _zombie(self, name: str, tries: int) -> None:
        """Stop a primary (SIGSTOP) past its lease, preferably while an append is in flight
        (what it then does on waking up is the fence's business)."""
        node = self.nodes[name]
        busy = node.alive and node.epoch in node.log.pending
        if not node.alive or node.taking_over or node.paused_until > self.now:
            return
        if not busy and tries < 50:
            self.after(self.rng.uniform(0.0005, 0.002), self._zombie, name, tries + 1)
            return
        if not any(s.alive for s in node.standbys):
            return
        seconds = self.rng.uniform(0.2, 1.5)
        lease = self.rng.uniform(0.02, 0.15)
        node.paused_until = self.now + seconds
        self.trace(f"{name}: PAUSED for {seconds:.3f} s, past its lease ({lease:.3f} s)")
        self.after(lease, node.lease_expired, node.incarnation)

    def _crash_standby(self, name: str) -> None:
        alive = [s for s in self.nodes[name].standbys if s.alive]
        if alive:
            self.rng.choice(alive).crash()

    def _pause(self, name: str, seconds: float) -> None:
        node = self.nodes[name]
        node.paused_until = max(node.paused_until, self.now + seconds)
        self.trace(f"{name}: PAUSED for {seconds:.3f} s")

    def _partition(self, x: str, y: str, seconds: float) -> None:
        self.network.partitions[frozenset((x, y))] = self.now + seconds
        self.trace(f"net: partition {x} | {y} for {seconds:.3f} s")
