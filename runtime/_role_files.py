"""The embedded registry's primary roles and standby reports, kept in files nobody locks.

lmdb lets one writer in at a time through a mutex in shared memory. A process stopped inside a
write transaction (SIGSTOP, a debugger, a paused VM) keeps that mutex until it dies, and every
other writer waits for it. A primary renews its lease every third of its TTL and each standby
reports four times a second, so a stop landing inside one of those writes would freeze every
takeover under the home, at the very moment one is needed (the SIGSTOP tests found the log's
own index doing this). The role and the reports therefore use only single-file operations the
kernel makes atomic and that no process holds while it runs:

* **The epoch** of a name moves from E by creating the file ``after-E`` with ``link(2)``, which
  fails if the name exists: of racing movers exactly one wins. The file, whole and fsynced
  before it is linked, says the new epoch and, for a takeover, the holder and its first lease.
  The current epoch is what the ``after-*`` file with the highest E says: each one is created
  only by a mover that read E as current, so they form a chain whose last link is the newest.
  They are never removed, since a mover stopped between reading E and linking could otherwise
  win a link that is long gone (there is one per start or takeover: a few bytes each).
* **A lease** at epoch E is renewed by writing ``lease-E`` anew (a temporary file renamed over
  it). A renewal is checked against the epoch before and after it is written; one that
  overlaps a takeover may still look successful to its holder for one TTL, which is why the log
  fence (FORMAT.md 8.1), not the lease, is what keeps an old primary from releasing anything.
  Renewals are not fsynced: a lease outlives no crash of its machine, whose holder died too.
* **A standby's report** is a file of its own under ``standbys/NAME/``, replaced the same way.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from urllib.parse import quote

import msgpack

from logformat import fsync_dir, replace_file

from ._registry_types import Damaged, Lease, StandbyRecord

TICKET = "after-"
LEASE = "lease-"

# The epoch of a name before any ticket: a registry of an earlier layout kept the counter in
# lmdb, and this reads it (0 for a new name).
Floor = Callable[[str], int]


class RoleFiles:
    """Epochs and leases, one folder per instance name under ``path``."""

    def __init__(self, path: Path, floor: Floor) -> None:
        self.path = path
        self._floor = floor

    def epoch(self, name: str) -> int:
        return self._current(name)[0]

    def lease(self, name: str) -> Lease | None:
        epoch, first = self._current(name)
        if first is None:
            return None
        renewed = self._read_lease(name, epoch)
        return renewed if renewed is not None else first

    def compare_and_set_epoch(self, name: str, expected: int, new: int) -> bool:
        if new <= expected:
            raise ValueError(f"an epoch only grows: {expected} -> {new}")
        if self.epoch(name) != expected:
            return False
        return self._link_ticket(name, expected, {"epoch": new})

    def take_primary(
        self, name: str, holder: str, *, expected_epoch: int, ttl: float, holder_dead: bool
    ) -> Lease | None:
        now = time.time()
        if self.epoch(name) != expected_epoch:
            return None
        held = self.lease(name)
        if held is not None and held.holder != holder and held.live(now) and not holder_dead:
            return None
        lease = Lease(name, holder, expected_epoch + 1, now + ttl)
        if not self._link_ticket(name, expected_epoch, asdict(lease)):
            return None
        return lease

    def renew(self, lease: Lease, ttl: float) -> Lease | None:
        held = self.lease(lease.name)
        if held is None or (held.holder, held.epoch) != (lease.holder, lease.epoch):
            return None
        if self.epoch(lease.name) != lease.epoch:
            return None
        renewed = Lease(lease.name, lease.holder, lease.epoch, time.time() + ttl)
        folder = self._folder(lease.name)
        replace_file(
            folder / f"{LEASE}{lease.epoch}",
            msgpack.packb(asdict(renewed)),
            tmp=_tmp(folder, f"{LEASE}{lease.epoch}"),
            sync=False,
        )
        if self.epoch(lease.name) != lease.epoch:
            return None  # taken while it was written: the role is gone
        return renewed

    # -- the files ------------------------------------------------------------------------------

    def _folder(self, name: str) -> Path:
        return self.path / name  # names are checked above (Home): a plain folder name

    def _current(self, name: str) -> tuple[int, Lease | None]:
        """The current epoch, and the lease its ticket began with (None: no holder yet)."""
        try:
            names = os.listdir(self._folder(name))
        except FileNotFoundError:
            return self._floor(name), None
        tickets = [int(n[len(TICKET) :]) for n in names if _is_numbered(n, TICKET)]
        if not tickets:
            return self._floor(name), None
        newest = self._folder(name) / f"{TICKET}{max(tickets)}"
        data = self._decode(newest.read_bytes(), f"the epoch ticket {newest.name} of {name!r}")
        epoch = data.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch <= max(tickets):
            raise Damaged(f"the epoch ticket {newest.name} of {name!r} names {epoch!r}")
        if "holder" not in data:
            return epoch, None  # moved without taking the role (a plain start's epoch)
        return epoch, self._to_lease(data, name, newest.name)

    def _read_lease(self, name: str, epoch: int) -> Lease | None:
        try:
            raw = (self._folder(name) / f"{LEASE}{epoch}").read_bytes()
        except FileNotFoundError:
            return None
        try:
            return self._to_lease(self._decode(raw, ""), name, "")
        except Damaged:
            # Renewals are not fsynced: after a crash of the machine the file may be empty.
            # Its holder died with the machine, so the lease is taken as lapsed.
            return Lease(name, "", epoch, 0.0)

    def _link_ticket(self, name: str, expected: int, data: dict[str, object]) -> bool:
        """Create ``after-EXPECTED`` holding ``data``, whole and durable, unless it exists."""
        folder = self._folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = _tmp(folder, f"{TICKET}{expected}")
        with open(tmp, "wb") as f:
            f.write(msgpack.packb(data))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, folder / f"{TICKET}{expected}")
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        fsync_dir(folder)
        return True

    def _decode(self, raw: bytes, what: str) -> dict[str, object]:
        try:
            data = msgpack.unpackb(raw)
        except Exception as exc:
            raise Damaged(f"{what} does not decode ({type(exc).__name__})") from None
        if not isinstance(data, dict):
            raise Damaged(f"{what} is a {type(data).__name__}, not a map")
        return data

    def _to_lease(self, data: dict[str, object], name: str, what: str) -> Lease:
        holder, epoch, expires = data.get("holder"), data.get("epoch"), data.get("expires")
        if (
            not isinstance(holder, str)
            or not isinstance(epoch, int)
            or not isinstance(expires, (int, float))
        ):
            raise Damaged(f"the lease in {what or 'a lease file'} of {name!r} is not one")
        return Lease(name, holder, epoch, float(expires))


class ReportFiles:
    """Standby reports: ``path/NAME/HOLDER``, one file per standby, replaced at each report."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def report(self, record: StandbyRecord) -> None:
        folder = self.path / record.name
        folder.mkdir(parents=True, exist_ok=True)
        file = quote(record.holder, safe="@.-_")
        replace_file(
            folder / file, msgpack.packb(asdict(record)), tmp=_tmp(folder, file), sync=False
        )

    def fresh(self, name: str, *, within: float) -> list[StandbyRecord]:
        folder = self.path / name
        try:
            files = sorted(n for n in os.listdir(folder) if not n.startswith("."))
        except FileNotFoundError:
            return []
        oldest = time.time() - within
        found: list[StandbyRecord] = []
        for file in files:
            try:
                record = _decode_report((folder / file).read_bytes())
            except FileNotFoundError:
                continue  # dropped meanwhile
            if record is not None and record.name == name and record.seen >= oldest:
                found.append(record)
        return found

    def drop(self, name: str, holder: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path / name / quote(holder, safe="@.-_"))


def _decode_report(raw: bytes) -> StandbyRecord | None:
    """A standby's report; None if it does not decode (reports are advisory)."""
    try:
        data = msgpack.unpackb(raw)
        return StandbyRecord(**{f: data[f] for f in StandbyRecord.__dataclass_fields__})
    except Exception:
        return None


def _is_numbered(file: str, prefix: str) -> bool:
    return file.startswith(prefix) and file[len(prefix) :].isdigit()


def _tmp(folder: Path, final: str) -> Path:
    """A temporary name beside ``final``, unique to this process and thread (hidden: readers
    skip names that start with a dot)."""
    return folder / f".{final}.{os.getpid()}.{threading.get_ident()}.tmp"
