"""A storm against an instance with standbys: its primary SIGKILLed or paused past its lease
(SIGSTOP, then SIGCONT), its standbys SIGKILLed, over and over, while a client calls with keys.
Whatever happens, the results are exactly 1..N and some process serves at the end."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

from runtime import connect
from runtime._home import Home
from tests._instances import Cluster, Instance

COUNTER = "samples/counter/counter.py:Server"
CALLS = 2500


def test_a_storm_of_kills_and_pauses_loses_nothing_and_doubles_nothing(
    home: Path, cluster: Cluster
) -> None:
    rng = random.Random(int(os.environ.get("STORM_SEED", "15")))
    cluster.start(COUNTER, "server", "--lease-ttl", "0.6")
    spawned = 0

    def new_standby() -> Instance:
        nonlocal spawned
        spawned += 1
        standby = cluster.add(
            COUNTER, "server", "--standby", "--lease-ttl", "0.6", label=f"s{spawned}"
        )
        standby.start(wait=False)
        return standby

    for _ in range(2):
        new_standby()
    results: list[int] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            with connect(home, timeout=60) as client:
                for i in range(CALLS):
                    results.append(client.call("server", "inc", key=f"k{i}"))
                    time.sleep(0.004)  # the storm gets a few dozen turns
        except BaseException as exc:  # reported below, in the test thread
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    registry = Home(home)
    actions: list[str] = []
    try:
        while caller.is_alive():
            time.sleep(rng.uniform(0.3, 0.8))
            record = registry.lookup("server")
            live = [i for i in cluster.instances if i.proc is not None and i.proc.poll() is None]
            primary = next(
                (i for i in live if record and i.proc and i.proc.pid == record.pid), None
            )
            standbys = [i for i in live if i is not primary]
            choice = rng.random()
            if primary is not None and choice < 0.4:
                primary.kill()
                actions.append("kill primary")
            elif primary is not None and choice < 0.7:
                assert primary.proc is not None
                primary.proc.send_signal(signal.SIGSTOP)
                time.sleep(rng.uniform(0.8, 1.5))  # past the lease: a standby takes over
                primary.proc.send_signal(signal.SIGCONT)
                actions.append("pause primary")
            elif standbys:
                rng.choice(standbys).kill()
                actions.append("kill standby")
            while len([i for i in cluster.instances if i.proc and i.proc.poll() is None]) < 3:
                new_standby()
    finally:
        caller.join(120)
        registry.close()
    assert not errors, (errors, actions)
    assert results == list(range(1, CALLS + 1)), actions
    exits = [i.proc.returncode for i in cluster.instances if i.proc and i.proc.poll() is not None]
    assert set(exits) <= {-9, 75, 0}, exits  # killed, or fenced out (75): nothing else
    with connect(home, timeout=30) as client:
        assert client.call("server", "inc") == CALLS + 1
    print(f"storm: {len(actions)} actions ({', '.join(sorted(set(actions)))}), {spawned} standbys")
