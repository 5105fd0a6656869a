"""Standbys (issue 15): a standby follows the primary's log and takes over the moment the
primary dies, with nothing lost or doubled; of several standbys exactly one wins."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from runtime import connect
from tests._instances import Cluster, Instance, run_cli

COUNTER = "samples/counter/counter.py:Server"


def _standby(cluster: Cluster, name: str = "server") -> Instance:
    """Start a standby of ``name`` and wait until it follows the log."""
    standby = cluster.add(COUNTER, name, "--standby", label=f"{name}-{len(cluster.instances)}")
    standby.start(wait=False)
    standby.wait_for_line(" following ")
    return standby


def _wait_serving(instance: Instance, timeout: float = 30) -> None:
    instance.wait_for_line(" serving on ", timeout)


def test_a_thousand_calls_across_three_primaries_killed_give_exactly_one_to_a_thousand(
    home: Path, cluster: Cluster
) -> None:
    primary = cluster.start(COUNTER, "server")
    standby = _standby(cluster)
    results: list[int] = []
    with connect(home, timeout=30) as client:
        for i in range(1000):
            if i in (250, 500, 750):
                primary.kill()  # SIGKILL: a standby takes over, and a new standby starts
                _wait_serving(standby)
                primary, standby = standby, _standby(cluster)
            results.append(client.call("server", "inc", key=f"k{i}"))
    assert results == list(range(1, 1001))
    status = run_cli("status", "--json", home=home)
    assert status.returncode == 0


def test_of_several_standbys_exactly_one_takes_over_every_time(
    home: Path, cluster: Cluster
) -> None:
    primary = cluster.start(COUNTER, "server")
    standbys = [_standby(cluster) for _ in range(3)]
    with connect(home, timeout=30) as client:
        expected = 0
        for _round in range(4):  # 3 standbys race, then 2 and 3 again
            for _ in range(20):
                expected += 1
                assert client.call("server", "inc") == expected
            primary.kill()
            deadline = time.monotonic() + 30
            while not (
                won := [s for s in standbys if any(" serving on " in ln for ln in s.stderr)]
            ):
                assert time.monotonic() < deadline, "no standby took over"
                time.sleep(0.005)
            time.sleep(0.3)  # a second winner would show by now
            won = [s for s in standbys if any(" serving on " in ln for ln in s.stderr)]
            assert len(won) == 1, [s.stderr[-2:] for s in standbys]
            primary = won[0]
            standbys.remove(primary)
            assert all(s.proc is not None and s.proc.poll() is None for s in standbys)
            if len(standbys) < 2:
                standbys.append(_standby(cluster))
        expected += 1
        assert client.call("server", "inc") == expected


def test_a_standby_started_on_a_long_log_catches_up_and_serves_the_same_state(
    home: Path, cluster: Cluster
) -> None:
    primary = cluster.start(COUNTER, "server")
    done = threading.Event()

    def load(index: int) -> None:
        with connect(home, timeout=30) as client:
            for i in range(750):
                client.call("server", "inc", key=f"{index}-{i}")
        done.set()

    threads = [threading.Thread(target=load, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    standby = _standby(cluster)  # from nothing, on a log of 6,000 steps
    with connect(home, timeout=30) as client:
        assert client.call("server", "inc") == 6001
        primary.kill()
        _wait_serving(standby)
        assert client.call("server", "inc") == 6002  # the state it replayed is the primary's
    line = next(ln for ln in standby.stderr if " serving on " in ln)
    assert "replayed 0 steps" in line  # warm: it had applied everything before it took over


def test_a_standby_writes_the_checkpoints_and_the_primary_recovers_from_them(
    home: Path, cluster: Cluster
) -> None:
    primary = cluster.start(COUNTER, "server", "--checkpoint-seconds", "1000")  # never itself
    standby = cluster.add(COUNTER, "server", "--standby", "--checkpoint-seconds", "0.3", label="s")
    standby.start(wait=False)
    with connect(home, timeout=30) as client:
        for i in range(1, 21):
            assert client.call("server", "inc") == i
            time.sleep(0.05)
    checkpoints = home / "logs" / "server" / "checkpoints"
    deadline = time.monotonic() + 20
    while not any(checkpoints.glob("*.ckpt")):
        assert time.monotonic() < deadline, standby.stderr
        time.sleep(0.05)
    import json

    (status,) = json.loads(run_cli("status", "--json", home=home).stdout)["instances"]
    assert status["checkpoint_by"].startswith("standby") and status["standbys"]
    standby.kill()
    primary.kill()
    primary.start()  # recovery starts from the standby's checkpoint
    line = primary.wait_ready()
    assert "checkpoint at LSN" in line and "no checkpoint" not in line
    with connect(home, timeout=30) as client:
        assert client.call("server", "inc") == 21


def test_a_primary_paused_past_its_lease_is_fenced_out_and_exits_releasing_nothing(
    home: Path, cluster: Cluster
) -> None:
    """SIGSTOP keeps the primary's writer lock, so the standby takes over when the lease
    lapses, claiming the log at a newer epoch. After SIGCONT the old primary writes nothing
    the log keeps, prints no emit, answers no call, and exits with a clear message."""
    import signal

    tally = "tests/apps/standby_apps.py:Tally"
    primary = cluster.start(tally, "tally")
    standby = cluster.add(tally, "tally", "--standby", label="tally-standby")
    standby.start(wait=False)
    results: list[int] = []

    def call_in_a_loop() -> None:
        with connect(home, timeout=60) as client:
            for i in range(300):
                results.append(client.call("tally", "inc", key=f"k{i}"))

    caller = threading.Thread(target=call_in_a_loop)
    caller.start()
    while len(results) < 50:
        time.sleep(0.01)
    assert primary.proc is not None
    primary.proc.send_signal(signal.SIGSTOP)
    paused_at = time.monotonic()
    printed = len(primary.stdout)
    _wait_serving(standby)
    took = time.monotonic() - paused_at
    served = len(results)
    while len(results) < served + 30:  # the new primary serves the caller
        time.sleep(0.01)
    primary.proc.send_signal(signal.SIGCONT)
    assert primary.proc.wait(20) == 75  # it saw it lost the role, and went
    caller.join(120)
    assert results == list(range(1, 301))
    assert len(primary.stdout) == printed  # no emit after it woke
    emitted = {int(line) for line in primary.stdout + standby.stdout}
    assert emitted == set(range(1, 301))  # every count printed (at least once)
    assert any("no longer the primary" in line for line in primary.stderr)
    assert took < 2.0 + 1.5, f"the takeover took {took:.2f} s after the pause"
    with connect(home, timeout=30) as client:
        assert client.call("tally", "inc") == 301
    # The new primary took the writer lock once the old process was gone: it shows as running.
    called = run_cli("call", "tally", "inc", home=home)
    assert called.returncode == 0 and called.stdout == "302\n", called.stderr
    verify = run_cli("log", "verify", "tally", home=home)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_stopping_an_instance_stops_its_standbys_first(home: Path, cluster: Cluster) -> None:
    """Stopping the primary alone would be a failover: `immortals stop` stops both."""
    primary = cluster.start(COUNTER, "server")
    standby = _standby(cluster)
    deadline = time.monotonic() + 10
    while "standby" not in run_cli("status", home=home).stdout:  # its first report is in
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stopped = run_cli("stop", "server", home=home)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped cleanly with its standby" in stopped.stdout
    assert primary.proc is not None and primary.proc.wait(10) == 0
    assert standby.proc is not None and standby.proc.wait(10) == 0
    assert not any(" serving on " in line for line in standby.stderr)  # no failover
