"""The home directory (``--home``, default ``./.immortals``): registry, logs, cluster secret.

Layout::

    HOME/registry/     lmdb: instance name -> where it runs and what it runs
    HOME/logs/NAME/    one log directory per instance (logformat)
    HOME/secret        32 random bytes shared by the instances of this home (mode 0600)

The registry is the embedded default: a local lmdb file, nothing to start. It is an interface
(``Registry``) so that a distributed store (etcd is planned) can stand behind it later. Like the
index, it is a view of facts whose truth lives elsewhere: whether an instance is alive is decided
by its log's writer lock, not by what the registry says.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from logformat import NotALogError, acquire_env, read_meta, release_env

from ._errors import InstanceError

DEFAULT_HOME = ".immortals"


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """What the registry knows of one instance."""

    name: str
    host: str
    port: int
    epoch: int
    log_dir: str
    app: str
    code_version: str
    pid: int
    started: float

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class Home:
    """One home directory. Cheap to create; opens lmdb lazily."""

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_HOME) -> None:
        self.path = Path(path)
        self._env: lmdb.Environment | None = None

    def log_dir(self, name: str) -> Path:
        """Where instance ``name`` keeps its log; the name becomes a folder, so it is checked."""
        if not name.strip() or "/" in name or name in (".", "..") or "\0" in name:
            raise InstanceError(
                f"bad instance name {name!r}: use a non-empty name without '/', e.g. 'server'"
            )
        return self.path / "logs" / name

    def secret(self) -> bytes:
        """The cluster secret, created on first use (atomically: never seen half-written)."""
        path = self.path / "secret"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".secret.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process won the race: then use theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return path.read_bytes()

    def _registry(self) -> lmdb.Environment:
        if self._env is None:
            self._env = acquire_env(self.path / "registry", map_size=1 << 28, max_dbs=1)
        return self._env

    def register(self, record: InstanceRecord) -> None:
        with self._registry().begin(write=True) as txn:
            txn.put(record.name.encode(), msgpack.packb(asdict(record)))

    def next_epoch(self, name: str) -> int:
        """Allocate the epoch for a new start of ``name`` (one more than any before)."""
        with self._registry().begin(write=True) as txn:
            key = b"epoch:" + name.encode()
            raw = txn.get(key)
            epoch = (int(raw) if raw else 0) + 1
            txn.put(key, str(epoch).encode())
        return epoch

    def lookup(self, name: str) -> InstanceRecord | None:
        if not (self.path / "registry").exists():
            return None
        with self._registry().begin() as txn:
            raw = txn.get(name.encode())
        if raw is None:
            return None
        data: dict[str, Any] = msgpack.unpackb(raw)
        return InstanceRecord(**data)

    def require(self, name: str) -> InstanceRecord:
        record = self.lookup(name)
        if record is None:
            raise InstanceError(
                f"no instance named {name!r} under {self.path}; start it with "
                f"`immortals run APP --name {name} --home {self.path}`"
            )
        return record

    def instances(self) -> list[InstanceRecord]:
        if not (self.path / "registry").exists():
            return []
        out = []
        with self._registry().begin() as txn:
            for key, value in txn.cursor():
                if not key.startswith(b"epoch:"):
                    out.append(InstanceRecord(**msgpack.unpackb(value)))
        return out

    def close(self) -> None:
        if self._env is not None:
            self._env = None
            release_env(self.path / "registry")


def resolve_log(path: str, home: str | os.PathLike[str]) -> Path:
    """The log directory PATH means: PATH itself if it is a log, else instance PATH's log.

    A log directory wins over an instance name, so ``immortals log info ./server`` always means
    that directory; a plain name falls through to ``HOME/logs/NAME`` when no log is at PATH.
    """
    direct = Path(path)
    try:
        read_meta(direct)
        return direct
    except NotALogError as exc:
        problem = _not_a_log(direct, exc)
    named = Home(home).log_dir(path) if _could_be_a_name(path) else None
    if named is not None and named.is_dir():
        read_meta(named)  # a damaged log of that instance says so in its own words
        return named
    if named is not None:
        problem += f", and no instance named {path!r} under {home}"
    raise NotALogError(problem)


def _could_be_a_name(text: str) -> bool:
    return bool(text) and text not in (".", "..") and "/" not in text and os.sep not in text


def _not_a_log(path: Path, exc: NotALogError) -> str:
    if path.is_dir():
        return str(exc)  # no meta.json, or a damaged one: logformat says which
    if path.exists():
        return f"{path} is a file, not a log directory"
    return f"no log directory {path}"
