"""``immortals run APP --name NAME``: run one instance until SIGTERM or SIGINT.

Stdout carries only the instance's emits, one JSON value per line (``--emit-tagged`` wraps each
as ``{"lsn", "i", "value"}`` so a consumer can drop the rare line printed twice across a crash);
the startup line and diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from ._apps import load_app
from ._coordinator import CoordinatorConfig
from ._errors import InstanceError
from ._home import Home, check_name
from ._keys import DEFAULT_RETENTION
from ._node import Node, NodeConfig
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
    p.add_argument("--port", type=int, default=0, help="TCP port (default: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--durability",
        choices=["fsync", "none"],
        default="fsync",
        help="fsync: log every step (default); none: no log, for unprotected baselines",
    )
    p.add_argument("--checkpoint-seconds", type=float, default=60.0, metavar="S")
    p.add_argument("--checkpoint-mib", type=float, default=64.0, metavar="MIB")
    p.add_argument("--allow-pickle", action="store_true", help="pickle state in checkpoints")
    p.add_argument("--emit-tagged", action="store_true", help='print emits as {"lsn","i","value"}')
    p.add_argument(
        "--key-retention-hours",
        type=float,
        default=DEFAULT_RETENTION / 3600,
        metavar="H",
        help="how long an outside call's idempotency key is remembered (default 24)",
    )
    p.add_argument(
        "--result-cache",
        type=int,
        default=DEFAULT_RESULT_CACHE,
        metavar="N",
        help="outside results kept in memory; older keys are found in the log (default 100000)",
    )
    p.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    check_name(args.name)  # refuses a bad name before anything is loaded or started
    if not args.key_retention_hours > 0 or args.result_cache < 1:
        raise InstanceError(
            "--key-retention-hours must be above 0 and --result-cache at least 1 (keys must be "
            "remembered for a while for retries to be safe)"
        )
    app = load_app(args.app)
    config = NodeConfig(
        host=args.host,
        port=args.port,
        coordinator=CoordinatorConfig(
            durable=args.durability == "fsync",
            checkpoint_seconds=args.checkpoint_seconds,
            checkpoint_bytes=int(args.checkpoint_mib * 1024 * 1024),
            allow_pickle=args.allow_pickle,
            result_cache=args.result_cache,
        ),
        key_retention=args.key_retention_hours * 3600,
        emit_tagged=args.emit_tagged,
    )
    home = Home(Path(args.home))
    return asyncio.run(_serve(Node(app, name=args.name, home=home, config=config)))


async def _serve(node: Node) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    report = await node.start()
    print(report.line(), file=sys.stderr, flush=True)
    for problem in report.skipped_checkpoints:
        print(f"warning: skipped a damaged checkpoint: {problem}", file=sys.stderr, flush=True)
    await stop.wait()
    await node.stop()
    print(f"{node.name} stopped cleanly at LSN {node.durable_lsn}", file=sys.stderr, flush=True)
    return 0
