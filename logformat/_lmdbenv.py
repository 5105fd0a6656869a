"""One lmdb environment per path per process, shared and reference-counted.

py-lmdb refuses to open an environment a second time in the same process, yet a process often
needs one path from several places (a log's writer and its readers; a registry seen by an
instance and by a client in a test). Everything that opens lmdb goes through here.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import lmdb

_envs: dict[Path, tuple[lmdb.Environment, int]] = {}
_lock = threading.Lock()


def acquire_env(path: Path, **options: Any) -> lmdb.Environment:
    """The environment at ``path`` (created if missing); pair every call with release_env."""
    key = path.resolve()
    with _lock:
        env, refs = _envs.get(key, (None, 0))
        if env is None:
            path.mkdir(parents=True, exist_ok=True)
            env = lmdb.open(str(path), **options)
        _envs[key] = (env, refs + 1)
        return env


def env_is_open(path: Path) -> bool:
    """Whether this process has the environment at ``path`` open."""
    with _lock:
        return path.resolve() in _envs


def release_env(path: Path) -> None:
    """Drop one reference; the environment closes when the last one goes."""
    key = path.resolve()
    with _lock:
        env, refs = _envs[key]
        if refs <= 1:
            del _envs[key]
            env.close()
        else:
            _envs[key] = (env, refs - 1)


def open_dbs(env: lmdb.Environment, *names: bytes) -> list[Any]:
    """The named databases of ``env``, opened one process-wide call at a time.

    lmdb forbids ``mdb_dbi_open`` in two concurrent transactions of one process; two readers of
    one log opening their index on two threads at once (the debugger's indexer and its
    interactive replayer) hung there about one time in five in a test."""
    with _lock:
        return [env.open_db(name) for name in names]
