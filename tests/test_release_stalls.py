"""Release never stalls: an emit stream that cannot be written stops the instance cleanly.

Printing emits used to be able to abort a release half-way, so the batch's peer messages were
never sent and the instance hung. Now messages, results and acks go out regardless, the
instance stops with one line, and a restart prints what was not written.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from runtime import connect
from tests._instances import REPO, Cluster, _env

COUNTER = "samples/counter/counter.py"


def test_a_closed_stdout_stops_the_instance_and_a_restart_prints_again(
    home: Path, cluster: Cluster
) -> None:
    cluster.start(f"{COUNTER}:Server", "server")
    client = cluster.add(f"{COUNTER}:Client", "client")
    errors = home.parent / "first-client.stderr"
    with errors.open("wb") as err:
        proc = subprocess.Popen(
            client.command(), stdout=subprocess.PIPE, stderr=err, env=_env(), cwd=REPO
        )
    assert proc.stdout is not None
    proc.stdout.close()  # like `| head` that has gone away: every write now fails (EPIPE)
    assert proc.wait(30) == 74
    lines = errors.read_text().splitlines()
    stop = [line for line in lines if "cannot write emits" in line]
    assert len(stop) == 1 and "Restart the instance" in stop[0]
    assert not any("Traceback" in line for line in lines)

    client.start()  # stdout to a file now
    deadline = time.monotonic() + 30
    while len(client.stdout) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.stdout == ["1", "2"]  # the unprinted line, then the rest: each call once
    with connect(home) as caller:
        assert caller.call("server", "inc") == 3
