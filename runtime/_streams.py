"""Exactly-once bookkeeping between instances, as a pure state machine over step records.

Every directed pair (sender -> receiver) numbers its messages 1, 2, 3, ... in the sender's
deterministic execution (the executor assigns the numbers, so replay regenerates them). This
module keeps, for one instance:

* ``seq_in[peer]``: the highest number from ``peer`` that this instance has executed. An incoming
  message is admitted only if it is exactly the next one; anything lower is a duplicate (the
  peer resent it after a reconnect), anything higher is a gap (an earlier one is still coming).
* ``outbox[peer]``: messages this instance sent and the peer has not acknowledged. A peer
  acknowledges a number only once the step that executed it is durable, so until then the
  message may be needed again: after a reconnect, each side says what it has logged from the
  other and the other resends everything after it.
* ``results``: outcomes of calls from outside callers by idempotency key, so a caller retrying
  after a timeout gets the one result instead of a second execution (bounded, oldest dropped).

``apply`` is called with each step record live and in replay, in log order, so the state after
recovery is what it was before the crash, except for acknowledgements (not logged), which only
make the outbox smaller and are learned again in the reconnect handshake.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Literal

from ._schema import MAIN_KEY, call_fingerprint, message_seq, message_target

DEFAULT_RESULT_CACHE = 100_000

Admission = Literal["new", "duplicate", "gap"]


class Streams:
    """One instance's view of its message streams and outside callers' results."""

    def __init__(self, *, result_cache: int = DEFAULT_RESULT_CACHE) -> None:
        self.seq_in: dict[str, int] = {}
        self.outbox: dict[str, OrderedDict[int, list[Any]]] = {}
        self.results: OrderedDict[Any, tuple[bool, Any]] = OrderedDict()
        self.running: set[Any] = set()  # outside calls executing (suspended) right now
        self.fingerprints: dict[Any, bytes] = {}  # of the calls running or in ``results``
        self._result_cache = result_cache

    # -- incoming --------------------------------------------------------------------------------

    def admit(self, peer: str, seq: int) -> Admission:
        """Whether message ``seq`` from ``peer`` should be executed now."""
        expected = self.seq_in.get(peer, 0) + 1
        if seq < expected:
            return "duplicate"
        if seq > expected:
            return "gap"
        return "new"

    def known_result(self, key: Any) -> tuple[bool, Any] | None:
        """The recorded outcome for an outside call's idempotency key, if it finished (and is
        still among the newest ``result_cache``; older ones are in the log)."""
        return self.results.get(key)

    def fingerprint(self, key: Any) -> bytes | None:
        """The method-and-arguments fingerprint of the call that used ``key`` (if known)."""
        return self.fingerprints.get(key)

    # -- applying steps (live and replay alike) ---------------------------------------------------

    def apply(self, record: dict[str, Any]) -> None:
        """Account for one executed step."""
        inp = record["in"]
        peer = inp.get("from")
        if peer is not None and "seq" in inp:
            self.seq_in[peer] = max(self.seq_in.get(peer, 0), int(inp["seq"]))
        elif inp.get("k") == "call" and "id" in inp:
            key = inp["id"]
            self.running.add(key)
            self.fingerprints[key] = call_fingerprint(inp["m"], inp.get("a", []))
        for message in record.get("out", ()):
            self.outbox.setdefault(message_target(message), OrderedDict())[message_seq(message)] = (
                message
            )
        for key, ok, value in record.get("rep", ()):
            if key == MAIN_KEY:
                continue
            self.running.discard(key)
            self.results[key] = (ok, value)
            if len(self.results) > self._result_cache:
                old, _ = self.results.popitem(last=False)
                self.fingerprints.pop(old, None)

    # -- outgoing --------------------------------------------------------------------------------

    def acknowledge(self, peer: str, upto: int) -> None:
        """``peer`` has durably logged our messages up to ``upto``: they will not be needed again."""
        box = self.outbox.get(peer)
        if not box:
            return
        while box:
            seq = next(iter(box))
            if seq > upto:
                break
            del box[seq]

    def unacknowledged(self, peer: str, after: int = 0) -> list[list[Any]]:
        """Messages to ``peer`` numbered above ``after``, oldest first (what a reconnect resends)."""
        box = self.outbox.get(peer)
        if not box:
            return []
        return [m for seq, m in box.items() if seq > after]

    def peers(self) -> set[str]:
        return set(self.seq_in) | {p for p, box in self.outbox.items() if box}

    # -- checkpoints -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "seq_in": dict(self.seq_in),
            "outbox": {peer: list(box.values()) for peer, box in self.outbox.items() if box},
            "results": [
                [k, ok, v, self.fingerprints.get(k, b"")] for k, (ok, v) in self.results.items()
            ],
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Load a :meth:`snapshot`; an absent key means it had nothing (see ``_schema``)."""
        self.seq_in = {str(k): int(v) for k, v in snap.get("seq_in", {}).items()}
        self.outbox = {
            peer: OrderedDict((message_seq(m), m) for m in messages)
            for peer, messages in snap.get("outbox", {}).items()
        }
        self.results = OrderedDict()
        self.fingerprints = {}
        for key, ok, value, *rest in snap.get("results", ()):  # [k, ok, v] before fingerprints
            self.results[key] = (ok, value)
            if rest and rest[0]:
                self.fingerprints[key] = bytes(rest[0])
        self.running = set()
