"""The home directory (``--home``, default ``./.immortals``): registry, logs, cluster secret.

Layout::

    HOME/registry/     lmdb: database ':records' (instance name -> where it runs and what it
                       runs) and database ':epochs' (instance name -> its newest epoch)
    HOME/logs/NAME/    one log directory per instance (logformat)
    HOME/secret        32 random bytes shared by the instances of this home (mode 0600)

The registry is the embedded default: a local lmdb file, nothing to start. It is an interface
(``Registry``) so that a distributed store (etcd is planned) can stand behind it later. Like the
index, it is a view of facts whose truth lives elsewhere: whether an instance is alive is decided
by its log's writer lock, not by what the registry says.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from logformat import NotALogError, acquire_env, read_meta, release_env, writer_is_live

from ._errors import InstanceError, InstanceNameError, RegistryError, SecretError
from ._schema import NAME_RULE, is_valid_name

DEFAULT_HOME = ".immortals"


def check_name(name: str) -> str:
    """``name`` itself if valid, else InstanceNameError stating the rule in one line."""
    if not is_valid_name(name):
        raise InstanceNameError(
            f"bad instance name {name!r}: a name is {NAME_RULE} (e.g. 'server', 'c1-calls-server-5')"
        )
    return name


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
        self._records: Any = None  # lmdb database handles, set by _registry()
        self._epochs: Any = None

    def log_dir(self, name: str) -> Path:
        """Where instance ``name`` keeps its log; the name becomes a folder, so it is checked."""
        return self.path / "logs" / check_name(name)

    def secret(self) -> bytes:
        """The cluster secret, created on first use (atomically: never seen half-written).

        Refused (SecretError) when shorter than 32 bytes, unreadable, or, like ssh refuses a
        private key, when owned by this user and open to group or others in any way.
        """
        path = self.path / "secret"
        try:
            return _read_secret(path)
        except FileNotFoundError:
            pass
        tmp = self.path / f".secret.{os.getpid()}.tmp"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(fd, 0o600)  # a leftover file keeps its mode through O_CREAT
                data = secrets.token_bytes(SECRET_BYTES)
                if os.write(fd, data) != len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                os.fsync(fd)
            finally:
                os.close(fd)
            with suppress(FileExistsError):  # another process won the race: use theirs
                os.link(tmp, path)
        except OSError as exc:
            if exc.errno in _NOT_WRITABLE:
                raise SecretError(
                    not_writable(self.path, path, f"the cluster secret: {exc.strerror}")
                ) from None
            raise SecretError(
                f"cannot create the cluster secret {path} ({exc.strerror or exc}): free space "
                f"on its disk or let this user write {self.path}, then retry"
            ) from None
        finally:
            with suppress(OSError):
                tmp.unlink()
        try:
            return _read_secret(path)
        except FileNotFoundError:
            raise SecretError(
                f"the cluster secret {path} is missing right after it was created: something "
                f"removes files in {self.path}; stop it and retry"
            ) from None

    def _registry(self) -> lmdb.Environment:
        """The registry's environment, its two databases open and any old layout migrated.

        Call it inside ``_guarded``, which turns lmdb and decoding errors into RegistryError.
        """
        if self._env is None:
            where = self.path / "registry"
            _check_free_space(where)
            env = acquire_env(where, map_size=REGISTRY_MAP_SIZE, max_dbs=2)
            try:
                with env.begin(write=True) as txn:
                    records = env.open_db(RECORDS_DB, txn=txn)
                    epochs = env.open_db(EPOCHS_DB, txn=txn)
                    _migrate_main_db(txn, records, epochs)
            except BaseException:
                release_env(where)
                raise
            self._env, self._records, self._epochs = env, records, epochs
        return self._env

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        """Registry access: lmdb, file system and decoding errors become one RegistryError."""
        where = self.path / "registry"
        try:
            yield
        except _Damaged as exc:
            raise RegistryError(_damaged(where, str(exc))) from None
        except _DAMAGE as exc:
            raise RegistryError(_damaged(where, _one_line(exc))) from None
        except lmdb.MapFullError:
            raise RegistryError(
                f"the registry {where} is full (it holds at most {REGISTRY_MAP_SIZE >> 20} MiB): "
                f"it is a cache of what runs; move it aside (mv {where} {where}.full) and restart "
                "the instances"
            ) from None
        except _NoSpace as exc:
            raise RegistryError(_no_space(where, str(exc))) from None
        except lmdb.DiskError as exc:
            raise RegistryError(_no_space(where, _one_line(exc))) from None
        except (lmdb.ReadonlyError, PermissionError) as exc:
            raise RegistryError(not_writable(self.path, where, _one_line(exc))) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise RegistryError(_no_space(where, _one_line(exc))) from None
            if exc.errno in _NOT_WRITABLE:
                raise RegistryError(not_writable(self.path, where, _one_line(exc))) from None
            raise RegistryError(_unusable(where, _one_line(exc))) from None
        except lmdb.Error as exc:
            raise RegistryError(_unusable(where, _one_line(exc))) from None

    def register(self, record: InstanceRecord) -> None:
        key = check_name(record.name).encode()
        with self._guarded():
            env = self._registry()
            with env.begin(write=True, db=self._records) as txn:
                txn.put(key, msgpack.packb(asdict(record)))

    def next_epoch(self, name: str) -> int:
        """Allocate the epoch for a new start of ``name`` (one more than any before)."""
        key = check_name(name).encode()
        with self._guarded():
            env = self._registry()
            with env.begin(write=True, db=self._epochs) as txn:
                epoch = _decode_epoch(txn.get(key), name) + 1
                txn.put(key, str(epoch).encode())
        return epoch

    def lookup(self, name: str) -> InstanceRecord | None:
        key = check_name(name).encode()
        if not (self.path / "registry").exists():
            return None
        with self._guarded():
            env = self._registry()
            with env.begin(db=self._records) as txn:
                raw = txn.get(key)
            return None if raw is None else _decode_record(raw, name)

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
        with self._guarded():
            env = self._registry()
            with env.begin(db=self._records) as txn:
                return [_decode_record(value, _key_name(key)) for key, value in txn.cursor()]

    def known_names(self) -> list[str]:
        """Every instance this home knows of: registered, or with a log under ``logs/``, sorted.

        A log without a registry entry is still an instance (the registry is a cache: it may
        have been moved aside, or the log copied in from elsewhere).
        """
        names = {record.name for record in self.instances()}
        logs = self.path / "logs"
        if logs.is_dir():
            names.update(e.name for e in logs.iterdir() if e.is_dir() and is_valid_name(e.name))
        return sorted(names)

    def is_running(self, name: str, record: InstanceRecord | None = None) -> bool:
        """Whether a process runs instance ``name`` now.

        The log's writer lock decides, not the registry (a SIGKILLed process leaves its record
        behind, and its pid may be reused). An instance without a log (``--durability none``)
        runs if the process of its newest record is alive.
        """
        log_dir = self.log_dir(name)
        if log_dir.is_dir():
            return writer_is_live(log_dir)
        record = record or self.lookup(name)
        return record is not None and process_alive(record.pid)

    def close(self) -> None:
        if self._env is not None:
            self._env = self._records = self._epochs = None
            release_env(self.path / "registry")


SECRET_BYTES = 32

# errno values that mean "this user may not write there" (not a full disk, not damage)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def not_writable(home: Path, path: object, detail: str) -> str:
    """The one-line refusal for a home (or a part of it) that this user cannot write."""
    return (
        f"cannot write {path} ({detail}): the home {home} must be writable by this user (an "
        "instance keeps its registry entry and its log there); fix its permissions, or choose "
        "another with --home or $IMMORTALS_HOME"
    )


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has exited: its parent has
    not collected its status yet, which a process started by a shell or a test often is)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): a zombie counts as alive
    return stat_line.rpartition(")")[2].split()[:1] != ["Z"]


def _read_secret(path: Path) -> bytes:
    """The secret at ``path``, checked; FileNotFoundError when there is none."""
    fix = f"or remove it to have a new one made, then restart every instance of {path.parent}"
    try:
        # O_NONBLOCK: a FIFO put there must not hang the open (a regular file ignores it)
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as file:
            info = os.fstat(file.fileno())
            data = file.read(1 << 16) if stat.S_ISREG(info.st_mode) else None
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SecretError(
            f"cannot read the cluster secret {path} ({exc.strerror or exc}): make it a file "
            f"this user can read, {fix}"
        ) from None
    if data is None:
        raise SecretError(
            f"cannot read the cluster secret {path}: it is not a regular file; replace it with "
            f"the cluster's secret file, {fix}"
        )
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid == os.getuid() and mode & 0o077:
        raise SecretError(
            f"the cluster secret {path} has mode {mode:04o}, open to group or others: run "
            f"`chmod 600 {path}` (refused as ssh refuses a private key others can read)"
        )
    if len(data) < SECRET_BYTES:
        raise SecretError(
            f"the cluster secret {path} holds {len(data)} bytes, at least {SECRET_BYTES} are "
            f"needed: copy the cluster's secret there (mode 600), {fix}"
        )
    return data


# The registry keeps records and epoch counters in two lmdb named databases, so that no name can
# reach the other's keys. The names of the databases (keys of lmdb's main database) start with
# ':', which no valid instance name does.
RECORDS_DB = b":records"
EPOCHS_DB = b":epochs"
_OLD_EPOCH_PREFIX = b"epoch:"


def _migrate_main_db(txn: lmdb.Transaction, records: Any, epochs: Any) -> None:
    """Move a registry of the previous layout (everything in the main database) into the two.

    The old layout kept records under the bare name and epoch counters under ``epoch:NAME``, so
    a record named ``epoch:foo`` could overwrite foo's counter; such a counter is rebuilt from
    foo's record (its epoch is the newest foo's log can hold). Entries of names that are no
    longer valid are dropped: they can be neither looked up nor started again.
    """
    old = [(bytes(k), bytes(v)) for k, v in txn.cursor() if k not in (RECORDS_DB, EPOCHS_DB)]
    if not old:
        return
    counters: dict[str, int] = {}
    for key, value in old:
        txn.delete(key)
        if key.startswith(_OLD_EPOCH_PREFIX):
            name = key[len(_OLD_EPOCH_PREFIX) :].decode("utf-8", "replace")
            if is_valid_name(name) and value.isdigit():
                counters[name] = max(counters.get(name, 0), int(value))
            continue
        name = key.decode("utf-8", "replace")
        if not is_valid_name(name):
            continue
        try:
            record = _decode_record(value, name)
        except _Damaged:
            continue  # the registry is a cache: a record that does not decode is forgotten
        txn.put(key, value, db=records)
        counters[name] = max(counters.get(name, 0), record.epoch)
    for name, epoch in counters.items():
        key = name.encode()
        current = txn.get(key, db=epochs)
        current = None if current is None else bytes(current)
        if current is None or not current.isdigit() or int(current) < epoch:
            txn.put(key, str(epoch).encode(), db=epochs)


REGISTRY_MAP_SIZE = 1 << 28
# lmdb maps its lock file and touches its pages: on a full disk that is SIGBUS, not an error.
# So the registry is not opened with less than this free.
MIN_FREE_BYTES = 1 << 20

# lmdb errors that mean the files are not (or no longer) a sound lmdb environment.
_DAMAGE = (
    lmdb.CorruptedError,
    lmdb.InvalidError,
    lmdb.PageNotFoundError,
    lmdb.VersionMismatchError,
    lmdb.IncompatibleError,
    lmdb.BadChecksumError,
    lmdb.PanicError,
)


class _Damaged(Exception):
    """A stored value that does not decode (turned into RegistryError by ``_guarded``)."""


class _NoSpace(Exception):
    """Too little free space to open the registry safely."""


def _damaged(where: Path, detail: str) -> str:
    return (
        f"the registry {where} is damaged ({detail}): it is a cache of what runs; move it "
        f"aside (mv {where} {where}.damaged) and restart the instances"
    )


def _no_space(where: Path, detail: str) -> str:
    return (
        f"cannot use the registry {where}: no space left on its disk ({detail}); free space "
        "there and retry"
    )


def _unusable(where: Path, detail: str) -> str:
    return (
        f"cannot use the registry {where} ({detail}): it must be a directory this user can "
        "read and write"
    )


def _check_free_space(where: Path) -> None:
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        fs = os.statvfs(probe)
    except OSError:
        return  # cannot tell: lmdb will say what is wrong
    free = fs.f_bavail * fs.f_frsize
    if free < MIN_FREE_BYTES:
        raise _NoSpace(f"{free} bytes free, {MIN_FREE_BYTES >> 20} MiB needed")


def _key_name(key: bytes) -> str:
    try:
        return bytes(key).decode()
    except UnicodeDecodeError:
        raise _Damaged(f"a record key {bytes(key)[:40]!r} is not UTF-8") from None


def _decode_epoch(raw: bytes | None, name: str) -> int:
    if raw is None:
        return 0
    if not raw.isdigit():
        raise _Damaged(f"epoch counter of {name!r} is {raw[:40]!r}, not a number")
    return int(raw)


_RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "host": str,
    "port": int,
    "epoch": int,
    "log_dir": str,
    "app": str,
    "code_version": str,
    "pid": int,
    "started": (int, float),
}


def _decode_record(raw: bytes, name: str) -> InstanceRecord:
    """One stored record, checked field by field (a damaged one raises RegistryError)."""
    try:
        data = msgpack.unpackb(raw)
    except Exception as exc:  # msgpack raises ValueError, ExtraData, FormatError, StackError...
        raise _Damaged(f"the record of {name!r} does not decode ({_one_line(exc)})") from None
    if not isinstance(data, dict):
        raise _Damaged(f"the record of {name!r} is a {type(data).__name__}, not a map")
    for field, kind in _RECORD_FIELDS.items():
        value = data.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _Damaged(f"the record of {name!r} has a bad {field!r}: {value!r:.60}")
    if data["name"] != name:
        raise _Damaged(f"the record stored as {name!r} names {data['name']!r}")
    return InstanceRecord(**{field: data[field] for field in _RECORD_FIELDS})


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


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
    return is_valid_name(text)


def _not_a_log(path: Path, exc: NotALogError) -> str:
    if path.is_dir():
        return str(exc)  # no meta.json, or a damaged one: logformat says which
    if path.exists():
        return f"{path} is a file, not a log directory"
    return f"no log directory {path}"
