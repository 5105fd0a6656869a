"""``immortals call NAME METHOD [ARGS...]``: call an instance from outside and print the result.

ARGS are JSON values (``5``, ``'"text"'``, ``'[1, 2]'``); a word that is not JSON is refused
with the quoting that makes it a string. Taking ``abc`` as the string "abc" would be kinder
until the day a caller means the string "5" or "true" and silently sends a number.

A NAME this home has never heard of (not registered, no log) fails at once: waiting for an
instance that nobody has started would only turn a typo into a 30 s hang. A known instance that
is down is waited for (it may be restarting), and the wait is said on stderr.
"""

from __future__ import annotations

import argparse
import difflib
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from ._client import check_key, connect
from ._errors import ImmortalsError, InstanceError, RemoteError
from ._home import Home, check_name


class CallArgumentError(ImmortalsError):
    """An ARG that is not JSON (exit 2, like any usage error)."""


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser("call", help="call an instance's method from outside")
    p.add_argument("name", metavar="NAME", help="the instance to call")
    p.add_argument("method", metavar="METHOD", help="one of its @rpc methods")
    p.add_argument(
        "args", metavar="ARGS", nargs="*", help="the method's arguments, each a JSON value"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="give up after S seconds (default: %(default)g)",
    )
    p.add_argument("--key", help="idempotency key (default: a fresh one); reuse it to retry safely")
    p.set_defaults(handler=call_command)


def parse_arg(text: str) -> Any:
    """One ARG as a JSON value; CallArgumentError, with the quoting to use, if it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        raise CallArgumentError(
            f"ARGS are JSON values and {text!r} is not JSON; for the string, quote it: "
            f"{shlex.quote(json.dumps(text))}"
        ) from None


def call_command(args: argparse.Namespace) -> int:
    values = [parse_arg(a) for a in args.args]
    if args.key is not None:
        check_key(args.key)  # bad input is refused before anything is looked up
    home = Home(Path(args.home))
    try:
        _check_known(home, check_name(args.name), args.timeout)
        with connect(home, timeout=args.timeout) as client:
            try:
                result = client.call(args.name, args.method, *values, key=args.key)
            except RemoteError as exc:
                message = " ".join(str(exc).split())
                print(f"immortals: {args.name}.{args.method} raised {message}", file=sys.stderr)
                return 1
    finally:
        home.close()
    print(json.dumps(result, default=str))
    return 0


def _check_known(home: Home, name: str, timeout: float) -> None:
    """Refuse a name the home does not know; say so on stderr when a known one is down."""
    record = home.lookup(name)
    if record is None and not home.log_dir(name).is_dir():
        known = home.known_names()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}? If not, " if close else ""
        raise InstanceError(
            f"no instance named {name!r} under {home.path} (not registered, no log): {hint}"
            f"start it with `immortals run APP --name {name} --home {home.path}`, or see "
            f"`immortals status --home {home.path}` for the {len(known)} known there"
        )
    if not home.is_running(name, record):
        app = record.app if record is not None else "APP"
        print(
            f"immortals: {name!r} is not running; waiting up to {timeout:g} s for it to start "
            f"(`immortals run {app} --name {name} --home {home.path}`)",
            file=sys.stderr,
            flush=True,
        )
