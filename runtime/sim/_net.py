"""A simulated network: connections that carry the real protocol's bytes, with faults.

Each connection has two ends; whatever one end writes arrives at the other after a latency, in
order, as TCP would deliver it, unless the seed says otherwise: a packet may be lost (and the
connection then breaks, as a TCP connection does when its data cannot get through), delivered
twice, or overtaken by later packets; two instances may be partitioned (packets between them
are lost and new connections fail); and any connection may be reset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .._protocol import Connection

if TYPE_CHECKING:
    from ._world import World


class EndOwner(Protocol):
    def on_data(self, end: End, data: bytes) -> None: ...

    def on_closed(self, end: End) -> None: ...


@dataclass(eq=False)
class End:
    """One side of a connection: the owner's protocol state and where its bytes go."""

    owner: EndOwner
    network: Network
    protocol: Connection
    where: str  # the owner's name, for traces and partitions
    role: str  # "link", "incoming" or "caller"
    peer: str | None = None  # the instance at the other end, once known
    other: End | None = None
    open: bool = True
    last_arrival: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        there = self.other.where if self.other is not None else "?"
        return f"End({self.where}<->{there}, {self.role})"

    def write(self, data: bytes) -> None:
        if data and self.open and self.other is not None:
            self.network.carry(self, self.other, data)

    def send(self, message: Any) -> None:
        """Seal one message with this end's protocol and write it; nothing once the protocol has
        closed (a frame refused in flight closes it), as the node's ``Accepted.write`` ignores a
        connection that is gone."""
        if not self.protocol.closed:
            self.write(self.protocol.send(message))

    def close(self) -> None:
        """Close this side; the other side hears of it after a delay."""
        if not self.open:
            return
        self.open = False
        other = self.other
        if other is not None and other.open:
            self.network.close_later(other)


class Network:
    """Carries bytes between ends under the seed's fault settings."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.partitions: dict[frozenset[str], float] = {}  # pair -> healed at
        self.dropped = 0
        self.duplicated = 0
        self.reordered = 0
        self.resets = 0
        self.ends: list[End] = []

    def connect(
        self,
        a_owner: EndOwner,
        a: Connection,
        a_where: str,
        a_role: str,
        b_owner: EndOwner,
        b: Connection,
        b_where: str,
    ) -> End:
        end_a = End(a_owner, self, a, a_where, a_role, peer=b_where)
        end_b = End(b_owner, self, b, b_where, "incoming")
        end_a.other, end_b.other = end_b, end_a
        self.ends.append(end_a)
        return end_a

    def partitioned(self, x: str, y: str) -> bool:
        healed = self.partitions.get(frozenset((x, y)))
        return healed is not None and healed > self.world.now

    def carry(self, src: End, dst: End, data: bytes) -> None:
        world = self.world
        faults = world.faults if world.faulty else None
        latency = world.latency()
        if faults is not None and self.partitioned(src.where, dst.where):
            self.dropped += 1
            world.trace(f"net: {src.where}->{dst.where} lost (partition), {len(data)} B")
            self.reset(src)
            return
        if faults is not None and world.rng.random() < faults.loss:
            self.dropped += 1
            world.trace(f"net: {src.where}->{dst.where} lost, {len(data)} B; connection breaks")
            world.after(latency, self.reset, src)
            return
        arrival = max(world.now + latency, src.last_arrival)
        if faults is not None and world.rng.random() < faults.reorder:
            self.reordered += 1
            arrival = world.now + latency + world.rng.uniform(0.001, 0.02)
            world.trace(f"net: {src.where}->{dst.where} delayed past later packets")
        else:
            src.last_arrival = arrival
        world.at(arrival, self._arrive, dst, data)
        if faults is not None and world.rng.random() < faults.duplicate:
            self.duplicated += 1
            world.trace(f"net: {src.where}->{dst.where} duplicated, {len(data)} B")
            world.at(arrival + world.rng.uniform(0.0, 0.01), self._arrive, dst, data)

    def _arrive(self, dst: End, data: bytes) -> None:
        if dst.open:
            dst.owner.on_data(dst, data)

    def close_later(self, end: End) -> None:
        self.world.after(self.world.latency() + self.world.rng.uniform(0, 0.05), self._closed, end)

    def _closed(self, end: End) -> None:
        if end.open:
            end.open = False
            end.owner.on_closed(end)

    def reset(self, end: End) -> None:
        """Both sides of ``end``'s connection hear that it broke."""
        if not end.open and (end.other is None or not end.other.open):
            return
        self.resets += 1
        for side in (end, end.other):
            if side is not None and side.open:
                side.open = False
                self.world.after(0.0, side.owner.on_closed, side)

    def reset_random(self) -> None:
        self.ends = [e for e in self.ends if e.open]
        live = self.ends
        if live:
            end = self.world.rng.choice(live)
            self.world.trace(f"net: reset {end.where}->{end.peer}")
            self.reset(end)
