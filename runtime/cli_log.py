"""``immortals log info|dump|verify|trim PATH``: look inside an instance's log.

PATH is a log directory or an instance name under ``--home``. Data gathering (``gather_info``,
``json_value``) is kept apart from printing so tests and other tools can use it.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from logformat import (
    LogReader,
    NotALogError,
    VerifyReport,
    read_meta,
    trim_log,
    verify_log,
    writer_is_live,
)

from ._home import Home


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    log = subparsers.add_parser("log", help="inspect the log of an instance (name or directory)")
    commands = log.add_subparsers(dest="log_command", metavar="SUBCOMMAND", required=True)

    info = commands.add_parser("info", help="what the log holds, how big, how compressed")
    info.add_argument("path", metavar="PATH")
    info.add_argument("--json", action="store_true", help="one JSON object")
    info.set_defaults(handler=info_command)

    dump = commands.add_parser("dump", help="one record a line")
    dump.add_argument("path", metavar="PATH")
    dump.add_argument("--from", dest="from_lsn", type=_lsn, metavar="LSN")
    dump.add_argument("--to", dest="to_lsn", type=_lsn, metavar="LSN")
    dump.add_argument("--json", action="store_true", help="one JSON object per record")
    dump.add_argument("--follow", action="store_true", help="keep printing records as they come")
    dump.set_defaults(handler=dump_command)

    verify = commands.add_parser("verify", help="check every frame; exit 1 if anything is damaged")
    verify.add_argument("path", metavar="PATH")
    verify.set_defaults(handler=verify_command)

    trim = commands.add_parser("trim", help="drop history older than a point")
    trim.add_argument("path", metavar="PATH")
    point = trim.add_mutually_exclusive_group(required=True)
    point.add_argument("--below", type=_lsn, metavar="LSN", help="drop segments wholly below LSN")
    point.add_argument(
        "--keep-checkpoints",
        type=_lsn,
        metavar="N",
        help="keep the newest N checkpoints and the history after the oldest of them",
    )
    trim.add_argument("--force", action="store_true", help="trim even past the last checkpoint")
    trim.set_defaults(handler=trim_command)


def _lsn(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"an LSN is a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"LSNs start at 1, got {value}")
    return value


def resolve_log(path: str, home: str) -> Path:
    """A log directory from PATH: itself, or the log of the instance named PATH under home."""
    direct = Path(path)
    if direct.is_dir():
        return direct
    named = Home(home).log_dir(path)
    if "/" not in path and named.is_dir():
        return named
    raise NotALogError(
        f"no log at {path!r}: not a directory, and no instance named {path!r} under {home}"
    )


# -- info ---------------------------------------------------------------------------------------


def gather_info(log_dir: Path) -> dict[str, Any]:
    """Everything ``log info`` shows, as plain data."""
    meta = read_meta(log_dir)
    with LogReader(log_dir) as reader:
        stats = reader.stats()
        checkpoints = reader.checkpoints()
        damage = reader.damage
    segments = sorted(log_dir.glob("*.seg"))
    return {
        "path": str(log_dir),
        "instance": meta.instance,
        "app": meta.app,
        "code_version": meta.code_version,
        "versions": [
            {"from_lsn": v.from_lsn, "app": v.app, "code_version": v.code_version}
            for v in meta.versions
        ],
        "log_id": meta.log_id,
        "created": _iso(meta.created_ns),
        "first_lsn": stats.first_lsn,
        "last_lsn": stats.last_lsn,
        "records": stats.records,
        "first_time": _iso(stats.first_wall_ns),
        "last_time": _iso(stats.last_wall_ns),
        "frames": stats.frames,
        "segments": [{"name": s.name, "bytes": s.stat().st_size} for s in segments],
        "stored_bytes": stats.stored_bytes,
        "raw_bytes": stats.raw_bytes,
        "compression_ratio": round(stats.compression_ratio, 2),
        "checkpoints": [
            {"lsn": c.lsn, "bytes": c.stored_size, "state_bytes": c.raw_size, "pickled": c.pickled}
            for c in checkpoints
        ],
        "live_writer": writer_is_live(log_dir),
        "damage_at_end": [
            f"{d.kind} in {f.name} at byte {d.offset}: {d.reason}" for f, d in damage
        ],
    }


def info_command(args: argparse.Namespace) -> int:
    info = gather_info(resolve_log(args.path, args.home))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    rows = [
        ("instance", info["instance"]),
        ("app", info["app"]),
        ("code version", info["code_version"]),
        ("log id", info["log_id"]),
        ("created", info["created"] or "-"),
        ("LSNs", f"{info['first_lsn']}..{info['last_lsn']} ({info['records']} records)"),
        ("time", f"{info['first_time'] or '-'} .. {info['last_time'] or '-'}"),
        ("frames", str(info["frames"])),
        (
            "segments",
            f"{len(info['segments'])} ({_size(sum(s['bytes'] for s in info['segments']))})",
        ),
        ("stored", _size(info["stored_bytes"])),
        ("raw", _size(info["raw_bytes"])),
        ("compression", f"{info['compression_ratio']:.2f}x"),
        (
            "checkpoints",
            ", ".join(
                f"LSN {c['lsn']} ({_size(c['bytes'])}{', pickled' if c['pickled'] else ''})"
                for c in info["checkpoints"]
            )
            or "none",
        ),
        ("writer", "live (an instance is running)" if info["live_writer"] else "none"),
    ]
    if len(info["versions"]) > 1:
        rows.append(
            (
                "versions",
                "; ".join(
                    f"from LSN {v['from_lsn']}: {v['code_version']}" for v in info["versions"]
                ),
            )
        )
    for problem in info["damage_at_end"]:
        rows.append(("damage", problem))
    _print_rows(f"log of {info['instance']} ({info['path']})", rows)
    return 0


def _print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, show_header=False, title_justify="left")
        table.add_column(style="bold cyan")
        table.add_column()
        for key, value in rows:
            table.add_row(key, value)
        Console().print(table)
        return
    width = max(len(k) for k, _ in rows)
    print(title)
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}")


# -- dump ---------------------------------------------------------------------------------------


def json_value(value: Any) -> Any:
    """A stored value made JSON-friendly, keeping as much meaning as JSON allows."""
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, set | frozenset):
        items = [json_value(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    return value


def dump_command(args: argparse.Namespace) -> int:
    if args.from_lsn and args.to_lsn and args.from_lsn > args.to_lsn:
        raise NotALogError(f"--from {args.from_lsn} is after --to {args.to_lsn}") from None
    log_dir = resolve_log(args.path, args.home)
    colour = sys.stdout.isatty()
    with LogReader(log_dir) as reader:
        records = (
            reader.follow(args.from_lsn)
            if args.follow
            else reader.records(args.from_lsn, args.to_lsn)
        )
        for record in records:
            if args.to_lsn is not None and record.lsn > args.to_lsn:
                break
            line = _dump_line(
                record.lsn, record.epoch, record.wall_ns, record.value, as_json=args.json
            )
            print(_colourise(line, as_json=args.json) if colour else line, flush=args.follow)
    return 0


def _dump_line(lsn: int, epoch: int, wall_ns: int, value: Any, *, as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {
                "lsn": lsn,
                "epoch": epoch,
                "wall_ns": wall_ns,
                "time": _iso(wall_ns),
                "value": json_value(value),
            },
            separators=(",", ":"),
        )
    return f"{lsn:>8}  {_iso(wall_ns)}  e{epoch}  {value!r}"


def _colourise(line: str, *, as_json: bool) -> str:
    from pygments import highlight
    from pygments.formatters import TerminalFormatter
    from pygments.lexers import JsonLexer, PythonLexer

    lexer = JsonLexer() if as_json else PythonLexer()
    coloured: str = highlight(line, lexer, TerminalFormatter())
    return coloured.rstrip("\n")


# -- verify -------------------------------------------------------------------------------------


def verify_command(args: argparse.Namespace) -> int:
    log_dir = resolve_log(args.path, args.home)
    report = verify_log(log_dir)
    print(_verify_summary(report))
    if report.ok:
        return 0
    for damaged in report.damaged:
        print(f"  {damaged.describe()}")
    for problem in report.bad_checkpoints:
        print(f"  {problem}")
    print(_verify_advice(report))
    return 1


def _verify_summary(report: VerifyReport) -> str:
    verdict = "whole" if report.ok else "DAMAGED"
    live = "; a live writer is appending" if report.live_writer else ""
    return (
        f"{report.path}: {verdict}: {report.records} records (LSN {report.first_lsn}.."
        f"{report.last_lsn}) in {report.frames} frames, {report.segments} segments, "
        f"{report.checkpoints} checkpoints checked{live}"
    )


def _verify_advice(report: VerifyReport) -> str:
    kinds = {d.damage.kind for d in report.damaged}
    advice = []
    if "torn-tail" in kinds:
        advice.append(
            "a torn tail is a write cut short by a crash; the next start of the instance cuts it "
            "back to the last whole frame (nothing acknowledged is lost)"
        )
    if kinds - {"torn-tail"}:
        advice.append(
            "damage in the middle cannot be repaired from this copy: restore the segment from a "
            "backup or replica; records after it cannot be read until then"
        )
    if report.bad_checkpoints:
        advice.append("a damaged checkpoint is skipped at recovery; an older one is used instead")
    return "what to do: " + "; ".join(advice)


# -- trim ---------------------------------------------------------------------------------------


def trim_command(args: argparse.Namespace) -> int:
    log_dir = resolve_log(args.path, args.home)
    below = args.below
    if below is None:
        with LogReader(log_dir) as reader:
            checkpoints = reader.checkpoints()
        if len(checkpoints) < args.keep_checkpoints:
            print(
                f"nothing to trim: {len(checkpoints)} checkpoints, keeping {args.keep_checkpoints}"
            )
            return 0
        below = checkpoints[-args.keep_checkpoints].lsn + 1
    report = trim_log(log_dir, below, require_checkpoint=not args.force)
    if not report.segments_removed:
        print(f"nothing to trim below LSN {below}: no segment lies wholly below it")
        return 0
    print(
        f"trimmed {len(report.segments_removed)} segments and "
        f"{len(report.checkpoints_removed)} checkpoints; the log now starts at LSN {report.first_lsn}"
    )
    for path in report.segments_removed + report.checkpoints_removed:
        print(f"  removed {path.name}")
    return 0


# -- helpers ------------------------------------------------------------------------------------


def _iso(ns: int | None) -> str | None:
    if not ns:
        return None
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).isoformat(timespec="milliseconds")


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
