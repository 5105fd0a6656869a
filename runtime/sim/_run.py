"""Running one seed: a failure-free reference run, the same workload under faults, a verdict."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .._coordinator import Coordinator
from ._host import SimNode
from ._workloads import WORKLOADS, Observation, compare, config_for, observe, settled
from ._world import START, Faults, World

SETTLE_SECONDS = 60.0  # after the faults stop, how long the instances have to settle


@dataclass
class SeedResult:
    seed: int
    workload: str
    faults: str
    violations: list[str]
    crashes: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    torn: int = 0
    checkpoints: int = 0
    events: int = 0
    takeovers: int = 0
    zombies: int = 0
    sim_seconds: float = 0.0
    trace: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def workload_for(seed: int, name: str | None) -> str:
    if name is not None:
        if name not in WORKLOADS:
            raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")
        return name
    names = sorted(WORKLOADS)
    return names[seed % len(names)]


def repro_command(
    seed: int, workload: str, coordinator: str | None = None, driver: str | None = None
) -> str:
    extra = f" --coordinator {coordinator}" if coordinator else ""
    extra += f" --driver {driver}" if driver else ""
    return f"python -m runtime.sim --seeds 1 --first {seed} --workload {workload} --trace{extra}"


def _world(
    seed: int,
    workload: str,
    faults: Faults,
    coordinator_cls: type[Coordinator],
    trace: Callable[[str], None] | None,
    node_cls: type[SimNode] = SimNode,
) -> tuple[World, Observation]:
    setup = random.Random(f"setup:{seed}")
    config = config_for(setup)
    world = World(
        seed,
        faults=faults,
        config=config,
        coordinator_cls=coordinator_cls,
        trace=trace,
        node_cls=node_cls,
    )
    WORKLOADS[workload].build(world, setup)
    for i, name in enumerate(sorted(world.nodes)):
        world.at(START + 0.001 * i, world.nodes[name].start)
    for i, name in enumerate(sorted(world.nodes)):
        if world.nodes[name].standby_target:
            world.at(START + 0.003 + 0.001 * i, world.nodes[name].fill_standbys)
    for i, caller in enumerate(world.callers):
        world.at(START + 0.005 + 0.001 * i, caller.start)
    world.plan_faults()
    finished = world.run_until(lambda: settled(world), faults.heal_at + SETTLE_SECONDS)
    return world, observe(world, finished)


def run_seed(
    seed: int,
    workload: str | None = None,
    *,
    coordinator_cls: type[Coordinator] = Coordinator,
    driver_cls: type[SimNode] = SimNode,
    keep_trace: bool = False,
) -> SeedResult:
    """Run ``seed``: the reference (the real coordinator and driver, no faults), then the
    faulty run (with ``coordinator_cls`` and ``driver_cls``, variants that plant bugs)."""
    name = workload_for(seed, workload)
    faults = Faults.swarm(random.Random(f"faults:{seed}"))
    tune = WORKLOADS[name].tune
    if tune is not None:
        tune(faults, random.Random(f"tune:{seed}"))
    _ref_world, reference = _world(seed, name, Faults(), Coordinator, None)
    lines: list[str] = []
    try:
        world, seen = _world(
            seed, name, faults, coordinator_cls, lines.append if keep_trace else None, driver_cls
        )
    except Exception as exc:  # the runtime raised (a recovery that no longer replays, say)
        return SeedResult(seed, name, faults.describe(), [f"raised {exc!r}"], trace=lines)
    problems = compare(reference, seen)
    if not reference.settled:
        problems.insert(0, "the failure-free run itself did not settle (a workload bug)")
    return SeedResult(
        seed=seed,
        workload=name,
        faults=faults.describe(),
        violations=problems,
        crashes=sum(n.crashes for n in world.nodes.values()),
        dropped=world.network.dropped,
        duplicated=world.network.duplicated,
        reordered=world.network.reordered,
        torn=sum(n.log.torn for n in world.nodes.values()),
        checkpoints=sum(len(n.log.checkpoints) for n in world.nodes.values()),
        events=world.events,
        takeovers=world.takeovers,
        zombies=world.zombies,
        sim_seconds=world.now - START,
        trace=lines,
    )
