"""The code store: the source of every code version a log's steps ran, under ``code/``.

History is immutable, and a step can only be re-executed with the code that ran it, so the log
keeps that code itself: any tool can then replay any part of history without the user keeping
old checkouts. logformat does not know what is inside (the runtime packs an app's modules and
the versions of the packages it uses); it keeps one opaque blob per code version:

    code/<version>.code      magic "IMMCODE1", 4-byte big-endian CRC-32 of the rest, then the
                             blob compressed as one zstd frame (with its content size)

``<version>`` is the code version with every character outside ``[A-Za-z0-9._-]`` replaced by
``-`` (``sha256:ab12`` is stored as ``sha256-ab12.code``). A blob is written once, atomically
(temporary name, fsync, rename, fsync of the folder), before the first step that runs it; it is
never changed. A reader that finds the checksum wrong raises ``CodeStoreError``: an old
version's code is then lost, but the steps are not.
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path
from typing import Final

import zstandard

from ._errors import CodeStoreError
from ._meta import replace_file

CODE_DIR: Final = "code"
_MAGIC: Final = b"IMMCODE1"
_CRC = struct.Struct(">I")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
MAX_CODE_BYTES: Final = 64 * 1024 * 1024  # a bundle bigger than this is refused on reading


def code_path(log_dir: Path, version: str) -> Path:
    """Where the code of ``version`` is stored in the log at ``log_dir``."""
    return log_dir / CODE_DIR / (_UNSAFE.sub("-", version) + ".code")


def store_code(log_dir: Path, version: str, blob: bytes, *, sync: bool = True) -> bool:
    """Keep ``blob`` as the code of ``version`` (a no-op if it is kept already); True if written."""
    final = code_path(log_dir, version)
    if final.exists():
        return False
    body = zstandard.ZstdCompressor(level=9, write_content_size=True).compress(blob)
    data = _MAGIC + _CRC.pack(zlib.crc32(body)) + body
    final.parent.mkdir(exist_ok=True)
    replace_file(final, data, tmp=final.with_suffix(".tmp"), sync=sync)
    return True


def load_code(log_dir: Path, version: str) -> bytes | None:
    """The code of ``version`` as stored, or None if the log does not keep it."""
    path = code_path(log_dir, version)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    head = len(_MAGIC) + _CRC.size
    if len(data) < head or not data.startswith(_MAGIC):
        raise CodeStoreError(f"{path}: not a code file (bad magic)")
    (crc,) = _CRC.unpack_from(data, len(_MAGIC))
    body = data[head:]
    if zlib.crc32(body) != crc:
        raise CodeStoreError(f"{path}: checksum mismatch; the code of {version} is damaged")
    try:
        return zstandard.ZstdDecompressor().decompress(body, max_output_size=MAX_CODE_BYTES)
    except zstandard.ZstdError as exc:
        raise CodeStoreError(f"{path}: does not decompress: {exc}") from exc


def stored_versions(log_dir: Path) -> list[str]:
    """The file stems of the code kept in the log (versions, with unsafe characters replaced)."""
    folder = log_dir / CODE_DIR
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.code"))
