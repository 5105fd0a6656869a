"""The log's metadata file, ``meta.json``: who wrote this log and with what code.

JSON rather than a binary header because people and other tools read it first (which app, which
version) and it changes rarely. It is replaced atomically (write, fsync, rename) so a crash leaves
either the old or the new file. ``versions`` keeps every code version the instance has run, with
the LSN it started at, so tools can find the code that wrote any step.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from ._errors import FormatVersionError, NotALogError

META_NAME: Final = "meta.json"
META_FORMAT: Final = "immortals-log"
META_VERSION: Final = 3
"""The highest ``format_version`` this reader knows (FORMAT.md 6)."""
PLAIN_VERSION: Final = 1
"""What a log without a fence file says: it is exactly a version-1 log."""
FENCED_VERSION: Final = 2
"""What a log with a fence file says, so that readers which predate the void rule (8.1) refuse
it instead of serving a fenced-out writer's records."""
ZERO_TAIL_VERSION: Final = 3
"""What a log says once it may hold version-2 segments (preallocated, with a zero tail: FORMAT.md
3.1), so that readers which would take a zero tail for a torn tail or corruption refuse it."""
FENCE_NAME: Final = "fence"


@dataclass(frozen=True, slots=True)
class CodeVersion:
    """One code version the instance ran, from ``from_lsn`` on."""

    from_lsn: int
    app: str
    code_version: str


@dataclass(frozen=True, slots=True)
class LogMeta:
    """What the log says about itself."""

    instance: str
    app: str
    code_version: str
    log_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_ns: int = 0
    versions: tuple[CodeVersion, ...] = ()

    def with_version(self, from_lsn: int, app: str, code_version: str) -> LogMeta:
        """The metadata after the instance starts running ``app`` at ``code_version``."""
        entry = CodeVersion(from_lsn, app, code_version)
        return LogMeta(
            self.instance,
            app,
            code_version,
            self.log_id,
            self.created_ns,
            (*self.versions, entry),
        )

    def to_json(self, *, format_version: int = PLAIN_VERSION) -> dict[str, Any]:
        body = asdict(self)
        body["versions"] = [asdict(v) for v in self.versions]
        return {"format": META_FORMAT, "format_version": format_version, **body}

    @classmethod
    def from_json(cls, data: dict[str, Any], *, where: str) -> LogMeta:
        if data.get("format") != META_FORMAT:
            raise NotALogError(f"{where} is not an immortals log metadata file")
        version = data.get("format_version")
        if not isinstance(version, int) or version > META_VERSION:
            raise FormatVersionError(
                f"{where} has metadata version {version}, this reader knows up to {META_VERSION}"
            )
        try:
            return cls(
                instance=str(data["instance"]),
                app=str(data["app"]),
                code_version=str(data["code_version"]),
                log_id=str(data["log_id"]),
                created_ns=int(data.get("created_ns", 0)),
                versions=tuple(CodeVersion(**v) for v in data.get("versions", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise NotALogError(f"{where} is damaged: {exc}") from exc


def read_meta(log_dir: Path) -> LogMeta:
    path = log_dir / META_NAME
    if not log_dir.is_dir():
        raise NotALogError(f"{log_dir} is not a directory (expected an immortals log directory)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotALogError(f"{log_dir} is not an immortals log (no {META_NAME})") from None
    except (OSError, ValueError) as exc:
        raise NotALogError(f"{path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise NotALogError(f"{path} is not an immortals log metadata file")
    return LogMeta.from_json(data, where=str(path))


def _written_version(log_dir: Path) -> int:
    """The ``format_version`` the current ``meta.json`` says (0 if there is none to read)."""
    try:
        version = json.loads((log_dir / META_NAME).read_text("utf-8")).get("format_version")
    except (OSError, ValueError, AttributeError):
        return 0
    return version if isinstance(version, int) else 0


def write_meta(log_dir: Path, meta: LogMeta, *, at_least: int = PLAIN_VERSION) -> None:
    """Replace ``meta.json`` atomically; version 2 once the log has a fence file (8.1), 3 once
    it may hold preallocated segments (3.1). The version never goes down: a log that may hold a
    zero tail keeps saying so when a taker or a code version rewrites the file.

    The temporary name is unique to the process: a taker marking the version and a writer
    recording a code version may write at once, and must not write into the same file.
    """
    tmp = log_dir / f"{META_NAME}.{os.getpid()}.tmp"
    fenced = (log_dir / FENCE_NAME).exists()
    version = max(
        FENCED_VERSION if fenced else PLAIN_VERSION,
        at_least,
        min(_written_version(log_dir), META_VERSION),
    )
    data = json.dumps(meta.to_json(format_version=version), indent=2, sort_keys=True).encode()
    replace_file(log_dir / META_NAME, data, tmp=tmp)


def mark_fenced(log_dir: Path) -> None:
    """Raise ``meta.json`` to version 2 if it still says 1 (called after a fence entry)."""
    if _written_version(log_dir) < FENCED_VERSION:
        write_meta(log_dir, read_meta(log_dir))


def mark_zero_tail(log_dir: Path) -> None:
    """Raise ``meta.json`` to version 3 if it says less (before a version-2 segment is made)."""
    if _written_version(log_dir) < ZERO_TAIL_VERSION:
        write_meta(log_dir, read_meta(log_dir), at_least=ZERO_TAIL_VERSION)


def replace_file(
    final: Path,
    data: bytes,
    *,
    tmp: Path,
    sync: bool = True,
    halfway: Callable[[], None] | None = None,
) -> None:
    """Put ``data`` under ``final`` atomically: written under ``tmp``, fsynced (with
    ``sync``), renamed into place, the folder fsynced; so a file under its final name is whole
    (FORMAT.md 5, 6, 6.1). ``halfway`` is called with half the bytes written (crash tests)."""
    with open(tmp, "wb") as f:
        if halfway is not None:
            f.write(data[: len(data) // 2])
            f.flush()
            halfway()
            data = data[len(data) // 2 :]
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, final)
    if sync:
        fsync_dir(final.parent)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a new or renamed file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
