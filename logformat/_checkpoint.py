"""Checkpoint files: one compressed state snapshot per file, tied to the LSN it follows.

A checkpoint lives beside the segments as ``checkpoints/<lsn:020d>.ckpt`` and is written to a
temporary name, fsynced, then renamed, so a crash leaves no half file under the real name. The
56-byte header names the state codec, so a loader knows before decoding whether the body is
language-neutral msgpack or a pickle; a pickle is refused unless the caller opts in, because
unpickling runs code chosen by whoever wrote the file.
"""

from __future__ import annotations

import pickle
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import zstandard

from ._errors import CheckpointError, FormatVersionError, PickleRefusedError, ValueCodecError
from ._meta import replace_file
from ._values import pack_value, unpack_value

CHECKPOINT_MAGIC: Final = b"IMCHKPT\x00"
CHECKPOINT_VERSION: Final = 1
CHECKPOINT_HEADER_SIZE: Final = 56
CHECKPOINT_DIR: Final = "checkpoints"
CHECKPOINT_SUFFIX: Final = ".ckpt"
STATE_MSGPACK: Final = 1
STATE_PICKLE: Final = 2
COMPRESS_NONE: Final = 0
COMPRESS_ZSTD: Final = 1

# magic, version, state codec, compression, flags, lsn, created_ns, raw, stored, body_crc
_HEADER: Final = struct.Struct("<8sHBBIQqQQI")
assert _HEADER.size == CHECKPOINT_HEADER_SIZE - 4
_CRC: Final = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """A checkpoint as listed: its LSN, file, codec and sizes (the body is not read)."""

    lsn: int
    path: Path
    state_codec: int
    created_ns: int
    raw_size: int
    stored_size: int

    @property
    def pickled(self) -> bool:
        return self.state_codec == STATE_PICKLE


def checkpoint_name(lsn: int) -> str:
    return f"{lsn:020d}{CHECKPOINT_SUFFIX}"


def encode_checkpoint(lsn: int, state: Any, *, use_pickle: bool = False, level: int = 3) -> bytes:
    """The bytes of a checkpoint file for ``state`` after step ``lsn``. No I/O.

    Raises ValueCodecError when the state holds a type the msgpack codec cannot store; the message
    says to make the state plain data or to opt in to pickle.
    """
    codec, raw = pack_state(state, use_pickle=use_pickle)
    return seal_checkpoint(lsn, codec, raw, level=level)


def pack_state(state: Any, *, use_pickle: bool = False) -> tuple[int, bytes]:
    """(state codec, uncompressed bytes): the part that must happen while the state holds still.

    Sealing (compression, header) can then run on another thread while the state moves on.
    """
    if use_pickle:
        return STATE_PICKLE, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        return STATE_MSGPACK, pack_value(state)
    except ValueCodecError as exc:
        raise ValueCodecError(
            f"{exc}; keep state to plain data (dict, list, str, numbers, tuple, set, "
            "datetime, Decimal, UUID) or opt in to pickled checkpoints"
        ) from exc


def seal_checkpoint(lsn: int, codec: int, raw: bytes, *, level: int = 3) -> bytes:
    """Compress packed state and put the header in front: the whole checkpoint file."""
    body = zstandard.ZstdCompressor(level=level).compress(raw)
    head = _HEADER.pack(
        CHECKPOINT_MAGIC,
        CHECKPOINT_VERSION,
        codec,
        COMPRESS_ZSTD,
        0,
        lsn,
        time.time_ns(),
        len(raw),
        len(body),
        zlib.crc32(body),
    )
    return head + _CRC.pack(zlib.crc32(head)) + body


def parse_checkpoint_header(buf: bytes, *, where: str) -> tuple[int, int, int, int, int, int, int]:
    """(codec, compression, lsn, created_ns, raw, stored, body_crc) of a checked header."""
    if len(buf) < CHECKPOINT_HEADER_SIZE:
        raise CheckpointError(f"{where}: file is shorter than a checkpoint header")
    magic, version, codec, compression, flags, lsn, created, raw, stored, body_crc = (
        _HEADER.unpack_from(buf, 0)
    )
    if magic != CHECKPOINT_MAGIC:
        raise CheckpointError(f"{where}: not a checkpoint file (bad magic)")
    (crc,) = _CRC.unpack_from(buf, CHECKPOINT_HEADER_SIZE - 4)
    if zlib.crc32(buf[: CHECKPOINT_HEADER_SIZE - 4]) != crc:
        raise CheckpointError(f"{where}: checkpoint header checksum mismatch (file is damaged)")
    if version > CHECKPOINT_VERSION:
        raise FormatVersionError(
            f"{where}: checkpoint format {version} is newer than this reader ({CHECKPOINT_VERSION})"
        )
    if codec not in (STATE_MSGPACK, STATE_PICKLE) or compression not in (0, 1) or flags:
        raise CheckpointError(f"{where}: unknown state codec {codec} or compression {compression}")
    return codec, compression, lsn, created, raw, stored, body_crc


def decode_checkpoint(buf: bytes, *, allow_pickle: bool = False, where: str = "checkpoint") -> Any:
    """The state held by checkpoint bytes ``buf``. No I/O."""
    codec, compression, _lsn, _created, raw_size, stored, body_crc = parse_checkpoint_header(
        buf, where=where
    )
    body = buf[CHECKPOINT_HEADER_SIZE:]
    if len(body) != stored or zlib.crc32(body) != body_crc:
        raise CheckpointError(f"{where}: checkpoint body is damaged (size or checksum mismatch)")
    if codec == STATE_PICKLE and not allow_pickle:
        raise PickleRefusedError(
            f"{where} holds a pickled state; loading it runs code from the file. "
            "Opt in (allow_pickle=True, or --allow-pickle) only if you trust its source"
        )
    try:
        raw = (
            zstandard.ZstdDecompressor().decompress(body, max_output_size=raw_size)
            if compression == COMPRESS_ZSTD
            else body
        )
    except zstandard.ZstdError as exc:
        raise CheckpointError(f"{where}: checkpoint body does not decompress: {exc}") from exc
    if codec == STATE_PICKLE:
        return pickle.loads(raw)
    try:
        return unpack_value(raw)
    except ValueCodecError as exc:
        raise CheckpointError(f"{where}: checkpoint state does not decode: {exc}") from exc


def checkpoint_dir(log_dir: Path) -> Path:
    return log_dir / CHECKPOINT_DIR


def write_checkpoint_file(
    log_dir: Path,
    lsn: int,
    data: bytes,
    *,
    sync: bool = True,
    fault_hook: Callable[[str], None] | None = None,
) -> Path:
    """Store encoded checkpoint bytes under their final name, atomically.

    ``fault_hook("mid-checkpoint")`` is called with half the bytes written, for crash tests.
    """
    folder = checkpoint_dir(log_dir)
    folder.mkdir(exist_ok=True)
    final = folder / checkpoint_name(lsn)
    tmp = folder / (checkpoint_name(lsn) + ".tmp")
    halfway = None if fault_hook is None else lambda: fault_hook("mid-checkpoint")
    replace_file(final, data, tmp=tmp, sync=sync, halfway=halfway)
    return final


def read_checkpoint_info(path: Path) -> CheckpointInfo:
    with open(path, "rb") as f:
        head = f.read(CHECKPOINT_HEADER_SIZE)
    codec, _c, lsn, created, raw, stored, _crc = parse_checkpoint_header(head, where=str(path))
    return CheckpointInfo(lsn, path, codec, created, raw, stored)


def checkpoint_is_sound(path: Path) -> bool:
    """Whether a recovery could start from this checkpoint file.

    Trimming relies on this: history may only go once a checkpoint that really loads covers it.
    A pickled checkpoint refused for want of an opt-in still counts: its bytes are intact.
    """
    try:
        decode_checkpoint(path.read_bytes(), where=str(path))
    except PickleRefusedError:
        return True
    except (CheckpointError, FormatVersionError, OSError):
        return False
    return True


def list_checkpoint_files(log_dir: Path) -> list[tuple[int, Path]]:
    """(lsn, path) of every file named like a checkpoint, oldest first; headers are not read."""
    folder = checkpoint_dir(log_dir)
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        stem = entry.name.removesuffix(CHECKPOINT_SUFFIX)
        if stem != entry.name and len(stem) == 20 and stem.isdigit():
            found.append((int(stem), entry))
    return sorted(found)
