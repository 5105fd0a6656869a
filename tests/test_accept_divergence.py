"""A log whose recorded code does not reproduce it is never a dead end (issue 14, part 1).

A handler that read the real clock replays with another value. After a SIGKILL the recovery
that would replay such a step refuses, in one line that names the command getting the instance
serving again; that command (``--accept-divergence``) takes the step as the code runs it now,
keeps the replies the world saw, and writes a checkpoint so that no later recovery replays it.
"""

from __future__ import annotations

from pathlib import Path

from logformat import LogReader
from runtime import connect
from tests._instances import Cluster, run_cli

APP = "tests/apps/patterns.py:Clocky"


def test_a_recovery_that_diverges_names_the_command_that_gets_it_serving(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cluster = Cluster(home)
    clocky = cluster.start(APP, "clocky", "--no-replay-check")
    try:
        with connect(home, timeout=20) as client:
            stamps = [client.call("clocky", "stamp", key=f"k{i}") for i in range(3)]
        clocky.kill()  # no checkpoint yet: recovery must replay the three steps

        refused = run_cli("run", APP, "--name", "clocky", home=home)
        errors = [ln for ln in refused.stderr.splitlines() if ln.startswith("immortals: error:")]
        assert refused.returncode != 0 and len(errors) == 1, refused.stderr
        assert "step 2: replay diverged" in errors[0]
        command = f"immortals run {APP} --name clocky --accept-divergence"
        assert f"`{command}`" in errors[0]
        assert "Traceback" not in refused.stderr

        clocky.extra.append("--accept-divergence")
        clocky.start()
        lines = clocky.stderr
        assert any("accepted 3 steps as their code runs them (2, 3, 4)" in ln for ln in lines)
        assert any("wrote a checkpoint at LSN 4" in ln for ln in lines)
        with connect(home, timeout=20) as client:
            assert client.call("clocky", "stamp", key="k1") == stamps[1]  # the world's answer
        clocky.kill()

        clocky.extra.remove("--accept-divergence")
        seen = len(clocky.stderr)
        clocky.start()  # recovers from the checkpoint: the accepted steps are not replayed
        assert "checkpoint at LSN 4; replayed 0 steps" in clocky.stderr[-1]
        assert not any("diverged" in ln for ln in clocky.stderr[seen:])
        with LogReader(home / "logs" / "clocky") as reader:
            assert 4 in {info.lsn for info in reader.checkpoints()}
    finally:
        cluster.stop_all()
