"""One schema for what the runtime records and sends: step records, peer messages, wire
messages and checkpoint payloads, each with one reader.

Everything here is plain msgpack-able data (dicts and lists), because it is stored in the log
and crosses the wire as it is; the TypedDicts give it names and types, and the functions below
are the only code that builds peer messages or reads them by position. docs/ARCHITECTURE.md
("Step records") and docs/PROTOCOL.md describe the same shapes for readers in other languages.

Compatibility rules (for later versions): a reader ignores map keys it does not know; a key
that is absent means "nothing to say" (an empty list, no value); a new kind of input or message
gets a new ``k`` / ``t`` / kind letter, never a new meaning for an old one. A checkpoint payload
carries ``format``; a reader refuses a format it does not know with :class:`CheckpointFormatError`
rather than guessing.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final, Literal, TypedDict

from logformat import pack_value

from ._errors import CheckpointFormatError, ProtocolError

# -- instance names -------------------------------------------------------------------------------

NAME_RULE: Final = "a letter or digit, then up to 62 letters, digits, '.', '_' or '-'"
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def is_valid_name(name: object) -> bool:
    """Whether ``name`` may name an instance: it is a folder, an lmdb key and a peer's identity,
    so it is checked where it enters (the command line, the registry, the handshake)."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


# -- step inputs --------------------------------------------------------------------------------


class StartInput(TypedDict):
    """The instance's first start: runs ``__init__`` and ``main()``."""

    k: Literal["start"]


# ``from`` is a keyword, hence the functional form for the inputs that name a sender.
PeerCallInput = TypedDict(
    "PeerCallInput",
    {"k": Literal["call"], "from": str, "seq": int, "m": str, "a": list[Any], "r": bool},
)
"""A call from another instance: its number ``seq`` in the stream sender -> us."""


class OutsideCallInput(TypedDict):
    """A call from an outside caller, identified by its idempotency key ``id``."""

    k: Literal["call"]
    id: str | bytes
    m: str
    a: list[Any]


ReplyInput = TypedDict(
    "ReplyInput",
    {"k": Literal["reply"], "from": str, "seq": int, "re": int, "ok": Any, "err": list[Any]},
    total=False,
)
"""The reply to our call number ``re``; exactly one of ``ok`` (the value) or ``err`` is set."""


class TimerInput(TypedDict):
    """A durable timer fired."""

    k: Literal["timer"]
    tid: int


class EffectInput(TypedDict, total=False):
    """A side effect's outcome: exactly one of ``ok`` (its value) or ``err`` ([type, message])."""

    k: Literal["effect"]
    eid: int
    ok: Any
    err: list[Any]


class UpgradeInput(TypedDict):
    k: Literal["upgrade"]
    prev: str
    to: str
    fv: int | None
    tv: int | None


"""An upgrade step: from here on the code of version ``to`` runs, its state migrated from that
of ``prev`` (declared versions ``fv`` and ``tv``, None where the app declares none). Not
``from``: that key names a peer that sent an input."""

Input = (
    StartInput
    | PeerCallInput
    | OutsideCallInput
    | ReplyInput
    | TimerInput
    | EffectInput
    | UpgradeInput
)

# -- step records -------------------------------------------------------------------------------

PeerMessage = list[Any]
"""``[target, seq, "c", method, args, wants_reply]`` or ``[target, seq, "r", re, ok, value]``."""

ResultEntry = list[Any]
"""``[key, ok, value]``: the outcome for an outside caller (or ``"main"``); failed value
``[type name, message]``."""

StepRecord = TypedDict(
    "StepRecord",
    {
        "in": Input,
        "nd": list[list[Any]],  # ["now", t] | ["uuid", bytes] | ["seed", n], in order consumed
        "out": list[PeerMessage],
        "emit": list[Any],
        "rep": list[ResultEntry],
        "tim": list[list[Any]],  # [tid, due] (a sleep) or [tid, due, method, args] (a callback)
        "tcx": list[int],  # callback timers cancelled
        "fx": list[list[Any]],  # side effects requested: [eid, key, function name]
        "fail": list[list[Any]],  # failures nobody receives: [type name, message, lsn]
    },
    total=False,
)
"""One step as the log stores it. Only ``in`` is always present."""


def failure(type_name: str, message: str, lsn: int) -> list[Any]:
    """A failed outcome as steps record it: what was raised, and the step that raised it."""
    return [type_name, message, lsn]


def read_failure(value: Any) -> tuple[str, str, int | None]:
    """``(type name, message, LSN)`` of a failed outcome; the LSN is None where the log or the
    peer predates it (``[type name, message]``)."""
    lsn = value[2] if len(value) > 2 and type(value[2]) is int else None
    return str(value[0]), str(value[1]), lsn


MAX_VALUE_BYTES: Final = 16 * 1024 * 1024
"""The most a value a step produces (call arguments, a result, an emit) may take packed: a
quarter of the wire's message limit, so every logged message can be sent, batches included."""

CALL: Final = "c"
REPLY: Final = "r"
MAIN_KEY: Final = "main"  # the result key of main(): reserved, refused as an outside key
MAX_KEY_LENGTH: Final = 256


def call_message(
    target: str, seq: int, method: str, args: list[Any], wants_reply: bool
) -> PeerMessage:
    return [target, seq, CALL, method, args, wants_reply]


def reply_message(target: str, seq: int, re: int, ok: bool, value: Any) -> PeerMessage:
    return [target, seq, REPLY, re, ok, value]


def message_target(message: PeerMessage) -> str:
    """The instance a peer message goes to."""
    target: str = message[0]
    return target


def message_seq(message: PeerMessage) -> int:
    """The message's number in its directed stream (sender -> target)."""
    seq: int = message[1]
    return seq


def is_call(message: PeerMessage) -> bool:
    return bool(message[2] == CALL)


def message_fields(message: PeerMessage) -> tuple[str, int, str, Any, Any, Any]:
    """``(target, seq, kind, a, b, c)``: a call's method, args and wants_reply, or a reply's
    re, ok and value."""
    target, seq, kind, a, b, c = message
    return target, seq, kind, a, b, c


def as_input(sender: str, message: PeerMessage) -> PeerCallInput | ReplyInput:
    """A peer message turned into the step input that executes it at the receiver."""
    _target, seq, kind, a, b, c = message
    if kind == CALL:
        return {"k": "call", "from": sender, "seq": seq, "m": a, "a": b, "r": c}
    inp: ReplyInput = {"k": "reply", "from": sender, "seq": seq, "re": a}
    if b:
        inp["ok"] = c
    else:
        inp["err"] = c
    return inp


def input_sender(inp: Input) -> str | None:
    """The peer an input came from (None for a start, an outside call or a timer)."""
    sender: str | None = inp.get("from")  # type: ignore[assignment]
    return sender


def input_seq(inp: Input) -> int:
    seq: int = inp["seq"]  # type: ignore[typeddict-item]
    return seq


# -- handshake messages (docs/PROTOCOL.md section 2) --------------------------------------------
# Their readers raise ProtocolError (the remote side's fault). Types are checked exactly (a bool
# is not an integer here), before any comparison: a hostile value must not get to raise from
# inside one.

PROTOCOL_VERSION: Final = 2
NONCE_BYTES: Final = 16


class HelloMessage(TypedDict):
    t: Literal["hello"]
    v: int
    name: str | None  # None for an outside caller
    epoch: int
    nonce: bytes


class WelcomeMessage(TypedDict):
    t: Literal["welcome"]
    v: int
    name: str | None
    epoch: int
    nonce: bytes
    mac: bytes


class AuthMessage(TypedDict):
    t: Literal["auth"]
    mac: bytes  # over the handshake's transcript and ``last``
    last: int  # the highest number the sender has durably logged from the other side


class ReadyMessage(TypedDict):
    t: Literal["ready"]
    last: int
    mac: bytes  # over the handshake's transcript and ``last``


class ErrorMessage(TypedDict):
    t: Literal["error"]
    why: str


def hello(name: str | None, epoch: int, nonce: bytes) -> HelloMessage:
    return {"t": "hello", "v": PROTOCOL_VERSION, "name": name, "epoch": epoch, "nonce": nonce}


def welcome(name: str | None, epoch: int, nonce: bytes, mac: bytes) -> WelcomeMessage:
    return {
        "t": "welcome",
        "v": PROTOCOL_VERSION,
        "name": name,
        "epoch": epoch,
        "nonce": nonce,
        "mac": mac,
    }


def auth(mac: bytes, last: int) -> AuthMessage:
    return {"t": "auth", "mac": mac, "last": last}


def ready(last: int, mac: bytes) -> ReadyMessage:
    return {"t": "ready", "last": last, "mac": mac}


def error(why: str) -> ErrorMessage:
    return {"t": "error", "why": why}


def _check_version(message: dict[str, Any]) -> int:
    version = message.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {version!r} is not supported (this side speaks {PROTOCOL_VERSION})"
        )
    return version


def _check_name(message: dict[str, Any]) -> str | None:
    name = message.get("name")
    if not (name is None or is_valid_name(name)):
        raise ProtocolError(f"{message['t']}: name must be an instance name ({NAME_RULE}) or null")
    return name


def _check_epoch(message: dict[str, Any]) -> int:
    epoch = message.get("epoch")
    if type(epoch) is not int or epoch < 0:
        raise ProtocolError(f"{message['t']}: epoch must be a non-negative integer")
    return epoch


def _check_nonce(message: dict[str, Any]) -> bytes:
    nonce = message.get("nonce")
    if type(nonce) is not bytes or len(nonce) != NONCE_BYTES:
        raise ProtocolError(f"{message['t']}: nonce must be {NONCE_BYTES} bytes")
    return nonce


def _check_mac(message: dict[str, Any]) -> bytes:
    mac = message.get("mac")
    if type(mac) is not bytes:
        raise ProtocolError(f"{message['t']}: mac must be bytes")
    return mac


def _check_last(message: dict[str, Any]) -> int:
    last = message.get("last")
    if type(last) is not int or last < 0:
        raise ProtocolError(f"{message['t']}: last must be a non-negative integer")
    return last


def read_hello(message: dict[str, Any]) -> HelloMessage:
    _check_version(message)
    return hello(_check_name(message), _check_epoch(message), _check_nonce(message))


def read_welcome(message: dict[str, Any]) -> WelcomeMessage:
    _check_version(message)
    return welcome(
        _check_name(message), _check_epoch(message), _check_nonce(message), _check_mac(message)
    )


def read_auth(message: dict[str, Any]) -> AuthMessage:
    return auth(_check_mac(message), _check_last(message))


def read_ready(message: dict[str, Any]) -> ReadyMessage:
    return ready(_check_last(message), _check_mac(message))


def read_error(message: dict[str, Any]) -> str:
    """Why the peer closes (whatever it sent, as text)."""
    return str(message.get("why"))


# -- wire messages (after the handshake; docs/PROTOCOL.md section 4) -------------------------


class MsgsMessage(TypedDict):
    t: Literal["msgs"]
    b: list[PeerMessage]


class AckMessage(TypedDict):
    t: Literal["ack"]
    upto: int


class CallMessage(TypedDict):
    t: Literal["call"]
    id: str | bytes
    m: str
    a: list[Any]


class ResultMessage(TypedDict):
    t: Literal["result"]
    id: Any
    ok: bool
    v: Any


class PingMessage(TypedDict):
    t: Literal["ping", "pong"]


PING: Final[PingMessage] = {"t": "ping"}
PONG: Final[PingMessage] = {"t": "pong"}


def call(key: str | bytes, method: str, args: list[Any]) -> CallMessage:
    """An outside caller's call; ``key`` is its idempotency key."""
    return {"t": "call", "id": key, "m": method, "a": args}


def msgs(batch: list[PeerMessage]) -> MsgsMessage:
    return {"t": "msgs", "b": batch}


def ack(upto: int) -> AckMessage:
    return {"t": "ack", "upto": upto}


def result(key: Any, ok: bool, value: Any) -> ResultMessage:
    return {"t": "result", "id": key, "ok": ok, "v": value}


def read_msgs(message: dict[str, Any]) -> list[PeerMessage] | None:
    """The batch of a ``msgs`` message, or None when it is malformed (any message in it not a
    well-typed call or reply: a peer's bad message must never reach the executor)."""
    batch = message.get("b")
    if not isinstance(batch, list):
        return None
    for m in batch:
        if not (isinstance(m, list) and len(m) == 6 and type(m[1]) is int and m[1] > 0):
            return None
        kind, a, b = m[2], m[3], m[4]
        if kind == CALL:
            if not (isinstance(a, str) and isinstance(b, list)):
                return None
        elif kind != REPLY or type(a) is not int or type(b) is not bool:
            return None
        if not isinstance(m[0], str):
            return None
    return batch


def read_ack(message: dict[str, Any]) -> int | None:
    upto = message.get("upto")
    return upto if isinstance(upto, int) and upto >= 0 else None


def read_call(message: dict[str, Any]) -> OutsideCallInput | str:
    """An outside caller's ``call`` as the input that executes it, or why it is malformed."""
    key, method, args = message.get("id"), message.get("m"), message.get("a", [])
    if (
        not isinstance(key, str | bytes)
        or not isinstance(method, str)
        or not isinstance(args, list)
    ):
        return "call needs id (str or bytes), m (str), a (list)"
    if not key or len(key) > MAX_KEY_LENGTH:
        return f"an idempotency key must be 1 to {MAX_KEY_LENGTH} characters or bytes"
    if key == MAIN_KEY:  # the log records main()'s outcome under this key
        return f"the idempotency key {MAIN_KEY!r} is reserved; use any other key"
    return {"k": "call", "id": key, "m": method, "a": args}


def call_fingerprint(method: str, args: list[Any]) -> bytes:
    """What identifies an outside call beyond its key: a retry must carry the same method and
    arguments, or it is a different call that reused a key (refused, as Stripe does)."""
    return hashlib.blake2b(pack_value([method, args]), digest_size=8).digest()


def read_result(message: dict[str, Any]) -> tuple[Any, bool, Any]:
    """``(key, ok, value)`` of a ``result`` message."""
    return message.get("id"), bool(message.get("ok")), message.get("v")


# -- checkpoint payloads ------------------------------------------------------------------------

CHECKPOINT_FORMAT: Final = 1


class CheckpointPayload(TypedDict):
    """What a checkpoint file holds (inside logformat's sealed, compressed envelope)."""

    format: int
    exec: dict[str, Any]  # Executor.snapshot()
    streams: dict[str, Any]  # Streams.snapshot()


def checkpoint_payload(exec_snapshot: dict[str, Any], streams: dict[str, Any]) -> CheckpointPayload:
    return {"format": CHECKPOINT_FORMAT, "exec": exec_snapshot, "streams": streams}


def read_checkpoint(payload: Any, *, where: str) -> CheckpointPayload:
    """Check a loaded checkpoint payload; CheckpointFormatError names ``where`` when it is not one
    this version can read."""
    if not isinstance(payload, dict):
        raise CheckpointFormatError(
            f"{where}: not a checkpoint payload (a {type(payload).__name__})"
        )
    version = payload.get("format")
    if version != CHECKPOINT_FORMAT:
        raise CheckpointFormatError(
            f"{where}: checkpoint payload format {version!r}, but this version of immortals reads "
            f"format {CHECKPOINT_FORMAT}; run it with the immortals version that wrote it, or "
            "move the checkpoint file aside to recover from the log alone"
        )
    if not isinstance(payload.get("exec"), dict) or not isinstance(payload.get("streams"), dict):
        raise CheckpointFormatError(f"{where}: checkpoint payload lacks 'exec' or 'streams'")
    checked: CheckpointPayload = payload  # type: ignore[assignment]
    return checked
