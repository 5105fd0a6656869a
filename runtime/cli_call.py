"""``immortals call NAME METHOD [ARGS...]``: call an instance from outside and print the result.

ARGS are JSON values (``5``, ``'"text"'``, ``'[1, 2]'``); a word that is not JSON is taken as a
string, so ``immortals call bank open alice`` works without quoting.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._client import connect
from ._errors import RemoteError


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser("call", help="call an instance's method from outside")
    p.add_argument("name", metavar="NAME")
    p.add_argument("method", metavar="METHOD")
    p.add_argument("args", metavar="ARGS", nargs="*", help="JSON values")
    p.add_argument(
        "--timeout", type=float, default=30.0, help="give up after S seconds (default 30)"
    )
    p.add_argument("--key", help="idempotency key (default: a fresh one); reuse it to retry safely")
    p.set_defaults(handler=call_command)


def parse_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def call_command(args: argparse.Namespace) -> int:
    values = [parse_arg(a) for a in args.args]
    with connect(args.home, timeout=args.timeout) as client:
        try:
            result = client.call(args.name, args.method, *values, key=args.key)
        except RemoteError as exc:
            print(f"immortals: {args.name}.{args.method} raised {exc}", file=sys.stderr)
            return 1
    print(json.dumps(result, default=str))
    return 0
