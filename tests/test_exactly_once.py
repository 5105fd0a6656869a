"""Exactly-once between instances: the four failures of the design brief, and chaos.

Every kill is a real SIGKILL; the precise ones come from fault injection (IMMORTALS_FAULT), so
each test kills at exactly the moment it names. Killed instances restart on a new port.
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest

from runtime import InstanceError, connect
from tests._instances import Cluster, Instance

COUNTER = "samples/counter/counter.py"
CHATTER = "tests/apps/chatter.py"


def _serving(instance: Instance) -> str:
    """The startup line of the instance's latest start."""
    return [line for line in instance.stderr if " serving on " in line][-1]


def _address(line: str) -> str:
    return line.split(" serving on ")[1].split()[0]


def _wait_for(predicate, what: str, timeout: float = 60.0, explain=None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}" + (f"\n{explain()}" if explain else "")
            )
        time.sleep(0.02)


def _died(instance: Instance) -> bool:
    return instance.proc is not None and instance.proc.poll() is not None


def _run_seed_example(cluster: Cluster, *, victim: str, fault: str) -> tuple[Instance, Instance]:
    """Server and Client of the seed example, ``victim`` armed to SIGKILL itself at ``fault``."""
    server = cluster.add(f"{COUNTER}:Server", "server")
    client = cluster.add(f"{COUNTER}:Client", "client")
    armed, other = (server, client) if victim == "server" else (client, server)
    armed.start(fault=fault)
    first = _address(_serving(armed))
    other.start()
    _wait_for(lambda: _died(armed), f"the {victim} to be killed at {fault}")
    assert armed.proc is not None and armed.proc.returncode == -9
    armed.start()
    assert _address(_serving(armed)) != first  # it came back somewhere else
    _wait_for(
        lambda: len(client.stdout) >= 2,
        "the client's two outputs",
        explain=lambda: f"server: {server.stderr}\nclient: {client.stderr}",
    )
    return server, client


def _assert_failure_free(home: Path, server: Instance, client: Instance) -> None:
    time.sleep(0.2)  # nothing more may arrive
    assert client.stdout == ["1", "2"]
    with connect(home) as caller:
        assert caller.call("server", "inc") == 3  # so the Server's state was exactly 2
    assert server.stop() == 0
    assert client.stop() == 0


def test_client_crashes_after_the_first_reply(home: Path, cluster: Cluster) -> None:
    # The client's 2nd send is the batch that logged reply 1, emitted 1 and sent call 2.
    server, client = _run_seed_example(cluster, victim="client", fault="after-send:2")
    _assert_failure_free(home, server, client)


def test_client_crashes_after_sending_before_the_reply(home: Path, cluster: Cluster) -> None:
    server, client = _run_seed_example(cluster, victim="client", fault="after-send:1")
    _assert_failure_free(home, server, client)


def test_server_crashes_after_the_first_call_completed(home: Path, cluster: Cluster) -> None:
    # The server's 1st send is the reply to call 1: the call completed and was answered.
    server, client = _run_seed_example(cluster, victim="server", fault="after-send:1")
    _assert_failure_free(home, server, client)


def test_server_crashes_after_receiving_the_call_before_replying(
    home: Path, cluster: Cluster
) -> None:
    # Received and decoded, not yet executed or logged: the client must send it again.
    server, client = _run_seed_example(cluster, victim="server", fault="after-receive:1")
    _assert_failure_free(home, server, client)


@pytest.mark.parametrize("fault", ["after-fsync:2", "before-fsync:2", "mid-frame:2"])
def test_server_crashes_around_the_fsync_of_the_first_call(
    home: Path, cluster: Cluster, fault: str
) -> None:
    server, client = _run_seed_example(cluster, victim="server", fault=fault)
    _assert_failure_free(home, server, client)


def _outputs(lines: list[str]) -> list[object]:
    seen: dict[tuple[int, int], object] = {}
    for line in lines:
        entry = json.loads(line)
        seen.setdefault((entry["lsn"], entry["i"]), entry["value"])
    return [seen[key] for key in sorted(seen)]


def test_chaos_500_calls_with_kills_on_both_sides(home: Path, cluster: Cluster) -> None:
    rng = random.Random(4242)
    tally = cluster.add(f"{CHATTER}:Tally", "tally", "--checkpoint-seconds", "0.3")
    caller = cluster.add(f"{CHATTER}:Caller", "caller", "--emit-tagged")
    tally.start()
    caller.start()
    kills = {"tally": 0, "caller": 0}
    addresses: dict[str, set[str]] = {"tally": set(), "caller": set()}
    moments = sorted(rng.sample(range(10, 490), 22))  # progress points at which to kill
    for i, moment in enumerate(moments):
        _wait_for(lambda m=moment: len(_outputs(caller.stdout)) >= m, f"output {moment}")
        time.sleep(rng.uniform(0, 0.01))  # land somewhere inside a call
        victim = tally if i % 2 == 0 else caller
        victim.kill()
        kills[victim.name] += 1
        victim.start()
        addresses[victim.name].add(_address(_serving(victim)))
    _wait_for(lambda: len(_outputs(caller.stdout)) >= 500, "500 outputs", timeout=120)
    assert min(kills.values()) >= 10, kills
    assert len(addresses["tally"]) > 1 and len(addresses["caller"]) > 1
    assert _outputs(caller.stdout) == list(range(1, 501))
    with connect(home) as outside:
        state = outside.call("tally", "state")
    assert state["count"] == 500
    assert state["seen"]["caller"] == list(range(1, 501))  # none twice, none lost, in order


def test_three_callers_with_posts_keep_per_sender_order(home: Path, cluster: Cluster) -> None:
    rng = random.Random(99)
    tally = cluster.add(f"{CHATTER}:Tally", "tally")
    callers = [cluster.add(f"{CHATTER}:MixedCaller", f"c{i}", "--emit-tagged") for i in range(3)]
    tally.start()
    for c in callers:
        c.start()
    for _ in range(8):
        time.sleep(rng.uniform(0.02, 0.15))
        victim = rng.choice([tally, *callers])
        victim.kill()
        victim.start()
    expected_emits = 60 - 60 // 3
    for c in callers:
        _wait_for(lambda c=c: len(_outputs(c.stdout)) >= expected_emits, f"{c.name}'s outputs")

    def all_arrived() -> bool:
        with connect(home) as outside:
            seen = outside.call("tally", "state")["seen"]
        return all(len(seen.get(c.name, [])) == 60 for c in callers)

    _wait_for(all_arrived, "every post to arrive")
    with connect(home) as outside:
        state = outside.call("tally", "state")
    for c in callers:
        assert state["seen"][c.name] == list(range(1, 61))  # calls and posts, in sender order
    assert state["count"] == 3 * expected_emits
    assert sorted(v for c in callers for v in _outputs(c.stdout)) == list(
        range(1, state["count"] + 1)
    )


def test_calls_to_an_instance_that_is_not_running_yet_wait_durably(
    home: Path, cluster: Cluster
) -> None:
    client = cluster.add(f"{COUNTER}:Client", "client")
    client.start()  # "server" does not exist yet: the calls wait in the client's log
    time.sleep(0.5)
    client.kill()  # and survive the client's own crash while waiting
    client.start()
    assert client.stdout == []
    server = cluster.add(f"{COUNTER}:Server", "server")
    server.start()
    _wait_for(lambda: len(client.stdout) >= 2, "the client's outputs")
    _assert_failure_free(home, server, client)


def test_a_kill_in_the_middle_of_a_checkpoint_loses_nothing(home: Path, cluster: Cluster) -> None:
    tally = cluster.add(f"{CHATTER}:Tally", "tally", "--checkpoint-seconds", "0.1")
    tally.start(fault="mid-checkpoint:2")
    folder = tally.log_dir() / "checkpoints"
    died = False
    with connect(home, timeout=1.5, attempt_timeout=0.5) as outside:
        for n in range(1, 41):
            while True:
                try:
                    outside.call("tally", "inc", "x", n, key=f"call-{n}")
                    break
                except InstanceError:
                    assert _died(tally)
                    assert tally.proc is not None and tally.proc.returncode == -9
                    assert list(folder.glob("*.tmp"))  # half a checkpoint, under a temporary name
                    died = True
                    tally.start()
                    assert not list(folder.glob("*.tmp"))  # recovery removed it
            time.sleep(0.01)
    assert died
    with connect(home) as outside:
        state = outside.call("tally", "state")
    assert state["count"] == 40
    assert state["seen"]["x"] == list(range(1, 41))


def test_a_frozen_peer_is_noticed_and_the_calls_resume_after_it_thaws(
    home: Path, cluster: Cluster
) -> None:
    """SIGSTOP the server mid-run: its TCP connection stays open but nothing comes back.

    The caller's link must notice the silence (a ping after 1 s, give up after 3 s), reconnect
    once the server thaws, and the calls go on exactly once.
    """
    tally = cluster.start(f"{CHATTER}:Tally", "tally")
    caller = cluster.start(f"{CHATTER}:Caller", "caller", "--emit-tagged")
    _wait_for(lambda: len(_outputs(caller.stdout)) >= 100, "100 outputs")
    assert tally.proc is not None
    tally.proc.send_signal(signal.SIGSTOP)
    try:
        _wait_for(
            lambda: any("tally silent for 3 s; reconnecting" in line for line in caller.stderr),
            "the caller to give up on the frozen tally",
            timeout=15,
        )
    finally:
        tally.proc.send_signal(signal.SIGCONT)
    _wait_for(lambda: len(_outputs(caller.stdout)) >= 500, "500 outputs", timeout=60)
    assert _outputs(caller.stdout) == list(range(1, 501))
    with connect(home) as outside:
        state = outside.call("tally", "state")
    assert state["seen"]["caller"] == list(range(1, 501))
