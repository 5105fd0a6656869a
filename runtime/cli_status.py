"""``immortals status`` and ``immortals stop NAME``: what runs under a home, and a clean stop.

``status`` lists every instance the home knows of (registered, or with a log under ``logs/``):
whether a process runs it now, and where, and how far its log goes. Whether an instance runs
is decided by its log's writer lock (``Home.is_running``), never by the registry alone: a
SIGKILLed process leaves its record behind.

``stop`` sends SIGTERM to the process the registry names, as a user would with ``kill``, and
waits until it has gone: ``immortals run`` then drains (everything executed becomes durable and
released), closes its log and exits 0. The signal goes only to a process that holds the
instance's writer lock right now, so a stale record never gets a reused pid signalled.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from logformat import LogError, LogReader

from ._cli_text import format_table, human_size
from ._errors import InstanceError
from ._history_check import read_result
from ._home import Home, InstanceRecord, StandbyRecord, check_name, process_alive
from ._standby import REPORT_FRESH, local_pid


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    status = subparsers.add_parser("status", help="every instance of the home: running or not")
    status.add_argument("--json", action="store_true", help="one JSON object (default: a table)")
    status.set_defaults(handler=status_command)

    stop = subparsers.add_parser("stop", help="stop a running instance cleanly (SIGTERM)")
    stop.add_argument("name", metavar="NAME", help="the instance's name")
    stop.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="give up waiting after S seconds (default: %(default)g)",
    )
    stop.set_defaults(handler=stop_command)


# -- status ---------------------------------------------------------------------------------------


def gather_status(home: Home) -> list[dict[str, Any]]:
    """One plain dict per instance of ``home``, by name (also the ``--json`` form).

    ``pid`` and ``address`` are those of the running process, None when none runs. ``epoch``
    is that of the newest start the registry knows. The log's facts are None when there is no
    log (``--durability none``) or it cannot be read (``problem`` then says why).
    """
    records = {record.name: record for record in home.instances()}
    return [_instance_status(home, name, records.get(name)) for name in home.known_names()]


def _instance_status(home: Home, name: str, record: InstanceRecord | None) -> dict[str, Any]:
    running = home.is_running(name, record)
    log_dir = home.log_dir(name)
    facts: dict[str, Any] = {
        "name": name,
        "running": running,
        "pid": record.pid if running and record else None,
        "address": record.address if running and record else None,
        "epoch": record.epoch if record else None,
        "app": record.app if record else None,
        "log_dir": str(log_dir) if log_dir.is_dir() else None,
        "last_lsn": None,
        "last_checkpoint": None,
        "log_bytes": None,
        "replay_check": None,
        "standbys": [],
        "checkpoint_by": None,
        "problem": None,
    }
    if log_dir.is_dir():
        facts["log_bytes"] = _disk_usage(log_dir)
        facts["replay_check"] = read_result(log_dir)
        try:
            with LogReader(log_dir) as reader:
                facts["last_lsn"] = reader.last_lsn
                checkpoints = reader.checkpoints()
                facts["last_checkpoint"] = checkpoints[-1].lsn if checkpoints else None
                facts["app"] = facts["app"] or reader.meta.app
        except LogError as exc:
            facts["problem"] = " ".join(str(exc).split())
    facts["standbys"] = _standbys(home, name, facts["last_lsn"])
    if facts["last_checkpoint"] is not None:
        writers = [s for s in facts["standbys"] if s["checkpoint_lsn"] == facts["last_checkpoint"]]
        facts["checkpoint_by"] = f"standby {writers[0]['pid']}" if writers else "primary"
    return facts


def _standbys(home: Home, name: str, last_lsn: int | None) -> list[dict[str, Any]]:
    """The standbys of ``name`` that reported lately: how far each applied the log, and its
    lag in steps (against the log's end now) and in ms (how long the oldest step it had not
    applied had been durable when it last applied some)."""
    found = []
    for standby in home.registry.standbys(name, fresh_within=REPORT_FRESH):
        behind = None if last_lsn is None else max(0, last_lsn - standby.applied_lsn)
        found.append(
            {
                "holder": standby.holder,
                "pid": standby.pid,
                "applied_lsn": standby.applied_lsn,
                "lag_steps": behind,
                "lag_ms": round(standby.lag_ms, 1),
                "checkpoint_lsn": standby.checkpoint_lsn or None,
                "reported": standby.seen,
            }
        )
    return sorted(found, key=lambda s: s["pid"])


def _disk_usage(directory: Path) -> int:
    """Bytes of every file below ``directory`` (segments, checkpoints, index)."""
    total = 0
    for root, _dirs, files in os.walk(directory):
        for file in files:
            try:
                total += os.stat(os.path.join(root, file)).st_size
            except OSError:
                continue  # removed while we looked (a trim, a new segment)
    return total


def status_rows(instances: list[dict[str, Any]]) -> list[list[str]]:
    """The text form of :func:`gather_status`, one row per instance (``-``: nothing there)."""

    def cell(value: Any) -> str:
        return "-" if value is None else str(value)

    rows = []
    for i in instances:
        checkpoint = cell(i["last_checkpoint"])
        if i["checkpoint_by"] not in (None, "primary"):
            checkpoint += f" ({i['checkpoint_by']})"
        rows.append(
            [
                i["name"],
                "running" if i["running"] else "down",
                cell(i["pid"]),
                cell(i["address"]),
                cell(i["epoch"]),
                cell(i["last_lsn"]),
                checkpoint,
                "-" if i["log_bytes"] is None else human_size(i["log_bytes"]),
                _check_cell(i["replay_check"]),
            ]
        )
        for standby in i["standbys"]:
            lag = f"lag {cell(standby['lag_steps'])} steps, {standby['lag_ms']:g} ms"
            rows.append(
                [
                    f"  {i['name']}",
                    "standby",
                    str(standby["pid"]),
                    "-",
                    "-",
                    str(standby["applied_lsn"]),
                    cell(standby["checkpoint_lsn"]),
                    "-",
                    lag,
                ]
            )
    return rows


def _check_cell(check: dict[str, Any] | None) -> str:
    """The background replay check, in a word: up to where it passed, or where it failed."""
    if check is None:
        return "-"
    if check.get("ok"):
        return f"ok to {check.get('last')}"
    return f"DIVERGES at {check.get('lsn')}"


_HEADERS = ["NAME", "STATE", "PID", "ADDRESS", "EPOCH", "LAST LSN", "CHECKPOINT", "LOG", "REPLAY"]


def status_command(args: argparse.Namespace) -> int:
    home = Home(Path(args.home))
    try:
        instances = gather_status(home)
    finally:
        home.close()
    if args.json:
        print(json.dumps({"home": str(home.path), "instances": instances}, indent=2))
    elif not instances:
        print(
            f"no instances under {home.path}; start one with "
            f"`immortals run APP --name NAME --home {home.path}`"
        )
    else:
        print(format_table(_HEADERS, status_rows(instances)))
        for i in instances:
            if i["problem"]:
                print(f"{i['name']}: its log cannot be read: {i['problem']}")
    return 0


# -- stop -----------------------------------------------------------------------------------------


def stop_command(args: argparse.Namespace) -> int:
    name = check_name(args.name)
    home = Home(Path(args.home))
    try:
        record = home.lookup(name)
        if record is None or not home.is_running(name, record):
            raise InstanceError(_not_running(home, name, known=name in home.known_names()))
        # Its standbys first: stopping the primary alone would be a failover, not a stop.
        standbys = [
            s for s in home.registry.standbys(name, fresh_within=REPORT_FRESH) if _is_standby(s)
        ]
        for standby in standbys:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(standby.pid, signal.SIGTERM)
        deadline = time.monotonic() + args.timeout
        while any(process_alive(s.pid) for s in standbys) and time.monotonic() < deadline:
            time.sleep(0.02)
        _signal(record)
        _wait_gone(home, record, max(0.0, deadline - time.monotonic()))
    finally:
        home.close()
    count = len(standbys)
    also = "" if not count else " with its standby" if count == 1 else f" with its {count} standbys"
    print(f"{name} (pid {record.pid}) stopped cleanly{also}{_log_end(home, name)}")
    return 0


def _is_standby(report: StandbyRecord) -> bool:
    """Whether a report's pid is still that standby on this host (never signal a reused pid)."""
    if local_pid(report.holder) != report.pid or not process_alive(report.pid):
        return False
    try:
        command = Path(f"/proc/{report.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: the fresh report and the live pid must do
    return b"--standby" in command and report.name.encode() in command


def _not_running(home: Home, name: str, *, known: bool) -> str:
    if known:
        return f"{name!r} is not running under {home.path}: there is nothing to stop"
    return (
        f"no instance named {name!r} under {home.path}: there is nothing to stop "
        f"(`immortals status --home {home.path}` lists the instances there)"
    )


def _signal(record: InstanceRecord) -> None:
    try:
        os.kill(record.pid, signal.SIGTERM)
    except ProcessLookupError:
        raise InstanceError(
            f"{record.name!r} is not running: its process {record.pid} has just exited"
        ) from None
    except PermissionError:
        raise InstanceError(
            f"cannot signal {record.name!r} (pid {record.pid}): its process belongs to another "
            "user; run `immortals stop` as that user"
        ) from None


def _wait_gone(home: Home, record: InstanceRecord, timeout: float) -> None:
    """Until the process has exited and its log's writer lock is free (both: the lock is
    released as the log closes, just before the process exits)."""
    deadline = time.monotonic() + timeout
    while process_alive(record.pid) or home.is_running(record.name, record):
        if time.monotonic() > deadline:
            raise InstanceError(
                f"{record.name!r} (pid {record.pid}) did not stop within {timeout:g} s; it may "
                f"still be draining (wait longer with --timeout), or `kill -9 {record.pid}` "
                "stops it at once: it recovers from its log at its next start"
            )
        time.sleep(0.02)


def _log_end(home: Home, name: str) -> str:
    """Where its log ends, and any damage at the end of it (a clean stop leaves none)."""
    log_dir = home.log_dir(name)
    if not log_dir.is_dir():
        return ""
    try:
        with LogReader(log_dir) as reader:
            damage = reader.damage
            end = f"; its log ends at LSN {reader.last_lsn}"
    except LogError as exc:
        print(f"immortals: warning: its log cannot be read: {exc}", file=sys.stderr)
        return ""
    if damage:
        print(
            f"immortals: warning: its log shows damage at the end: run `immortals log verify "
            f"{name} --home {home.path}`",
            file=sys.stderr,
        )
    return end
