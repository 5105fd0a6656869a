"""PostgreSQL, one committed transaction per call: the usual "fully resilient" design.

The benchmark starts its own throwaway cluster: initdb into a temporary folder (as the
``postgres`` user, since PostgreSQL refuses to run as root), listening on loopback only, with
fsync and synchronous_commit on (the defaults), and stops it afterwards. Where the server
binaries are missing it installs Debian's ``postgresql`` package first.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True)
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent


def _as_postgres(*args: str) -> list[str]:
    return list(args) if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *args]


@contextmanager
def postgres_server(port: int) -> Iterator[str]:
    """A running cluster on 127.0.0.1:``port`` in a folder of its own; yields its DSN.

    The folder is not inside the caller's temporary folder: those are private to root, and the
    server runs as ``postgres``.
    """
    bin_dir = _bin_dir()
    folder = Path(tempfile.mkdtemp(prefix="immortals-pg-"))
    data = folder / "pgdata"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(data, "postgres")
    subprocess.run(
        _as_postgres(str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "bench"),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        _as_postgres(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(folder / "pg.log"),
            "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=40",
            "start",
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"host=127.0.0.1 port={port} user=bench dbname=postgres"
    finally:
        subprocess.run(
            _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"),
            check=False,
            stdout=subprocess.DEVNULL,
        )


def server_cpu_seconds() -> float:
    """User+system seconds of every process running as ``postgres`` (the cluster's)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    uid = _postgres_uid()
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            if os.stat(stat).st_uid != uid:
                continue
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _postgres_uid() -> int:
    import pwd

    return pwd.getpwnam("postgres").pw_uid


def transactions(dsn: str, n: int, size: int, clients: int) -> tuple[float, float, list[float]]:
    """(seconds, client+server CPU seconds, per-call latencies) for ``n`` calls."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute(
            "CREATE TABLE IF NOT EXISTS counter (id int PRIMARY KEY, n bigint, last bytea)"
        )
        setup.execute("INSERT INTO counter VALUES (1, 0, NULL) ON CONFLICT DO NOTHING")
    payload = b"x" * size
    latencies: list[float] = []
    lock = threading.Lock()
    per_client = n // clients

    def work() -> None:
        mine = []
        with psycopg.connect(dsn, autocommit=True) as conn:
            for _ in range(per_client):
                t = time.perf_counter()
                conn.execute(
                    "UPDATE counter SET n = n + 1, last = %s WHERE id = 1 RETURNING n", (payload,)
                ).fetchone()
                mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    cpu = time.process_time() + server_cpu_seconds()
    started = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return elapsed, time.process_time() + server_cpu_seconds() - cpu, latencies
