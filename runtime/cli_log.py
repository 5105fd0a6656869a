"""``immortals log info|dump|verify|trim PATH``: look inside an instance's log, check it, trim it.

PATH is a log directory or the name of an instance under ``--home``. Each command gathers plain
data first (``gather_info``, ``format_record``, ``verify_lines``, ``trim_lines``) and prints it
second, so tests and other tools can use what a command knows without parsing its output.

Damage is never hidden: ``dump`` stops with an error where the readable log ends at damage,
``info`` shows damage found at the end of the sound part, and ``verify`` reads every byte.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from logformat import (
    CheckpointError,
    CorruptLogError,
    Damage,
    DamagedRange,
    LogLockedError,
    LogReader,
    PickleRefusedError,
    Record,
    TrimRefusedError,
    TrimReport,
    VerifyReport,
    code_path,
    read_meta,
    trim_log,
    verify_log,
    writer_is_live,
)

from ._cli_text import (
    Row,
    colourise,
    human_size,
    iso_time,
    json_value,
    plural,
    print_rows,
    working,
)
from ._errors import ImmortalsError
from ._home import resolve_log

_LIST_LIMIT = 8  # segments or checkpoints listed in text form; --json lists them all


class LogCommandError(ImmortalsError):
    """Arguments that each parse but do not fit together (``--from 9 --to 3``): exit 2."""


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    log = subparsers.add_parser("log", help="inspect the log of an instance (name or directory)")
    commands = log.add_subparsers(dest="log_command", metavar="SUBCOMMAND", required=True)
    path_help = "a log directory, or the name of an instance under --home"

    info = commands.add_parser("info", help="what the log holds, how big, how compressed")
    info.add_argument("path", metavar="PATH", help=path_help)
    info.add_argument("--json", action="store_true", help="one JSON object")
    info.set_defaults(handler=info_command)

    dump = commands.add_parser("dump", help="one record a line")
    dump.add_argument("path", metavar="PATH", help=path_help)
    dump.add_argument("--from", dest="from_lsn", type=lsn_argument, metavar="LSN", help="first LSN")
    dump.add_argument("--to", dest="to_lsn", type=lsn_argument, metavar="LSN", help="last LSN")
    dump.add_argument("--json", action="store_true", help="one JSON object per record")
    dump.add_argument(
        "--follow", action="store_true", help="keep printing records as they are written"
    )
    dump.set_defaults(handler=dump_command)

    verify = commands.add_parser("verify", help="check every frame; exit 1 if anything is damaged")
    verify.add_argument("path", metavar="PATH", help=path_help)
    verify.set_defaults(handler=verify_command)

    trim = commands.add_parser("trim", help="drop old history (whole segments) below a point")
    trim.add_argument("path", metavar="PATH", help=path_help)
    point = trim.add_mutually_exclusive_group(required=True)
    point.add_argument(
        "--below", type=lsn_argument, metavar="LSN", help="drop segments wholly below LSN"
    )
    point.add_argument(
        "--keep-checkpoints",
        type=_count,
        metavar="N",
        help="keep the newest N checkpoints and the history after the oldest of them",
    )
    trim.add_argument(
        "--force", action="store_true", help="trim even if no checkpoint is left to recover from"
    )
    trim.set_defaults(handler=trim_command)


def lsn_argument(text: str) -> int:
    """An LSN on the command line (1 or more); an argparse error line otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"an LSN is a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"LSNs start at 1, got {value}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"keep at least 1 checkpoint, got {value}")
    return value


# -- info -------------------------------------------------------------------------------------------


def gather_info(log_dir: Path) -> dict[str, Any]:
    """Everything ``log info`` shows, as plain data (this is also the ``--json`` object)."""
    live = writer_is_live(log_dir)
    with LogReader(log_dir) as reader:
        meta = reader.meta
        stats = reader.stats()
        checkpoints = reader.checkpoints()
        damage = reader.damage
    return {
        "path": str(log_dir),
        "instance": meta.instance,
        "app": meta.app,
        "code_version": meta.code_version,
        "versions": [
            {
                "from_lsn": v.from_lsn,
                "app": v.app,
                "code_version": v.code_version,
                "code_kept": code_path(log_dir, v.code_version).is_file(),
            }
            for v in meta.versions
        ],
        "log_id": meta.log_id,
        "created": iso_time(meta.created_ns),
        "first_lsn": stats.first_lsn,
        "last_lsn": stats.last_lsn,
        "records": stats.records,
        "first_time": iso_time(stats.first_wall_ns),
        "last_time": iso_time(stats.last_wall_ns),
        "frames": stats.frames,
        "segments": _segment_facts(log_dir, stats.last_lsn),
        "stored_bytes": stats.stored_bytes,
        "raw_bytes": stats.raw_bytes,
        "compression_ratio": round(stats.compression_ratio, 2),
        "checkpoints": [
            {
                "lsn": c.lsn,
                "bytes": c.stored_size,
                "state_bytes": c.raw_size,
                "codec": "pickle" if c.pickled else "msgpack",
                "pickled": c.pickled,
                "created": iso_time(c.created_ns),
            }
            for c in checkpoints
        ],
        "live_writer": live,
        # A live writer's half-written frame is work in progress, not damage.
        "damage_at_end": [
            _damage_facts(file, d) for file, d in damage if not (live and d.kind == "torn-tail")
        ],
    }


def _segment_facts(log_dir: Path, last_lsn: int) -> list[dict[str, Any]]:
    """Name, size and LSN range of each segment (a segment is named by its first LSN)."""
    files = sorted(log_dir.glob("*.seg"))
    firsts = [int(f.stem) if f.stem.isdigit() else None for f in files]
    facts = []
    for i, file in enumerate(files):
        following = firsts[i + 1] if i + 1 < len(files) else None
        facts.append(
            {
                "name": file.name,
                "bytes": file.stat().st_size,
                "first_lsn": firsts[i],
                "last_lsn": following - 1 if following is not None else last_lsn,
            }
        )
    return facts


def _damage_facts(file: Path, damage: Damage) -> dict[str, Any]:
    return {
        "kind": damage.kind,
        "file": str(file),
        "offset": damage.offset,
        "end_offset": damage.end_offset,
        "first_lsn": damage.first_lsn,
        "last_lsn": damage.last_lsn,
        "reason": damage.reason,
        "description": DamagedRange(file, damage).describe(),
    }


def info_rows(info: dict[str, Any]) -> list[Row]:
    """The text form of :func:`gather_info`'s data, one row per fact."""
    versions = info["versions"]
    since = f" (since LSN {versions[-1]['from_lsn']})" if versions else ""
    rows: list[Row] = [
        ("instance", info["instance"]),
        ("app", info["app"]),
        ("code version", f"{info['code_version']}{since}"),
    ]
    if versions:
        history = [
            f"from LSN {v['from_lsn']}: {v['app']} @ {v['code_version']}"
            + ("" if v["code_kept"] else " (code not kept: written before code was kept)")
            for v in versions
        ]
        rows.append(("code history" if len(versions) > 1 else "code", "\n".join(history)))
    records = info["records"]
    lsns = (
        f"{info['first_lsn']}..{info['last_lsn']} ({plural(records, 'record')})"
        if records
        else f"none yet (the next is LSN {info['last_lsn'] + 1})"
    )
    rows += [
        ("log id", info["log_id"]),
        ("created", info["created"] or "-"),
        ("LSNs", lsns),
        ("time", _time_range(info["first_time"], info["last_time"])),
        ("frames", str(info["frames"])),
        ("segments", _segments_text(info["segments"])),
        ("stored", _bytes_text(info["stored_bytes"], "as written, frame headers included")),
        ("raw", _bytes_text(info["raw_bytes"], "uncompressed")),
        ("compression", f"{info['compression_ratio']:.2f}x"),
        ("checkpoints", _checkpoints_text(info["checkpoints"])),
        (
            "writer",
            "live: a process holds the writer lock (the instance is running)"
            if info["live_writer"]
            else "none (no process is writing)",
        ),
    ]
    for damage in info["damage_at_end"]:
        rows.append(("damage", f"{damage['description']}\nrun `immortals log verify` for more"))
    return rows


def _time_range(first: str | None, last: str | None) -> str:
    if first is None and last is None:
        return "-"
    return f"{first or '-'} .. {last or '-'}"


def _bytes_text(n: int, meaning: str) -> str:
    exact = f"{n} bytes, " if n >= 1024 else ""
    return f"{human_size(n)} ({exact}{meaning})"


def _segments_text(segments: list[dict[str, Any]]) -> str:
    total = sum(s["bytes"] for s in segments)
    lines = [f"{len(segments)}, {human_size(total)}"]
    for seg in segments[:_LIST_LIMIT]:
        first, last = seg["first_lsn"], seg["last_lsn"]
        span = "no records" if first is None or last < first else f"LSN {first}..{last}"
        lines.append(f"{seg['name']}  {human_size(seg['bytes']):>10}  {span}")
    if len(segments) > _LIST_LIMIT:
        lines.append(f"... and {len(segments) - _LIST_LIMIT} more (--json lists all)")
    return "\n".join(lines)


def _checkpoints_text(checkpoints: list[dict[str, Any]]) -> str:
    if not checkpoints:
        return "none"
    lines = [str(len(checkpoints))]
    shown = checkpoints[-_LIST_LIMIT:]  # the newest matter most: recovery starts from them
    if len(checkpoints) > len(shown):
        lines.append(f"... {len(checkpoints) - len(shown)} older (--json lists all)")
    for c in shown:
        codec = "pickle (loading it runs code)" if c["pickled"] else "msgpack"
        lines.append(
            f"LSN {c['lsn']}  {human_size(c['bytes'])} stored, "
            f"{human_size(c['state_bytes'])} state, {codec}"
        )
    return "\n".join(lines)


def info_command(args: argparse.Namespace) -> int:
    info = gather_info(resolve_log(args.path, args.home))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print_rows(f"log of {info['instance']} ({info['path']})", info_rows(info))
    return 0


# -- dump -------------------------------------------------------------------------------------------


def dump_command(args: argparse.Namespace) -> int:
    if args.from_lsn is not None and args.to_lsn is not None and args.from_lsn > args.to_lsn:
        raise LogCommandError(f"--from {args.from_lsn} is after --to {args.to_lsn}")
    log_dir = resolve_log(args.path, args.home)
    colour = sys.stdout.isatty()
    language: Literal["json", "python"] = "json" if args.json else "python"
    printed = 0
    with LogReader(log_dir) as reader:
        for record in _selected(reader, args.from_lsn, args.to_lsn, follow=args.follow):
            line = format_record(record, as_json=args.json)
            print(colourise(line, language) if colour else line, flush=args.follow)
            printed += 1
        _refuse_hidden_damage(reader, args.to_lsn)
        if not printed and not args.follow:
            print(_empty_range_note(reader, args.from_lsn, args.to_lsn), file=sys.stderr)
    return 0


def _selected(
    reader: LogReader, from_lsn: int | None, to_lsn: int | None, *, follow: bool
) -> Iterator[Record]:
    if not follow:
        yield from reader.records(from_lsn, to_lsn)
        return
    next_lsn = reader.first_lsn if from_lsn is None else from_lsn

    def blocked() -> bool:
        # Every readable record is out and damage hides the rest: waiting would never end.
        return next_lsn > reader.last_lsn and _damage_ahead(reader) is not None

    for record in reader.follow(from_lsn, stop=blocked):
        if to_lsn is not None and record.lsn > to_lsn:
            return
        yield record
        next_lsn = record.lsn + 1
        if record.lsn == to_lsn:
            return


def format_record(record: Record, *, as_json: bool) -> str:
    """One record as one line: ``LSN  time  epoch  value``, or a JSON object."""
    if as_json:
        body = {
            "lsn": record.lsn,
            "epoch": record.epoch,
            "wall_ns": record.wall_ns,
            "time": iso_time(record.wall_ns, timespec="microseconds"),
            "value": json_value(record.value),
        }
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return f"{record.lsn:>8}  {iso_time(record.wall_ns) or '-'}  e{record.epoch}  {record.value!r}"


def _damage_ahead(reader: LogReader) -> tuple[Path, Damage] | None:
    """Damage (not a torn tail) where the readable part of the log ends, if any."""
    for file, damage in reader.damage:
        if damage.kind != "torn-tail":
            return file, damage
    return None


def _refuse_hidden_damage(reader: LogReader, to_lsn: int | None) -> None:
    """Raise if damage hides records the caller asked for.

    The reader's iteration ends quietly where the sound log ends; a dump that stopped there
    with exit 0 would pass damage off as the end of the log.
    """
    found = _damage_ahead(reader)
    if found is None:
        return
    file, d = found
    if to_lsn is None or d.first_lsn is None or to_lsn >= d.first_lsn:
        raise CorruptLogError(
            d.reason, file=str(file), offset=d.offset, first_lsn=d.first_lsn, last_lsn=d.last_lsn
        )


def _empty_range_note(reader: LogReader, from_lsn: int | None, to_lsn: int | None) -> str:
    holds = (
        f"the log holds LSN {reader.first_lsn}..{reader.last_lsn}"
        if reader.last_lsn >= reader.first_lsn
        else "the log holds no records yet"
    )
    wanted = f"LSN {from_lsn or reader.first_lsn}..{to_lsn or 'end'}"
    return f"no records in {wanted}: {holds}"


# -- verify -----------------------------------------------------------------------------------------


def verify_command(args: argparse.Namespace) -> int:
    log_dir = resolve_log(args.path, args.home)
    with working(f"verifying {log_dir}"):
        report = verify_log(log_dir)
    print("\n".join(verify_lines(report)))
    return 0 if report.ok else 1


def verify_lines(report: VerifyReport) -> list[str]:
    """The verdict, then one line per damaged range and bad checkpoint, then what to do."""
    lines = [_verify_summary(report)]
    lines += [f"  {damaged.describe()}" for damaged in report.damaged]
    lines += [f"  {problem}" for problem in report.bad_checkpoints]
    lines += [f"hint: {advice}" for advice in _verify_advice(report)]
    return lines


def _verify_summary(report: VerifyReport) -> str:
    verdict = "whole" if report.ok else "DAMAGED"
    lsns = (
        f"LSN {report.first_lsn}..{report.last_lsn}"
        if report.last_lsn >= report.first_lsn
        else "none yet"
    )
    live = "; a live writer is appending" if report.live_writer else ""
    return (
        f"{report.path}: {verdict}: {plural(report.records, 'record')} ({lsns}) in "
        f"{plural(report.frames, 'frame')}, {plural(report.segments, 'segment')}; "
        f"{plural(report.checkpoints, 'checkpoint')} checked{live}"
    )


def _verify_advice(report: VerifyReport) -> list[str]:
    kinds = {d.damage.kind for d in report.damaged}
    advice = []
    if "missing" in kinds:
        advice.append(
            "records the log once held are missing (the named checkpoint, metadata or later "
            "segment proves they existed): restore the missing segment files from a replica or "
            "a backup, or move the log aside to start the instance afresh; until then the "
            "instance refuses to start rather than reuse their LSNs"
        )
    if "torn-tail" in kinds and "missing" not in kinds:
        advice.append(
            "a torn tail is a write cut short by a crash; nothing in it was acknowledged, and "
            "the next writer to open the log (the instance's next start) cuts it back to the "
            "last whole frame"
        )
    if kinds - {"torn-tail", "missing"}:
        advice.append(
            "damage in the middle cannot be repaired from this copy: restore the named segment "
            "files from a replica or a backup; until then the records in and after the damaged "
            "range cannot be read"
        )
    if report.bad_checkpoints:
        advice.append(
            "a damaged checkpoint is skipped: recovery starts from an older sound one instead "
            "(or from LSN 1 if the log was never trimmed); restore it from a backup"
        )
    return advice


# -- trim -------------------------------------------------------------------------------------------


def trim_command(args: argparse.Namespace) -> int:
    log_dir = resolve_log(args.path, args.home)
    below = args.below
    if below is None:
        sound = sound_checkpoints(log_dir)
        below = retention_point(sound, args.keep_checkpoints)
        if below is None:
            print(
                f"nothing to trim: the log has {plural(len(sound), 'sound checkpoint')}, "
                f"fewer than the {args.keep_checkpoints} to keep"
            )
            return 0
    sizes = _file_sizes(log_dir)
    report = _trim(log_dir, below, force=args.force)
    print("\n".join(trim_lines(log_dir, below, report, sizes)))
    return 0


def retention_point(sound: list[int], keep: int) -> int | None:
    """The LSN to trim below so that the newest ``keep`` of the ``sound`` checkpoints stay."""
    if len(sound) < keep:
        return None
    return sound[-keep] + 1


def sound_checkpoints(log_dir: Path) -> list[int]:
    """LSNs of the checkpoints whose bytes check out, oldest first.

    Only these count when deciding what history to drop: keeping the history that leads up to
    a damaged checkpoint, and dropping the rest, would leave nothing to recover from.
    """
    with LogReader(log_dir) as reader:
        return [c.lsn for c in reader.checkpoints() if _loads(reader, c.lsn)]


def _loads(reader: LogReader, lsn: int) -> bool:
    try:
        reader.load_checkpoint(lsn)
    except PickleRefusedError:
        return True  # sound; merely not loaded without opting in
    except CheckpointError:
        return False
    return True


def _file_sizes(log_dir: Path) -> dict[Path, int]:
    """Sizes of the files trim may remove, taken before they are gone."""
    files = [*log_dir.glob("*.seg"), *log_dir.glob("checkpoints/*.ckpt")]
    return {f: f.stat().st_size for f in files}


def _trim(log_dir: Path, below: int, *, force: bool) -> TrimReport:
    try:
        return trim_log(log_dir, below, require_checkpoint=not force)
    except TrimRefusedError as exc:
        raise TrimRefusedError(f"{exc}, or pass --force to trim anyway") from None
    except LogLockedError:
        instance = read_meta(log_dir).instance
        raise LogLockedError(
            f"cannot trim {log_dir}: instance {instance!r} is running (a live process holds "
            "the log's writer lock); stop the instance first, then trim"
        ) from None


def trim_lines(log_dir: Path, below: int, report: TrimReport, sizes: dict[Path, int]) -> list[str]:
    """What trim removed, with the space it freed (``sizes`` were taken before the trim)."""
    if not report.segments_removed:
        return [
            f"nothing to trim below LSN {below}: segments are removed whole and none lies "
            f"wholly below it (the log starts at LSN {report.first_lsn})"
        ]
    removed = report.segments_removed + report.checkpoints_removed
    freed = sum(sizes.get(path, 0) for path in removed)
    lines = [
        f"trimmed {log_dir}: removed {plural(len(report.segments_removed), 'segment')} and "
        f"{plural(len(report.checkpoints_removed), 'checkpoint')} ({human_size(freed)}); "
        f"the log now starts at LSN {report.first_lsn}"
    ]
    lines += [f"  removed {_relative(path, log_dir)}" for path in removed]
    return lines


def _relative(path: Path, log_dir: Path) -> str:
    try:
        return str(path.relative_to(log_dir))
    except ValueError:
        return str(path)
