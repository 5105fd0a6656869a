"""Calling an instance from outside (a script, a test, ``immortals call``).

Each call carries an idempotency key. If the connection breaks or times out, the client looks
the instance up again (it may have restarted elsewhere, on another port) and sends the same call
with the same key; the instance executes a key once and answers every retry with the one result.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any

from ._errors import CallTimeoutError, IdempotencyKeyError, RemoteError
from ._home import Home
from ._protocol import Closed, Connection, Opened, Received
from ._schema import MAIN_KEY, MAX_KEY_LENGTH, call, read_failure, read_result


def check_key(key: object) -> str:
    """``key`` if an instance accepts it as an idempotency key; IdempotencyKeyError if not."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH or key == MAIN_KEY:
        raise IdempotencyKeyError(
            f"an idempotency key must be a string of 1 to {MAX_KEY_LENGTH} characters other "
            f"than {MAIN_KEY!r}, not {key!r}"
        )
    return key


# Between two attempts of a call: 5 ms, doubling to 50 ms. An instance that restarts or is
# taken over (a live upgrade) registers its new address within tens of milliseconds, and a
# fixed 50 ms wait made every such pause a multiple of it.
RETRY_FIRST = 0.005
RETRY_MOST = 0.05


class Client:
    """A connection-per-call client bound to one home directory. Thread-compatible, not safe."""

    def __init__(self, home: Home, *, timeout: float = 30.0, attempt_timeout: float = 2.0) -> None:
        self.home = home
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self._sockets: dict[str, tuple[socket.socket, Connection]] = {}

    def call(self, name: str, method: str, *args: Any, key: str | None = None) -> Any:
        """Call ``method`` of instance ``name`` exactly once; RemoteError if the handler raised.

        CallTimeoutError when no answer came within ``timeout`` seconds; the call may or may
        not have run, and calling again with the same ``key`` runs it at most once.
        """
        key = uuid.uuid4().hex if key is None else check_key(key)
        deadline = time.monotonic() + self.timeout
        last_problem = "no attempt made"
        pause = RETRY_FIRST
        while time.monotonic() < deadline:
            try:
                ok, value = self._attempt(name, method, list(args), key, deadline)
            except (OSError, _Retry) as exc:
                last_problem = str(exc) or type(exc).__name__
                self._drop(name)
                time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(2 * pause, RETRY_MOST)
                continue
            if ok:
                return value
            raise RemoteError(*read_failure(value))
        raise CallTimeoutError(
            key,
            f"calling {name}.{method} got no answer within {self.timeout:g} s ({last_problem}). "
            f"It may or may not have run: check that {name!r} is running (`immortals log info "
            f"{name} --home {self.home.path}` says whether a process writes its log), then call "
            f"again with the same idempotency key {key!r} (`immortals call --key`): it runs at "
            "most once",
        )

    def _socket_timeout(self, deadline: float) -> float:
        """One attempt waits at most ``attempt_timeout``, and never past the call's deadline."""
        return max(0.01, min(self.attempt_timeout, deadline - time.monotonic()))

    def _attempt(
        self, name: str, method: str, args: list[Any], key: str, deadline: float
    ) -> tuple[bool, Any]:
        sock, conn = self._connect(name, deadline)
        sock.settimeout(self._socket_timeout(deadline))
        sock.sendall(conn.send(call(key, method, args)))
        while True:
            for event in self._read(sock, conn):
                message = event.message if isinstance(event, Received) else {}
                if message.get("t") == "result":
                    answered, ok, value = read_result(message)
                    if answered == key:
                        return ok, value

    def _connect(self, name: str, deadline: float) -> tuple[socket.socket, Connection]:
        cached = self._sockets.get(name)
        if cached is not None:
            return cached
        record = self.home.lookup(name)
        if record is None:
            raise _Retry(f"instance {name!r} is not registered under {self.home.path}")
        secret = self.home.secret()
        timeout = self._socket_timeout(deadline)
        sock = socket.create_connection((record.host, record.port), timeout=timeout)
        try:
            conn = Connection(me=None, epoch=0, secret=secret, initiator=True)
            sock.sendall(conn.start())
            while conn.state.value != "open":
                for event in self._read(sock, conn):
                    if isinstance(event, Opened):
                        break
        except BaseException:
            sock.close()
            raise
        self._sockets[name] = (sock, conn)
        return sock, conn

    def _read(self, sock: socket.socket, conn: Connection) -> list[Any]:
        try:
            data = sock.recv(1 << 16)
        except TimeoutError as exc:
            raise _Retry("no answer in time") from exc
        if not data:
            raise _Retry("connection closed")
        events, reply = conn.receive_data(data)
        if reply:
            sock.sendall(reply)
        for event in events:
            if isinstance(event, Closed):
                raise _Retry(event.reason)
        return events

    def _drop(self, name: str) -> None:
        cached = self._sockets.pop(name, None)
        if cached is not None:
            cached[0].close()

    def close(self) -> None:
        for name in list(self._sockets):
            self._drop(name)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Retry(Exception):
    """This attempt failed in a way a retry with the same key may fix."""


def connect(home: str | os.PathLike[str] | Home = ".immortals", **options: Any) -> Client:
    """A client for the instances of ``home``: ``connect(home).call(name, method, *args)``."""
    return Client(home if isinstance(home, Home) else Home(home), **options)
