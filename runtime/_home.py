"""The home directory (``--home``, default ``./.immortals``): registry, logs, cluster secret.

Layout::

    HOME/registry/     the embedded registry (``_registry.EmbeddedRegistry``, lmdb): records,
                       epochs, primary leases and standby reports, one database each
    HOME/logs/NAME/    one log directory per instance (logformat)
    HOME/secret        32 random bytes shared by the instances of this home (mode 0600)

The registry is an interface (``_registry.Registry``); the embedded lmdb backend is the default,
nothing to start, and a distributed one (etcd) can stand behind it. Whether an instance is alive
is decided by its log's writer lock, not by what the registry says.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from contextlib import suppress
from pathlib import Path

from logformat import NotALogError, read_meta, writer_is_live

from ._errors import InstanceError, InstanceNameError, SecretError
from ._registry import (
    EPOCHS_DB,
    NOT_WRITABLE,
    RECORDS_DB,
    EmbeddedRegistry,
    InstanceRecord,
    Lease,
    Registry,
    StandbyRecord,
    not_writable,
)
from ._schema import NAME_RULE, is_valid_name

__all__ = [  # the registry's names, for the callers that import them from the home
    "EPOCHS_DB",
    "RECORDS_DB",
    "InstanceRecord",
    "Lease",
    "Registry",
    "StandbyRecord",
    "not_writable",
]

DEFAULT_HOME = ".immortals"


def check_name(name: str) -> str:
    """``name`` itself if valid, else InstanceNameError stating the rule in one line."""
    if not is_valid_name(name):
        raise InstanceNameError(
            f"bad instance name {name!r}: a name is {NAME_RULE} (e.g. 'server', 'c1-calls-server-5')"
        )
    return name


class Home:
    """One home directory. Cheap to create; opens lmdb lazily."""

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_HOME) -> None:
        self.path = Path(path)
        self.registry: Registry = EmbeddedRegistry(self.path / "registry")

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
            if exc.errno in NOT_WRITABLE:
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

    def require(self, name: str) -> InstanceRecord:
        record = self.lookup(name)
        if record is None:
            raise InstanceError(
                f"no instance named {name!r} under {self.path}; start it with "
                f"`immortals run APP --name {name} --home {self.path}`"
            )
        return record

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

    # The registry's operations most callers need, by name (see ``Registry`` for the rest).

    def register(self, record: InstanceRecord) -> None:
        check_name(record.name)
        self.registry.register(record)

    def lookup(self, name: str) -> InstanceRecord | None:
        return self.registry.lookup(check_name(name))

    def instances(self) -> list[InstanceRecord]:
        return self.registry.instances()

    def next_epoch(self, name: str) -> int:
        """Allocate the epoch for a new start of ``name`` (one more than any before)."""
        name = check_name(name)
        while True:
            current = self.registry.epoch(name)
            if self.registry.compare_and_set_epoch(name, current, current + 1):
                return current + 1

    def close(self) -> None:
        self.registry.close()


SECRET_BYTES = 32


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
