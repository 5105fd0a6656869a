"""Coordinators with one deliberate bug each, to prove the simulator catches every one.

Each subclass breaks exactly one rule of ``runtime._coordinator`` by overriding the one method
that holds it (the rule methods are private: reaching into them is this test module's whole
purpose). ``tests/test_sim.py`` runs seeds against each until the simulator reports a violation.
The drivers at the end (``PLANTED_DRIVERS``) break a rule of the driver instead: the simulator's
``SimNode`` stands for ``runtime._node.Node``.
"""

from __future__ import annotations

from typing import Any

from runtime._actions import Ack, Append, RunEffect
from runtime._coordinator import Coordinator
from runtime._schema import PeerMessage, input_sender, input_seq
from runtime.sim._host import SimNode


class DedupOff(Coordinator):
    """Executes a message again when the peer resends it."""

    def _admission(self, peer: str, seq: int) -> str:
        verdict = super()._admission(peer, seq)
        return "new" if verdict == "duplicate" else verdict


class AckBeforeDurable(Coordinator):
    """Acknowledges an input as soon as it executed, before its step is in the log."""

    def _execute(self, inp: dict[str, Any]) -> None:
        super()._execute(inp)
        sender = input_sender(inp)  # type: ignore[arg-type]
        if sender is not None:
            self.actions.append(Ack(sender, input_seq(inp)))  # type: ignore[arg-type]


class HandshakePromisesExecuted(Coordinator):
    """Tells a reconnecting peer what it executed from it, not what is durable."""

    def durable_from(self, peer: str) -> int:
        return self.streams.seq_in.get(peer, 0)


class ResendSkipsOne(Coordinator):
    """On reconnect, resends all unacknowledged messages but the first."""

    def _resend(self, peer: str, last: int) -> list[PeerMessage]:
        return super()._resend(peer, last)[1:]


class ResendUndurable(Coordinator):
    """On reconnect, resends messages whose step is executed but not yet durable (what the
    runtime did until the simulator found it)."""

    def _resend(self, peer: str, last: int) -> list[PeerMessage]:
        return self.streams.unacknowledged(peer, last)


class ReleaseBeforeAppend(Coordinator):
    """Sends, prints and answers a batch when its append starts, not when it is durable."""

    def _kick(self) -> None:
        before = self._inflight
        super()._kick()
        batch = self._inflight
        if batch is not None and batch is not before:
            Coordinator._release(self, batch)

    def _release(self, batch: Append) -> None:
        pass  # already released when the append began


class CheckpointWhileSuspended(Coordinator):
    """Takes a checkpoint while handlers are suspended, silently dropping them."""

    def _may_checkpoint(self) -> bool:
        return True

    def _pack_checkpoint(self, lsn: int) -> tuple[int, bytes] | None:
        executor = self.executor
        suspended, executor.suspended = executor.suspended, {}
        try:
            return super()._pack_checkpoint(lsn)
        finally:
            executor.suspended = suspended


class ForgetsOldKeys(Coordinator):
    """Runs a retried outside call again once its result left the in-memory cache (the
    runtime's behaviour before keys were looked up in the log)."""

    def key_looked_up(self, key: Any, found: Any) -> None:
        super().key_looked_up(key, None)


class EffectBeforeDurable(Coordinator):
    """Runs a side effect as soon as a handler asks for it, before the asking step is durable."""

    def _execute(self, inp: dict[str, Any]) -> None:
        known = set(self.executor.effects)
        super()._execute(inp)
        for eid, request in self.executor.effects.items():
            if eid not in known:
                self.actions.append(RunEffect(request))

    def _release_rare(self, record: Any, lsn: int) -> None:
        pass  # handed out already, at execution


PLANTED = [
    DedupOff,
    AckBeforeDurable,
    HandshakePromisesExecuted,
    ResendSkipsOne,
    ResendUndurable,
    ReleaseBeforeAppend,
    CheckpointWhileSuspended,
    ForgetsOldKeys,
    EffectBeforeDurable,
]


class ReleasesWithoutFence(SimNode):
    """A driver that checks the fence before each append but not before releasing: a primary
    paused past its lease wakes up, its append in flight completes (void: a standby took over),
    and it sends, replies and prints what that append held."""

    def release_fenced(self) -> bool:
        return False


PLANTED_DRIVERS = [ReleasesWithoutFence]
