"""Outside callers' idempotency keys hold for their retention time, not for N newer calls.

Issue 12, items 5-7: a key was forgotten after 100,000 newer calls (about 6 s at full rate),
then ran again; a key reused for another call returned the old result; an empty key was
replaced silently; a timed-out call did not say which key to retry with.
"""

from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path

import pytest

from runtime import CallTimeoutError, RemoteError, connect
from runtime._home import Home, InstanceRecord
from tests._instances import Cluster

COUNTER = "samples/counter/counter.py:Server"


def test_an_old_key_is_answered_from_the_log_across_restarts(home: Path, cluster: Cluster) -> None:
    server = cluster.start(COUNTER, "server", "--result-cache", "2")
    with connect(home) as caller:
        for i in range(10):
            assert caller.call("server", "inc", key=f"k{i}") == i + 1
        # k0 left the two results kept in memory long ago: the log answers, nothing runs.
        assert caller.call("server", "inc", key="k0") == 1
        assert caller.call("server", "inc", key="k7") == 8
    server.kill()
    server.start()  # recovery: the memory cache is the checkpoint's and replay's
    with connect(home) as caller:
        assert caller.call("server", "inc", key="k3") == 4
    server.kill()
    shutil.rmtree(server.log_dir() / "keys")  # the key index is a cache: rebuilt from the log
    server.start()
    with connect(home) as caller:
        assert caller.call("server", "inc", key="k5") == 6
        assert caller.call("server", "inc", key="new") == 11  # so nothing ran twice


def test_a_key_reused_for_another_call_is_refused(home: Path, cluster: Cluster) -> None:
    cluster.start("tests/apps/chatter.py:Tally", "tally", "--result-cache", "1")
    with connect(home) as caller:
        assert caller.call("tally", "inc", "me", 1, key="once") == 1
        with pytest.raises(RemoteError, match="KeyReusedError"):
            caller.call("tally", "inc", "me", 2, key="once")
        assert caller.call("tally", "inc", "me", 3, key="other") == 2  # evicts "once"
        with pytest.raises(RemoteError, match="KeyReusedError"):  # refused from the log too
            caller.call("tally", "inc", "me", 2, key="once")
        assert caller.call("tally", "state")["seen"] == {"me": [1, 3]}


@pytest.mark.parametrize("key", ["", "main", "x" * 257])
def test_a_bad_key_is_refused_by_the_client(home: Path, key: str) -> None:
    with connect(home) as caller, pytest.raises(ValueError, match="idempotency key"):
        caller.call("anyone", "inc", key=key)


def test_a_timeout_says_which_key_to_retry_with(home: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True).start()
    registry = Home(home)
    registry.register(
        InstanceRecord("mute", "127.0.0.1", silent.getsockname()[1], 1, "", "app", "v", 0, 0.0)
    )
    registry.close()
    try:
        with connect(home, timeout=0.5) as caller, pytest.raises(CallTimeoutError) as raised:
            caller.call("mute", "inc", key="retry-me")
        assert raised.value.key == "retry-me"
        assert "retry-me" in str(raised.value)
    finally:
        silent.close()
        for conn in accepted:
            conn.close()


def test_a_bad_key_on_the_command_line_is_one_line(home: Path) -> None:
    from tests._instances import run_cli

    done = run_cli("call", "server", "inc", "--key", "", home=home)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "idempotency key" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("option", [["--key-retention-hours", "0"], ["--result-cache", "0"]])
def test_keys_must_be_kept_for_a_while(home: Path, option: list[str]) -> None:
    from tests._instances import run_cli

    done = run_cli("run", COUNTER, "--name", "server", *option, home=home)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert not (home / "logs" / "server").exists()  # refused before anything started
