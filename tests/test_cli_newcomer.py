"""The command line a newcomer expects (issue 13, items 6 to 9), run as a user runs it: through
``python -m runtime`` in subprocesses, against real instance processes.

Each error is one line, ``immortals: error: ...``, with a hint, a non-zero exit and no
traceback; ``_one_error`` checks exactly that.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime._home import Home
from tests._instances import REPO, Cluster, run_cli

COUNTER = "samples/counter/counter.py:Server"


def _one_error(result: subprocess.CompletedProcess[str], *, status: int = 2) -> str:
    """The single error line of a failed command (asserting there is exactly one)."""
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _app(tmp_path: Path, source: str) -> str:
    """An app file of the test's own; returns its path for ``immortals run``."""
    path = tmp_path / "app.py"
    path.write_text("from runtime import Immortal, rpc\n\n" + source)
    return str(path)


# -- item 6: status and stop ------------------------------------------------------------------------


def test_status_shows_running_and_down_instances(cluster: Cluster, home: Path) -> None:
    server = cluster.start(COUNTER, "server")
    gone = cluster.start(COUNTER, "gone")
    assert run_cli("call", "server", "inc", home=home).stdout == "1\n"
    gone.kill()
    result = run_cli("status", "--json", home=home)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    facts = {i["name"]: i for i in report["instances"]}
    assert sorted(facts) == ["gone", "server"]
    registry = Home(home)
    record = registry.lookup("server")
    registry.close()
    assert record is not None and server.proc is not None
    live = facts["server"]
    assert live["running"] is True and live["pid"] == server.proc.pid
    assert live["address"] == record.address and live["epoch"] == 1
    assert live["last_lsn"] >= 2 and live["log_bytes"] > 0  # the start and the call
    assert "last_checkpoint" in live
    down = facts["gone"]
    assert down["running"] is False and down["pid"] is None and down["address"] is None
    text = run_cli("status", home=home).stdout.splitlines()
    assert text[0].split()[:3] == ["NAME", "STATE", "PID"]
    assert text[1].split()[:3] == ["gone", "down", "-"]
    assert text[2].split()[:4] == ["server", "running", str(server.proc.pid), record.address]


def test_status_of_an_empty_home_says_how_to_start_one(home: Path) -> None:
    result = run_cli("status", home=home)
    assert result.returncode == 0, result.stderr
    assert "no instances under" in result.stdout and "immortals run" in result.stdout
    assert json.loads(run_cli("status", "--json", home=home).stdout)["instances"] == []


def test_stop_stops_the_instance_cleanly(cluster: Cluster, home: Path) -> None:
    server = cluster.start(COUNTER, "server")
    assert server.proc is not None
    result = run_cli("stop", "server", home=home, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"server (pid {server.proc.pid}) stopped cleanly")
    assert server.proc.poll() == 0  # gone when stop returns, with the exit of a clean stop
    assert any("server stopped cleanly at LSN" in line for line in server.stderr)
    again = _one_error(run_cli("stop", "server", home=home))
    assert "'server' is not running" in again
    unknown = _one_error(run_cli("stop", "nobody", home=home))
    assert "no instance named 'nobody'" in unknown and "immortals status" in unknown


# -- item 7: call -----------------------------------------------------------------------------------


def test_a_call_to_an_unknown_name_fails_at_once(cluster: Cluster, home: Path) -> None:
    cluster.start(COUNTER, "server")
    started = time.monotonic()
    line = _one_error(run_cli("call", "sever", "inc", home=home))
    assert time.monotonic() - started < 10  # not the 30 s call timeout
    assert "no instance named 'sever'" in line
    assert "did you mean 'server'?" in line and "immortals run APP --name sever" in line


def test_a_call_to_a_known_instance_that_is_down_says_it_waits(
    cluster: Cluster, home: Path
) -> None:
    cluster.start(COUNTER, "server").kill()
    result = run_cli("call", "server", "inc", "--timeout", "0.5", home=home)
    assert result.returncode == 2
    waiting, timeout = result.stderr.strip().splitlines()
    assert waiting.startswith("immortals: 'server' is not running; waiting up to 0.5 s")
    assert f"immortals run {COUNTER} --name server" in waiting
    assert timeout.startswith("immortals: error: calling server.inc got no answer")


def test_args_must_be_json_and_a_bare_word_gets_its_quoting(home: Path) -> None:
    line = _one_error(run_cli("call", "bank", "open", "abc", home=home))
    assert "'abc' is not JSON" in line and """'"abc"'""" in line


def test_a_remote_error_is_one_line_and_exit_1(
    cluster: Cluster, home: Path, tmp_path: Path
) -> None:
    app = _app(
        tmp_path,
        "class Picky(Immortal):\n"
        "    @rpc\n"
        "    def fail(self) -> None:\n"
        "        raise ValueError('first line\\nsecond line')\n",
    )
    cluster.start(f"{app}:Picky", "picky")
    result = run_cli("call", "picky", "fail", home=home)
    assert result.returncode == 1
    assert result.stderr == "immortals: picky.fail raised ValueError: first line second line\n"
    unknown = run_cli("call", "picky", "fial", home=home)
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1, unknown.stderr
    assert "UnknownMethodError" in unknown.stderr


# -- item 8: one line for what a user can get wrong -------------------------------------------------


def test_a_port_in_use_is_one_line(home: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli("run", COUNTER, "--name", "server", "--port", str(port), home=home)
    line = _one_error(result)
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in line
    assert "--port" in line


def test_a_port_out_of_range_is_one_line(home: Path) -> None:
    line = _one_error(run_cli("run", COUNTER, "--name", "s", "--port", "70000", home=home))
    assert "a port is 0 to 65535" in line


def test_an_app_whose_init_needs_arguments_or_raises_is_one_line(
    home: Path, tmp_path: Path
) -> None:
    app = _app(
        tmp_path,
        "class Sized(Immortal):\n    def __init__(self, size: int, *rest: int) -> None:\n"
        "        self.size = size\n\n"
        "class Broken(Immortal):\n    def __init__(self) -> None:\n"
        "        raise ValueError('no config')\n",
    )
    line = _one_error(run_cli("run", f"{app}:Sized", "--name", "sized", home=home))
    assert "Sized.__init__ needs size" in line and "no arguments" in line
    assert not (home / "logs" / "sized").exists()  # refused before anything started
    line = _one_error(run_cli("run", f"{app}:Broken", "--name", "broken", home=home))
    assert "Broken.__init__" in line and "ValueError: no config" in line


def _cannot_override_permissions() -> None:
    """In the child, before exec: as root, give up the right to write what one may not (so that a
    test run as root sees a read-only home as a user does); for anyone else, nothing to do."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for cap in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            os._exit(97)  # cannot drop it: the test skips


def _chmod_tree(path: Path, writable: bool) -> None:
    for entry in [path, *path.rglob("*")]:
        mode = entry.stat().st_mode
        entry.chmod(mode | 0o200 if writable else mode & ~0o222)


@pytest.mark.parametrize("read_only", ["empty", "whole", "logs"])
def test_a_read_only_home_is_one_line(tmp_path: Path, home: Path, read_only: str) -> None:
    """An empty directory, a used home made read-only, and a home whose logs/ are read-only."""
    home.mkdir()
    if read_only != "empty":
        Cluster(home).start(COUNTER, "server").stop()
    target = home if read_only != "logs" else home / "logs"
    _chmod_tree(target, writable=False)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "runtime", "--home", str(home), "run", COUNTER, "--name", "new"],
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            cwd=REPO,
            preexec_fn=_cannot_override_permissions,
        )
    finally:
        _chmod_tree(target, writable=True)
    if result.returncode == 97:
        pytest.skip("cannot drop root's permission override here")
    line = _one_error(result)
    assert f"the home {home} must be writable by this user" in line and "--home" in line


# -- item 9: make demo ------------------------------------------------------------------------------


def test_the_demo_runs_in_its_own_home_and_leaves_the_users_alone(tmp_path: Path) -> None:
    mine = tmp_path / ".immortals" / "logs" / "server"
    mine.mkdir(parents=True)
    (mine / "precious").write_text("the user's own")
    for _ in range(2):  # a second run starts the demo's home afresh
        result = subprocess.run(
            [sys.executable, str(REPO / "samples" / "demo.py")],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "the Client's output: 1, 2" in result.stdout
    assert (mine / "precious").read_text() == "the user's own"
    assert sorted(p.name for p in (tmp_path / ".immortals").rglob("*")) == [
        "logs",
        "precious",
        "server",
    ]
    assert (tmp_path / ".immortals-demo" / "logs" / "server").is_dir()
    assert "--home .immortals-demo" in result.stdout  # the commands it suggests name its home


def test_the_demo_refuses_a_home_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / ".immortals-demo").mkdir()
    (tmp_path / ".immortals-demo" / "notes").write_text("not the demo's")
    result = subprocess.run(
        [sys.executable, str(REPO / "samples" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert result.returncode == 1 and "was not made by the demo" in result.stderr
    assert (tmp_path / ".immortals-demo" / "notes").exists()


def _make_plan(target: str) -> str:
    """What ``make TARGET`` would run from scratch (-B: as if nothing were installed)."""
    result = subprocess.run(
        ["make", "-n", "-B", target], capture_output=True, text=True, timeout=30, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    ("target", "extras"),
    [
        ("demo", "-e ."),
        ("lint", "-e '.[dev]'"),
        ("pytest", "-e '.[dev,bench]'"),  # the suite smoke-tests the benchmarks
        ("bench-quick", "-e '.[dev,bench]'"),
    ],
)
def test_each_make_target_installs_only_what_it_needs(target: str, extras: str) -> None:
    installs = [line for line in _make_plan(target).splitlines() if " install " in line]
    assert len(installs) == 1, installs
    assert installs[0].endswith(f" {extras}"), installs
