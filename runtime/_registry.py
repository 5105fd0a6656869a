"""The registry: where each instance runs, its epoch, who holds its primary role, its standbys.

``Registry`` is the interface every part above it uses (the node, the client, links, ``status``);
``EmbeddedRegistry`` is the default backend, an lmdb environment under the home, nothing to
start. A distributed backend (etcd) implements the same interface, so nothing here may leak an
lmdb type. Like the log's index, the registry is a view of facts whose truth lives elsewhere
for liveness (an instance runs while its log's writer lock is held), but the epoch is its own:
it only grows, by compare-and-set, and is the fencing token every log append and handshake
carries.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import lmdb
import msgpack

from logformat import acquire_env, release_env

from ._errors import RegistryError
from ._registry_types import Damaged, InstanceRecord, Lease, StandbyRecord
from ._role_files import ReportFiles, RoleFiles
from ._schema import is_valid_name

__all__ = ["EmbeddedRegistry", "InstanceRecord", "Lease", "Registry", "StandbyRecord"]


class Registry(Protocol):
    """Where instances are, and who may act as each one's primary.

    Guarantees every backend gives:

    * ``register``/``lookup``/``instances``: the newest record a primary registered for a
      name (its address, epoch, pid); a record may be stale (its process died).
    * ``epoch(name)`` only grows, and ``compare_and_set_epoch`` moves it only from the value
      the caller read: of several racing callers, exactly one succeeds.
    * ``take_primary`` is the one way to become primary: atomically, if the epoch is still
      ``expected_epoch`` and no other holder has a live lease (or the caller proved the holder
      dead, ``holder_dead``), the epoch becomes ``expected_epoch + 1`` and the caller holds the
      lease at that epoch for ``ttl`` seconds. Exactly one of racing takers wins.
    * ``renew`` extends a lease only while its holder still holds it at its epoch; once another
      took the role it returns None, and the old holder must stop releasing anything.
      ``renew(lease, 0)`` gives the role up (a clean stop), so a successor need not wait.
    * ``watch`` returns once the record of a name differs from the one the caller saw (or the
      timeout passes): callers find a new address without a backoff grown long.
    * ``reserve`` marks a handover in progress (a live upgrade about to replace the primary):
      while ``reservation`` names another holder, standbys do not take over. It is advisory
      and lapses after its TTL (``ttl`` 0 ends it).
    * Standby reports are advisory (for ``status`` and for the primary to know a standby
      checkpoints), and expire when not refreshed.
    """

    def register(self, record: InstanceRecord) -> None: ...

    def lookup(self, name: str) -> InstanceRecord | None: ...

    def instances(self) -> list[InstanceRecord]: ...

    def epoch(self, name: str) -> int: ...

    def compare_and_set_epoch(self, name: str, expected: int, new: int) -> bool: ...

    def take_primary(
        self, name: str, holder: str, *, expected_epoch: int, ttl: float, holder_dead: bool
    ) -> Lease | None: ...

    def renew(self, lease: Lease, ttl: float) -> Lease | None: ...

    def lease(self, name: str) -> Lease | None: ...

    def reserve(self, name: str, holder: str, ttl: float) -> None: ...

    def reservation(self, name: str) -> str | None: ...

    async def watch(
        self, name: str, seen: InstanceRecord | None, timeout: float
    ) -> InstanceRecord | None: ...

    def report_standby(self, record: StandbyRecord) -> None: ...

    def standbys(self, name: str, *, fresh_within: float) -> list[StandbyRecord]: ...

    def drop_standby(self, name: str, holder: str) -> None: ...

    def close(self) -> None: ...


WATCH_POLL = 0.003  # seconds between two looks of the embedded backend's watch


class EmbeddedRegistry:
    """The registry under ``path`` (``HOME/registry``). Opens lazily.

    Records and reservations, written when an instance starts or hands over, are in an lmdb
    environment there. The primary roles (epochs, leases) and standby reports, written several
    times a second, are files under ``roles/`` and ``standbys/`` that no process locks, so a
    process stopped in the middle of one of those writes blocks nobody (see ``_role_files``).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._env: lmdb.Environment | None = None
        self._dbs: dict[bytes, Any] = {}  # lmdb database handles by name, set by _open()
        self._roles = RoleFiles(path / "roles", floor=self._lmdb_epoch)
        self._reports = ReportFiles(path / "standbys")

    def _open(self) -> lmdb.Environment:
        """The registry's environment, its databases open and any old layout migrated.

        Call it inside ``_guarded``, which turns lmdb and decoding errors into RegistryError.
        """
        if self._env is None:
            where = self.path
            _check_free_space(where)
            env = acquire_env(where, map_size=REGISTRY_MAP_SIZE, max_dbs=4)
            try:
                with env.begin(write=True) as txn:
                    dbs = {name: env.open_db(name, txn=txn) for name in _DATABASES}
                    _migrate_main_db(txn, dbs[RECORDS_DB], dbs[EPOCHS_DB])
            except BaseException:
                release_env(where)
                raise
            self._env, self._dbs = env, dbs
        return self._env

    @contextmanager
    def _txn(self, db: bytes | None = None, *, write: bool = False) -> Iterator[Any]:
        """A transaction inside ``_guarded``, on database ``db`` (None: name a database per
        call, with ``_db``, for a transaction over several)."""
        with self._guarded():
            env = self._open()
            with env.begin(write=write, db=None if db is None else self._dbs[db]) as txn:
                yield txn

    def _db(self, name: bytes) -> Any:
        return self._dbs[name]

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        """Registry access: lmdb, file system and decoding errors become one RegistryError."""
        where = self.path
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
            raise RegistryError(not_writable(self.path.parent, where, _one_line(exc))) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise RegistryError(_no_space(where, _one_line(exc))) from None
            if exc.errno in NOT_WRITABLE:
                raise RegistryError(not_writable(self.path.parent, where, _one_line(exc))) from None
            raise RegistryError(_unusable(where, _one_line(exc))) from None
        except lmdb.Error as exc:
            raise RegistryError(_unusable(where, _one_line(exc))) from None

    def register(self, record: InstanceRecord) -> None:
        key = record.name.encode()  # names are checked above (Home)
        with self._txn(RECORDS_DB, write=True) as txn:
            txn.put(key, msgpack.packb(asdict(record)))

    def lookup(self, name: str) -> InstanceRecord | None:
        key = name.encode()
        if not self.path.exists():
            return None
        with self._txn(RECORDS_DB) as txn:
            raw = txn.get(key)
            return None if raw is None else _decode_record(raw, name)

    def instances(self) -> list[InstanceRecord]:
        if not self.path.exists():
            return []
        with self._txn(RECORDS_DB) as txn:
            return [_decode_record(value, _key_name(key)) for key, value in txn.cursor()]

    def epoch(self, name: str) -> int:
        with self._guarded():
            return self._roles.epoch(name)

    def _lmdb_epoch(self, name: str) -> int:
        """The counter a registry of the previous layout kept in lmdb (0 if none): the floor
        of the epoch files (called inside ``_guarded``)."""
        if not (self.path / "data.mdb").exists():
            return 0
        env = self._open()
        with env.begin(db=self._dbs[EPOCHS_DB]) as txn:
            return _decode_epoch(txn.get(name.encode()), name)

    def compare_and_set_epoch(self, name: str, expected: int, new: int) -> bool:
        if new <= expected:
            raise ValueError(f"an epoch only grows: {expected} -> {new}")
        with self._guarded():
            return self._roles.compare_and_set_epoch(name, expected, new)

    def take_primary(
        self, name: str, holder: str, *, expected_epoch: int, ttl: float, holder_dead: bool
    ) -> Lease | None:
        with self._guarded():
            return self._roles.take_primary(
                name, holder, expected_epoch=expected_epoch, ttl=ttl, holder_dead=holder_dead
            )

    def renew(self, lease: Lease, ttl: float) -> Lease | None:
        with self._guarded():
            return self._roles.renew(lease, ttl)

    def lease(self, name: str) -> Lease | None:
        with self._guarded():
            return self._roles.lease(name)

    def reserve(self, name: str, holder: str, ttl: float) -> None:
        with self._txn(LEASES_DB, write=True) as txn:
            expires = time.time() + ttl
            txn.put(_reserved_key(name), msgpack.packb({"holder": holder, "expires": expires}))

    def reservation(self, name: str) -> str | None:
        if not self.path.exists():
            return None
        with self._txn(LEASES_DB) as txn:
            raw = txn.get(_reserved_key(name))
        if raw is None:
            return None
        try:
            data = msgpack.unpackb(bytes(raw))
            holder, expires = str(data["holder"]), float(data["expires"])
        except Exception:
            return None  # advisory: a reservation that does not decode reserves nothing
        return holder if time.time() < expires else None

    async def watch(
        self, name: str, seen: InstanceRecord | None, timeout: float
    ) -> InstanceRecord | None:
        deadline = time.monotonic() + timeout
        while True:
            record = self.lookup(name)
            if record != seen or time.monotonic() >= deadline:
                return record
            await asyncio.sleep(min(WATCH_POLL, max(0.0, deadline - time.monotonic())))

    def report_standby(self, record: StandbyRecord) -> None:
        with self._guarded():
            self._reports.report(record)

    def standbys(self, name: str, *, fresh_within: float) -> list[StandbyRecord]:
        with self._guarded():
            return self._reports.fresh(name, within=fresh_within)

    def drop_standby(self, name: str, holder: str) -> None:
        with self._guarded():
            self._reports.drop(name, holder)

    def close(self) -> None:
        if self._env is not None:
            self._env, self._dbs = None, {}
            release_env(self.path)


# The registry keeps records, epoch counters, leases and standbys in lmdb named databases, so
# that no name can reach another's keys. The names of the databases (keys of lmdb's main
# database) start with ':', which no valid instance name does.
RECORDS_DB = b":records"
EPOCHS_DB = b":epochs"
LEASES_DB = b":leases"  # name + b"/reserved" -> a handover's reservation
# Earlier layouts kept the epoch counters, the leases and the standby reports here too; the
# counters are still read, as the floor of the epoch files (``_lmdb_epoch``).
STANDBYS_DB = b":standbys"
_DATABASES = (RECORDS_DB, EPOCHS_DB, LEASES_DB, STANDBYS_DB)
_OLD_EPOCH_PREFIX = b"epoch:"


def _migrate_main_db(txn: lmdb.Transaction, records: Any, epochs: Any) -> None:
    """Move a registry of the previous layout (everything in the main database) into the two.

    The old layout kept records under the bare name and epoch counters under ``epoch:NAME``, so
    a record named ``epoch:foo`` could overwrite foo's counter; such a counter is rebuilt from
    foo's record (its epoch is the newest foo's log can hold). Entries of names that are no
    longer valid are dropped: they can be neither looked up nor started again.
    """
    old = [(bytes(k), bytes(v)) for k, v in txn.cursor() if k not in _DATABASES]
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


_Damaged = Damaged


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


def _reserved_key(name: str) -> bytes:
    return name.encode() + b"/reserved"  # "/" is in no instance name


# errno values that mean "this user may not write there" (not a full disk, not damage)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def not_writable(home: Path, path: object, detail: str) -> str:
    """The one-line refusal for a home (or a part of it) that this user cannot write."""
    return (
        f"cannot write {path} ({detail}): the home {home} must be writable by this user (an "
        "instance keeps its registry entry and its log there); fix its permissions, or choose "
        "another with --home or $IMMORTALS_HOME"
    )
