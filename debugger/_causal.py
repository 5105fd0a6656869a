"""The causal model over several instances' logs: who caused what, in one order.

No UI and no files: :class:`CausalMerge` is fed each instance's step records (anything with
``lsn``, ``wall_ns`` and ``value``, as ``LogReader.records`` yields them, or synthetic ones in
tests) and pulls them lazily, a bounded number per :meth:`CausalMerge.advance`, so a caller
can show the first screen after merging a few hundred steps and let a thread do the rest.

How the links are found (the records alone say it; nothing is re-executed). Every message
between instances is numbered in its directed stream sender -> target (``runtime._schema``):

* a sent message is an entry of the sending step's ``out``: ``[target, seq, "c", ...]`` (a
  call or a post) or ``[target, seq, "r", re, ...]`` (a reply to the target's call ``re``);
* a received one is the receiving step's input: ``{"k": "call" | "reply", "from": sender,
  "seq": seq}`` (a reply also carries ``re``, the number of the call it answers).

So (sender, target, seq) names a message in both logs. It is unique in each: the sender's
executor assigns the numbers deterministically and a restarted sender resends the logged
message with its logged number; the receiver admits only the next number of each stream and
drops lower ones before they are executed, so a message resent after a crash (or duplicated by
the network) is in the receiver's log once. A sender crash before its fsync loses the step
and the message with it (nothing is released before it is durable), so neither log has it. A
takeover's fenced-out frames are void for every reader. Should a log hold a number twice
anyway, the first occurrence is the one linked (the one the runtime executed first).

The order: a k-way merge of the logs by wall time (ties: instance, then LSN) in which a step
whose input is a message from an opened instance waits until the step that sent it is merged.
Every receive therefore comes after its send; every reply after its call (the callee received
the call before it replied, the caller received the reply after it was sent). Wall time only
decides between steps that are concurrent. When every remaining step waits on a message whose
send is in no log (the sender's log was trimmed, or has lost its tail), the earliest is let
through: the order is still the causal one for every message both logs hold.

The cut: each merged step gets a vector clock, for every other instance the newest LSN of it
that happened before the step (0: none). A step has at most one input, so its clock is its
predecessor's in its own log, raised by the sending step's clock when the input is a message
from another opened instance. The clock of a step *is* its consistent cut: the set of steps
that happened before it is closed under "sent before received", so no state in the cut
reflects a message whose send is outside it. Clocks are kept as one ``array`` per pair of
instances (8 bytes a step a peer): n instances of m steps cost 8 n (n - 1) m bytes, 14 MB for
3 x 300,000. Rejected: computing a cut on demand by walking the causal past backward (as
long as the history on a chain), and dicts per message (about 150 bytes each).
"""

from __future__ import annotations

import heapq
import threading
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from runtime._schema import input_sender, input_seq, message_fields

Kind = Literal["call", "reply", "timer", "effect", "other"]


class SourceRecord(Protocol):
    """What the merge reads from a log: ``logformat.Record`` has these."""

    @property
    def lsn(self) -> int: ...
    @property
    def wall_ns(self) -> int: ...
    @property
    def value(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Sent:
    """One message a step sent: ``kind`` is ``"c"`` (call or post) or ``"r"`` (reply to ``re``)."""

    target: str
    seq: int
    kind: str
    re: int  # a reply's call number; 0 for a call
    wants_reply: bool


@dataclass(frozen=True, slots=True)
class Links:
    """What one step record says about causes: its input's origin, and what it sent or set."""

    kind: Kind
    sender: str | None  # the instance a call or reply came from (None: outside, or no message)
    seq: int  # its number in the stream sender -> us (0 when not a message)
    re: int  # for a reply: the number of our call it answers
    cause_id: int  # a timer's tid, an effect's eid (0 otherwise)
    sent: tuple[Sent, ...]
    timers: tuple[int, ...]  # tids set
    effects: tuple[int, ...]  # eids requested


def step_links(record: Mapping[str, Any]) -> Links:
    """Decode the causal facts of a step record (``runtime._schema``'s shapes)."""
    inp = record.get("in", {})
    k = inp.get("k")
    sender = input_sender(inp)
    seq = input_seq(inp) if sender is not None else 0
    kind: Kind = "other"
    cause_id = 0
    re = 0
    if k == "call":
        kind = "call"
    elif k == "reply":
        kind, re = "reply", int(inp.get("re", 0))
    elif k == "timer":
        kind, cause_id = "timer", int(inp.get("tid", 0))
    elif k == "effect":
        kind, cause_id = "effect", int(inp.get("eid", 0))
    sent = []
    for message in record.get("out", ()):
        target, mseq, mkind, a, _b, c = message_fields(message)
        if mkind == "r":
            sent.append(Sent(target, mseq, "r", int(a), False))
        else:
            sent.append(Sent(target, mseq, "c", 0, bool(c)))
    timers = tuple(int(t[0]) for t in record.get("tim", ()))
    effects = tuple(int(f[0]) for f in record.get("fx", ()))
    return Links(kind, sender, seq, re, cause_id, tuple(sent), timers, effects)


class _Dense:
    """LSNs by message number for one stream: numbers are dense, so an array with a base."""

    __slots__ = ("base", "lsns")

    def __init__(self) -> None:
        self.base = 0
        self.lsns = array("q")

    def set(self, seq: int, lsn: int) -> None:
        if not self.lsns:
            self.base = seq
        index = seq - self.base
        if index < 0:
            return  # a number below the first one seen: a log that holds one twice
        if index >= len(self.lsns):
            self.lsns.extend([0] * (index - len(self.lsns) + 1))
        if self.lsns[index] == 0:
            self.lsns[index] = lsn

    def get(self, seq: int) -> int:
        index = seq - self.base
        return self.lsns[index] if 0 <= index < len(self.lsns) else 0

    def top(self) -> int:
        """The highest number held (base - 1 when empty)."""
        return self.base + len(self.lsns) - 1


@dataclass(slots=True)
class _Stream:
    sent: _Dense = field(default_factory=_Dense)  # seq -> sender's LSN
    received: _Dense = field(default_factory=_Dense)  # seq -> receiver's LSN
    reply_received: _Dense = field(default_factory=_Dense)  # call seq -> caller's LSN of reply


@dataclass(frozen=True, slots=True)
class StepRef:
    """One step of one instance."""

    instance: str
    lsn: int


@dataclass(frozen=True, slots=True)
class Hop:
    """Where following a link leads: a step, or why it leads nowhere (``step`` None)."""

    step: StepRef | None
    why: str  # what the hop is ("the call this step received", "in flight: ...")
    in_flight: bool = False


class _Source:
    """One instance's records, pulled lazily, with its head parsed."""

    __slots__ = ("done", "first", "index", "it", "links", "lsn", "name", "record", "wall")

    def __init__(self, index: int, name: str, records: Iterable[SourceRecord]) -> None:
        self.index = index
        self.name = name
        self.it: Iterator[SourceRecord] = iter(records)
        self.first = 0
        self.done = False
        self.lsn = 0
        self.wall = 0
        self.record: Any = None
        self.links: Links | None = None

    def pull(self) -> bool:
        try:
            r = next(self.it)
        except StopIteration:
            self.done = True
            self.links = None
            return False
        self.lsn, self.wall, self.record = r.lsn, r.wall_ns, r.value
        self.links = step_links(r.value)
        if not self.first:
            self.first = r.lsn
        return True


class CausalMerge:
    """The merged, causally ordered timeline of several instances, built incrementally.

    Positions in the merged timeline count from 1. Everything is readable from other threads
    while :meth:`advance` runs (each call holds a lock for the steps it merges).
    """

    def __init__(self, sources: Mapping[str, Iterable[SourceRecord]]) -> None:
        self.names: list[str] = list(sources)
        self._index = {name: i for i, name in enumerate(self.names)}
        self._sources = [_Source(i, n, rs) for i, (n, rs) in enumerate(sources.items())]
        n = len(self.names)
        self.lock = threading.RLock()
        self._order_instance = array("H")
        self._order_lsn = array("q")
        self._position = [array("q") for _ in range(n)]  # by lsn - first: merged position
        # _clock[i][j]: the newest LSN of j that happened before each step of i (j != i)
        self._clock = [[array("q") for _ in range(n)] for _ in range(n)]
        self._now = [[0] * n for _ in range(n)]  # the running clock of each instance
        self._input_stream = [array("l") for _ in range(n)]  # stream id of the input, or -1
        self._input_seq = [array("q") for _ in range(n)]
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._stream_keys: list[tuple[str, str]] = []
        self._stream_ids: dict[tuple[str, str], int] = {}
        self._timers: list[dict[int, int]] = [{} for _ in range(n)]  # tid -> LSN that set it
        self._effects: list[dict[int, int]] = [{} for _ in range(n)]  # eid -> LSN that asked
        self._heap: list[tuple[int, int, int]] = []  # (wall, instance, lsn) of ready heads
        self._waiting: dict[tuple[str, str], tuple[int, int]] = {}  # stream -> (seq, instance)
        self.done = False
        for source in self._sources:
            self._ready(source)

    # -- building ----------------------------------------------------------------------------------

    def _stream(self, sender: str, target: str) -> tuple[int, _Stream]:
        key = (sender, target)
        sid = self._stream_ids.get(key)
        if sid is None:
            sid = len(self._stream_keys)
            self._stream_ids[key] = sid
            self._stream_keys.append(key)
            self._streams[key] = _Stream()
        return sid, self._streams[key]

    def _ready(self, source: _Source) -> None:
        """Pull the next record of ``source``; queue it, or park it until its send is merged."""
        if not source.pull():
            return
        links = source.links
        assert links is not None
        if links.sender is not None and links.sender in self._index and links.sender != source.name:
            _sid, stream = self._stream(links.sender, source.name)
            if stream.sent.get(links.seq) == 0:
                self._waiting[(links.sender, source.name)] = (links.seq, source.index)
                return
        heapq.heappush(self._heap, (source.wall, source.index, source.lsn))

    def advance(self, limit: int = 4096) -> int:
        """Merge up to ``limit`` more steps; the number merged (0 once everything is)."""
        merged = 0
        with self.lock:
            while merged < limit:
                if not self._heap:
                    if not self._waiting:
                        self.done = True
                        break
                    # Every head waits on a send that no log holds: let the earliest through.
                    stream, (_seq, index) = min(
                        self._waiting.items(), key=lambda kv: self._sources[kv[1][1]].wall
                    )
                    del self._waiting[stream]
                    s = self._sources[index]
                    heapq.heappush(self._heap, (s.wall, s.index, s.lsn))
                _wall, index, _lsn = heapq.heappop(self._heap)
                self._merge(self._sources[index])
                merged += 1
        return merged

    def _merge(self, source: _Source) -> None:
        i, lsn, links = source.index, source.lsn, source.links
        assert links is not None
        name = source.name
        now = self._now[i]
        sid = -1
        if links.sender is not None:
            sid, stream = self._stream(links.sender, name)
            stream.received.set(links.seq, lsn)
            if links.kind == "reply":
                self._stream(name, links.sender)[1].reply_received.set(links.re, lsn)
            j = self._index.get(links.sender)
            sent_at = stream.sent.get(links.seq)
            if j is not None and j != i and sent_at:
                their = self._clock_row(j, sent_at)
                for k, value in enumerate(their):
                    if value > now[k]:
                        now[k] = value
        # Readers on other threads look a step up by its position, so it is set last.
        if lsn - source.first != len(self._position[i]):
            raise ValueError(f"{name}: step {lsn} does not follow the previous one")
        clocks = self._clock[i]
        for k, value in enumerate(now):
            if k != i:
                clocks[k].append(value)
        self._input_stream[i].append(sid)
        self._input_seq[i].append(links.seq)
        for tid in links.timers:
            self._timers[i].setdefault(tid, lsn)
        for eid in links.effects:
            self._effects[i].setdefault(eid, lsn)
        for message in links.sent:
            key = (name, message.target)
            self._stream(*key)[1].sent.set(message.seq, lsn)
            waiting = self._waiting.get(key)
            if waiting is not None and waiting[0] <= message.seq:
                del self._waiting[key]
                s = self._sources[waiting[1]]
                heapq.heappush(self._heap, (s.wall, s.index, s.lsn))
        self._position[i].append(len(self._order_lsn) + 1)
        self._order_instance.append(i)
        self._order_lsn.append(lsn)
        self._ready(source)

    def _clock_row(self, i: int, lsn: int) -> list[int]:
        """The clock of step ``lsn`` of instance ``i`` (its own entry: ``lsn``)."""
        first = self._sources[i].first
        row = [lsn if k == i else (self._clock[i][k][lsn - first]) for k in range(len(self.names))]
        return row

    def run(self) -> None:
        """Merge everything (tests, and the background thread)."""
        while self.advance():
            pass

    # -- the merged timeline -----------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Steps merged so far."""
        return len(self._order_lsn)

    def at(self, position: int) -> StepRef:
        """The step at merged ``position`` (1-based)."""
        return StepRef(
            self.names[self._order_instance[position - 1]], self._order_lsn[position - 1]
        )

    def instance_at(self, position: int) -> int:
        """The index (in :attr:`names`) of the instance of the step at ``position``."""
        return self._order_instance[position - 1]

    def position(self, step: StepRef) -> int | None:
        """The merged position of ``step``, or None when it is not merged (yet)."""
        i = self._index.get(step.instance)
        if i is None:
            return None
        first = self._sources[i].first
        positions = self._position[i]
        index = step.lsn - first
        if not first or index < 0 or index >= len(positions) or positions[index] == 0:
            return None
        return positions[index]

    def positions_of(self, instances: set[str]) -> list[int]:
        """Merged positions of the steps of ``instances``, ascending (a per-instance filter)."""
        wanted = {self._index[n] for n in instances if n in self._index}
        with self.lock:
            order = self._order_instance
            return [p + 1 for p in range(len(order)) if order[p] in wanted]

    def latest_at(self, instance: str, position: int) -> int:
        """The LSN of ``instance``'s newest step at or before merged ``position`` (0: none)."""
        i = self._index[instance]
        positions = self._position[i]
        lo, hi = 0, len(positions)
        while lo < hi:  # positions of one instance grow with its LSNs
            mid = (lo + hi) // 2
            if positions[mid] <= position:
                lo = mid + 1
            else:
                hi = mid
        return self._sources[i].first + lo - 1 if lo else 0

    # -- cuts --------------------------------------------------------------------------------------

    def cut(self, step: StepRef) -> dict[str, int]:
        """The consistent cut at ``step``: for every instance, the newest of its LSNs that
        happened before ``step`` (0: none did), and ``step.lsn`` for its own instance."""
        i = self._index[step.instance]
        if self.position(step) is None:
            raise KeyError(f"{step.instance} step {step.lsn} is not merged yet")
        return dict(zip(self.names, self._clock_row(i, step.lsn), strict=True))

    def happened_before(self, a: StepRef, b: StepRef) -> bool:
        """Whether step ``a`` happened before step ``b`` (or is it)."""
        return self.cut(b).get(a.instance, 0) >= a.lsn

    # -- following messages ------------------------------------------------------------------------

    def receiver(self, sender: str, message: Sent) -> Hop:
        """The step that received ``message`` sent by ``sender``, or why there is none."""
        with self.lock:
            stream = self._streams.get((sender, message.target))
            lsn = stream.received.get(message.seq) if stream is not None else 0
        what = "reply" if message.kind == "r" else "message"
        if lsn:
            return Hop(
                StepRef(message.target, lsn),
                f"the step that received {what} #{message.seq} from {sender}",
            )
        if message.target not in self._index:
            return Hop(None, f"{message.target}'s log is not open here")
        if not self.done:
            return Hop(None, "not merged that far yet (the background merge goes on)")
        return Hop(
            None,
            f"in flight: {what} #{message.seq} to {message.target} was never received "
            f"({message.target}'s log ends before it)",
            in_flight=True,
        )

    def sender_of(self, step: StepRef) -> Hop:
        """The step that sent ``step``'s input message, or why there is none."""
        i = self._index[step.instance]
        first = self._sources[i].first
        with self.lock:
            sid = self._input_stream[i][step.lsn - first]
            seq = self._input_seq[i][step.lsn - first]
            if sid < 0:
                return Hop(None, "this step's input is not a message from an instance")
            sender, _target = self._stream_keys[sid]
            lsn = self._streams[(sender, step.instance)].sent.get(seq)
        if lsn:
            return Hop(StepRef(sender, lsn), f"the step of {sender} that sent it (#{seq})")
        if sender not in self._index:
            return Hop(None, f"sent by {sender}, whose log is not open here")
        return Hop(None, f"sent by {sender} as #{seq}, which its log does not hold (trimmed?)")

    def call_of_reply(self, step: StepRef, re: int, callee: str) -> Hop:
        """For a step that received a reply to our call ``re`` to ``callee``: the step that
        made the call."""
        with self.lock:
            stream = self._streams.get((step.instance, callee))
            lsn = stream.sent.get(re) if stream is not None else 0
        if lsn:
            return Hop(StepRef(step.instance, lsn), f"the step that made call #{re} to {callee}")
        return Hop(None, f"call #{re} to {callee} is not in this log (trimmed?)")

    def reply_of_call(self, caller: str, message: Sent) -> Hop:
        """For a call ``message`` sent by ``caller``: the step of ``caller`` that received
        its reply, or why there is none (a post has none; a reply may still be in flight)."""
        if not message.wants_reply:
            return Hop(None, "a post: no reply is expected")
        with self.lock:
            stream = self._streams.get((caller, message.target))
            lsn = stream.reply_received.get(message.seq) if stream is not None else 0
        if lsn:
            return Hop(StepRef(caller, lsn), f"the step that received the reply to #{message.seq}")
        if not self.done:
            return Hop(None, "not merged that far yet (the background merge goes on)")
        return Hop(
            None,
            f"in flight: no reply to call #{message.seq} to {message.target} was received",
            in_flight=True,
        )

    def why(self, step: StepRef, links: Links) -> Hop:
        """The previous hop of the causal chain: what made ``step`` happen (``links`` are its
        record's, from :func:`step_links`)."""
        if links.sender is not None:
            return self.sender_of(step)
        i = self._index[step.instance]
        if links.kind in ("timer", "effect"):
            table = self._timers[i] if links.kind == "timer" else self._effects[i]
            what = "set the timer" if links.kind == "timer" else "asked for the side effect"
            with self.lock:
                lsn = table.get(links.cause_id, 0)
            if lsn:
                return Hop(StepRef(step.instance, lsn), f"the step that {what} #{links.cause_id}")
            return Hop(None, f"the step that {what} #{links.cause_id} is not in this log")
        return Hop(None, "the chain starts here (a start, an outside call or an upgrade)")

    def in_flight(self) -> list[tuple[StepRef, Sent]]:
        """Messages to an opened instance that its log never received (once merged)."""
        found: list[tuple[StepRef, Sent]] = []
        if not self.done:
            return found
        for (sender, target), stream in self._streams.items():
            if target not in self._index or sender not in self._index:
                continue
            top = stream.received.top()
            for seq in range(max(top + 1, stream.sent.base), stream.sent.top() + 1):
                lsn = stream.sent.get(seq)
                if lsn:
                    found.append((StepRef(sender, lsn), Sent(target, seq, "?", 0, False)))
        return found
