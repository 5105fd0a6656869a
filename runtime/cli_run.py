"""``immortals run APP --name NAME``: run one instance until SIGTERM or SIGINT (``immortals
stop NAME`` sends SIGTERM), then stop cleanly: drain, close the log, exit 0.

Stdout carries only the instance's emits, one JSON value per line (``--emit-tagged`` wraps each
as ``{"lsn", "i", "value"}`` so a consumer can drop the rare line printed twice across a crash);
the startup line and diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import signal
import socket
import sys
from pathlib import Path
from types import FunctionType
from typing import Any

from ._apps import load_app
from ._coordinator import CHECKPOINT_REPLAY_SECONDS, CoordinatorConfig
from ._errors import AppInitError, ImmortalsError, InstanceError
from ._home import Home, check_name, not_writable
from ._keys import DEFAULT_RETENTION
from ._node import Node, NodeConfig, StartupReport
from ._schema import NAME_RULE
from ._streams import DEFAULT_RESULT_CACHE


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser("run", help="run an instance of an app")
    p.add_argument("app", metavar="APP", help="path/to/file.py:Class or module:Class")
    p.add_argument(
        "--name",
        required=True,
        help=f"the instance's name, its identity forever: {NAME_RULE}",
    )
    p.add_argument(
        "--standby",
        action="store_true",
        help=(
            "follow the instance's log as a standby (its state warm, nothing sent or released) "
            "and take over the moment the primary dies; several may run"
        ),
    )
    p.add_argument(
        "--lease-only",
        action="store_true",
        help=(
            "as a standby, take over only when the primary's lease lapses, as one on another "
            "machine must (default: also the instant the writer lock frees, on this machine)"
        ),
    )
    add_instance_options(p)
    p.set_defaults(handler=run_command)


def add_instance_options(p: argparse.ArgumentParser, *, live_upgrade: bool = False) -> None:
    """The options of a serving instance, shared by ``run`` and ``upgrade live`` (which
    leaves out ``--durability`` and ``--upgrade-check``: it always logs, and checks unless
    told ``--skip-test``)."""
    p.add_argument(
        "--port", type=_port, default=0, help="TCP port (default: %(default)s, any free port)"
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    if not live_upgrade:
        _add_durability_and_check(p)
    p.add_argument(
        "--checkpoint-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="checkpoint the state at least this often, if it changed (default: %(default)g)",
    )
    p.add_argument(
        "--checkpoint-mib",
        type=float,
        default=64.0,
        metavar="MIB",
        help="checkpoint after this much log since the last one (default: %(default)g)",
    )
    p.add_argument(
        "--checkpoint-replay-seconds",
        type=float,
        default=CHECKPOINT_REPLAY_SECONDS,
        metavar="S",
        help=(
            "also checkpoint once replaying the steps since the last checkpoint would take S "
            "seconds (at the replay cost measured at recovery), so a recovery stays about "
            "that short (default: %(default)g)"
        ),
    )
    p.add_argument(
        "--lease-ttl",
        type=float,
        default=2.0,
        metavar="S",
        help=(
            "the primary role's lease lapses S seconds after its last renewal (renewed every "
            "S/3); a standby that cannot see the writer lock takes over then (default: %(default)g)"
        ),
    )
    p.add_argument(
        "--no-replay-check",
        action="store_true",
        help=(
            "do not replay the steps since the previous checkpoint in a child process after "
            "each checkpoint (default: replay them, and report a step the code does not "
            "reproduce at once)"
        ),
    )
    p.add_argument(
        "--accept-divergence",
        action="store_true",
        help=(
            "when the log's recorded code does not reproduce a step (a handler read the real "
            "clock or the global random), take the state its code gives now instead of "
            "refusing to start; the step's recorded replies and messages stand, and a "
            "checkpoint is written so that it is not replayed again"
        ),
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="pickle state in checkpoints (default: msgpack only; loading a pickle runs code)",
    )
    p.add_argument(
        "--emit-tagged",
        action="store_true",
        help='print emits as {"lsn","i","value"} (default: the bare JSON value)',
    )
    p.add_argument(
        "--key-retention-hours",
        type=float,
        default=DEFAULT_RETENTION / 3600,
        metavar="H",
        help="how long an outside call's idempotency key is remembered (default: %(default)g)",
    )
    p.add_argument(
        "--result-cache",
        type=int,
        default=DEFAULT_RESULT_CACHE,
        metavar="N",
        help="outside results kept in memory; older keys are found in the log "
        "(default: %(default)s)",
    )


def _add_durability_and_check(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--durability",
        choices=["fsync", "none"],
        default="fsync",
        help="fsync: log every step; none: no log, for unprotected baselines (default: %(default)s)",
    )
    p.add_argument(
        "--upgrade-check",
        choices=["default", "strict", "warn", "off"],
        default="default",
        help=(
            "when the code differs from the code the log ran last, re-execute the steps since "
            "the last checkpoint with it before upgrading: default refuses only when it raises "
            "where the recorded code did not, strict refuses any difference, warn never "
            "refuses, off skips the check (default: %(default)s)"
        ),
    )


def node_config(args: argparse.Namespace, **fields: Any) -> NodeConfig:
    """The NodeConfig that ``add_instance_options``'s arguments ask for (``fields`` add to or
    override them)."""
    if not args.checkpoint_replay_seconds > 0:
        raise InstanceError(
            f"--checkpoint-replay-seconds must be above 0, not {args.checkpoint_replay_seconds:g}"
        )
    if not 0.1 <= args.lease_ttl <= 3600:
        raise InstanceError(
            f"--lease-ttl must be between 0.1 and 3600 seconds, not {args.lease_ttl:g} (a "
            "shorter lease is renewed too often to hold; a longer one delays a failover)"
        )
    if not args.key_retention_hours > 0 or args.result_cache < 1:
        raise InstanceError(
            "--key-retention-hours must be above 0 and --result-cache at least 1 (keys must be "
            "remembered for a while for retries to be safe)"
        )
    settings: dict[str, Any] = dict(
        host=args.host,
        port=args.port,
        coordinator=CoordinatorConfig(
            durable=getattr(args, "durability", "fsync") == "fsync",
            checkpoint_seconds=args.checkpoint_seconds,
            checkpoint_bytes=int(args.checkpoint_mib * 1024 * 1024),
            checkpoint_replay_seconds=args.checkpoint_replay_seconds,
            allow_pickle=args.allow_pickle,
            result_cache=args.result_cache,
        ),
        key_retention=args.key_retention_hours * 3600,
        emit_tagged=args.emit_tagged,
        upgrade_check=getattr(args, "upgrade_check", "default"),
        check_history=not args.no_replay_check,
        accept_divergence=args.accept_divergence,
        lease_ttl=args.lease_ttl,
    )
    settings.update(fields)
    return NodeConfig(**settings)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port is a whole number, not {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535 (0: any free port), not {port}")
    return port


def run_command(args: argparse.Namespace) -> int:
    check_name(args.name)  # refuses a bad name before anything is loaded or started
    if args.lease_only and not args.standby:
        raise InstanceError("--lease-only is for a standby: add --standby")
    config = node_config(args, standby=args.standby, watch_lock=not args.lease_only)
    app = load_app(args.app)
    home = Home(Path(args.home))
    return asyncio.run(serve(Node(app, name=args.name, home=home, config=config)))


async def serve(node: Node) -> int:
    """Serve until SIGTERM or SIGINT, then stop cleanly: drain, close the log, exit 0.

    A second signal while draining is not caught again: SIGTERM then ends the process and
    SIGINT raises KeyboardInterrupt (exit 130). Both are safe, as after any crash: the log
    holds everything that was acknowledged.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.ensure_future(_start_and_announce(node))
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done() and node.standing_by:  # stopped as a standby: nothing to drain
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        await node.stop()
        print(f"{node.name} stopped before serving", file=sys.stderr, flush=True)
        return 0
    stopped.cancel()
    await starting  # a stop during recovery waits for it, then stops cleanly
    await stop.wait()
    for sig in signals:
        loop.remove_signal_handler(sig)
    await node.stop()
    print(f"{node.name} stopped cleanly at LSN {node.durable_lsn}", file=sys.stderr, flush=True)
    return 0


async def _start_and_announce(node: Node) -> StartupReport:
    """Start, and print the startup line before anything else can run (tests and scripts
    wait for it; a fault point armed at the first send must come after it)."""
    report = await _start(node)
    print(report.line(), file=sys.stderr, flush=True)
    for problem in report.skipped_checkpoints:
        print(f"warning: skipped a damaged checkpoint: {problem}", file=sys.stderr, flush=True)
    return report


async def _start(node: Node) -> StartupReport:
    """``node.start()``, with what a user can cause (a taken port, a home this user cannot
    write, an app whose ``__init__`` raises) turned into one-line errors."""
    try:
        return await node.start()
    except ImmortalsError:
        raise
    except Exception as exc:
        where = _raised_in_init(exc, node.app.cls)
        if where is not None:
            raise AppInitError(
                f"starting {node.name!r} failed: {node.app.cls.__name__}.__init__ raised "
                f"{_one_line(exc)} ({where}); fix it and run again (a first start that fails "
                "logs nothing)"
            ) from None
        if isinstance(exc, OSError):
            raise InstanceError(_cannot_start(node, exc)) from None
        raise


def _raised_in_init(exc: BaseException, cls: type) -> str | None:
    """``file:line`` where ``exc`` was raised if the app's own ``__init__`` ran into it, else
    None (then it is a bug of the runtime, and its traceback is worth seeing)."""
    inits = {
        init.__code__
        for klass in cls.__mro__
        if not klass.__module__.startswith("runtime.")
        and isinstance(init := klass.__dict__.get("__init__"), FunctionType)
    }
    tb = exc.__traceback__
    found = False
    last = None
    while tb is not None:
        found = found or tb.tb_frame.f_code in inits
        last = tb
        tb = tb.tb_next
    if not found or last is None:
        return None
    return f"{Path(last.tb_frame.f_code.co_filename).name}:{last.tb_lineno}"


def _cannot_start(node: Node, exc: OSError) -> str:
    """One line for an OSError out of a start: the address to listen on, or the home."""
    if exc.filename is not None:  # a file or directory of the home
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return not_writable(node.home.path, exc.filename, exc.strerror or str(exc))
        return f"cannot start {node.name!r}: {exc.filename}: {exc.strerror or exc}"
    host, port = node.config.host, node.config.port
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {host}:{port}: the port is in use; choose another --port (0 "
            "picks a free one) or stop what listens there (`immortals status` lists the "
            "instances of this home)"
        )
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return (
            f"cannot listen on {host}:{port}: {host!r} is not an address of this machine; "
            "use --host 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
        )
    if exc.errno == errno.EACCES:
        return (
            f"cannot listen on {host}:{port}: permission denied (ports below 1024 need "
            "privileges); choose a --port above 1023, or 0 for any free port"
        )
    return f"cannot start {node.name!r} on {host}:{port}: {_one_line(exc)}"


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())
