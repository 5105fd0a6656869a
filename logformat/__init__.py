"""The compressed, indexed log of an immortal instance, and its checkpoints.

This package knows nothing of immortals: it stores sequences of msgpack records in frames
(one frame per group commit), indexes them with lmdb, and keeps state snapshots. The runtime
writes logs; the replayer, the debugger and the upgrade tools read them, often while they grow.
``FORMAT.md`` beside this file is the byte-level specification.

Typical use::

    with LogWriter.open(path, create=LogMeta("server", "app.py:Server", "1")) as log:
        done = log.append([{"kind": "call", "args": [1]}])
        # done: Appended(first_lsn=1, last_lsn=1, bytes_written=...), durable on return
    with LogReader(path) as log:
        for record in log.records():
            ...

A standby taking over from a writer that may still be alive (FORMAT.md 8.1)::

    claim(path, epoch=2)  # from now on, epoch 1 refuses to append
    with LogWriter.open(path, epoch=2, take_over=True) as log:
        log.append([...])  # what epoch 1 writes from here on is void for every reader
"""

from ._checkpoint import (
    CheckpointInfo,
    decode_checkpoint,
    encode_checkpoint,
    pack_state,
    seal_checkpoint,
    write_checkpoint_file,
)
from ._code import code_path, load_code, store_code, stored_versions
from ._errors import (
    CheckpointError,
    CodeStoreError,
    CorruptLogError,
    FencedError,
    FormatVersionError,
    FrameError,
    LogError,
    LogLockedError,
    LsnOutOfRangeError,
    MissingRecordsError,
    NotALogError,
    PickleRefusedError,
    TrimmedError,
    TrimRefusedError,
    ValueCodecError,
)
from ._fence import Fence, FenceCorruptError, FenceEntry, claim, read_fence
from ._frame import Frame, FrameDecoder, FrameEncoder, FrameHeader, decode_frame
from ._lmdbenv import acquire_env, release_env
from ._meta import CodeVersion, LogMeta, fsync_dir, read_meta, replace_file
from ._reader import LogReader, LogStats, Record
from ._segment import Damage
from ._values import pack_value, unpack_value
from ._verify import DamagedRange, VerifyReport, verify_log, writer_is_live
from ._writer import (
    LOCK_NAME,
    Appended,
    LogWriter,
    RecoveryReport,
    TrimReport,
    acquire_lock,
    trim_log,
)

__all__ = [
    "LOCK_NAME",
    "Appended",
    "CheckpointError",
    "CheckpointInfo",
    "CodeStoreError",
    "CodeVersion",
    "CorruptLogError",
    "Damage",
    "DamagedRange",
    "Fence",
    "FenceCorruptError",
    "FenceEntry",
    "FencedError",
    "FormatVersionError",
    "Frame",
    "FrameDecoder",
    "FrameEncoder",
    "FrameError",
    "FrameHeader",
    "LogError",
    "LogLockedError",
    "LogMeta",
    "LogReader",
    "LogStats",
    "LogWriter",
    "LsnOutOfRangeError",
    "MissingRecordsError",
    "NotALogError",
    "PickleRefusedError",
    "Record",
    "RecoveryReport",
    "TrimRefusedError",
    "TrimReport",
    "TrimmedError",
    "ValueCodecError",
    "VerifyReport",
    "acquire_env",
    "acquire_lock",
    "claim",
    "code_path",
    "decode_checkpoint",
    "decode_frame",
    "encode_checkpoint",
    "fsync_dir",
    "load_code",
    "pack_state",
    "pack_value",
    "read_fence",
    "read_meta",
    "release_env",
    "replace_file",
    "seal_checkpoint",
    "store_code",
    "stored_versions",
    "trim_log",
    "unpack_value",
    "verify_log",
    "write_checkpoint_file",
    "writer_is_live",
]
