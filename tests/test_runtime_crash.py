"""Real processes, real SIGKILLs: the state, results and outputs of a failure-free run."""

from __future__ import annotations

import json
import random
import re
import threading
from pathlib import Path

import pytest

from logformat import LogReader
from runtime import RemoteError, connect
from runtime._home import Home
from tests._instances import Cluster, run_cli

LEDGER = "tests/apps/ledger.py:Ledger"
DICE = "tests/apps/ledger.py:Dice"
CHEAT = "tests/apps/ledger.py:Cheat"


def _expected_totals(amounts: list[int]) -> list[int]:
    totals, running = [], 0
    for amount in amounts:
        running += amount
        totals.append(running)
    return totals


def _tagged_emits(lines: list[str]) -> list[object]:
    """Emits in LSN order, each (lsn, index) once: a line printed twice across a crash is one."""
    seen: dict[tuple[int, int], object] = {}
    for line in lines:
        entry = json.loads(line)
        seen.setdefault((entry["lsn"], entry["i"]), entry["value"])
    return [seen[key] for key in sorted(seen)]


def test_2000_calls_through_random_sigkills_equal_a_failure_free_run(
    home: Path, cluster: Cluster
) -> None:
    rng = random.Random(20261124)
    amounts = [rng.randint(1, 100) for _ in range(2000)]
    kill_at = sorted(rng.sample(range(50, 1950), 12))
    ledger = cluster.start(LEDGER, "ledger", "--emit-tagged", "--checkpoint-seconds", "0.05")
    reached = threading.Condition()
    progress = {"n": 0}
    kills = 0

    def killer() -> None:
        nonlocal kills
        for target in kill_at:
            with reached:
                reached.wait_for(lambda t=target: progress["n"] >= t, timeout=120)
            threading.Event().wait(rng.random() * 0.004)  # land somewhere inside a call
            ledger.kill()
            kills += 1
            ledger.start()

    thread = threading.Thread(target=killer)
    thread.start()
    seen: list[int] = []
    with connect(home, timeout=60) as client:
        for tag, amount in enumerate(amounts):
            seen.append(client.call("ledger", "add", tag, amount))
            with reached:
                progress["n"] = tag + 1
                reached.notify_all()
    thread.join(120)
    assert kills == len(kill_at) >= 10
    totals = _expected_totals(amounts)
    assert seen == totals  # every caller saw what a failure-free run returns
    with connect(home) as client:
        state = client.call("ledger", "state")
    assert state["tags"] == list(range(2000))  # each call executed exactly once, in order
    assert state["total"] == totals[-1]
    assert ledger.stop() == 0
    expected_emits = [{"tag": t, "total": totals[t]} for t in range(2000) if t % 50 == 0]
    assert _tagged_emits(ledger.stdout) == expected_emits
    restarts = [line for line in ledger.stderr if "serving on" in line]
    assert len(restarts) == len(kill_at) + 1
    assert any("checkpoint at LSN" in line for line in restarts[1:])


def test_nondeterminism_and_timers_survive_a_kill(home: Path, cluster: Cluster) -> None:
    dice = cluster.start(DICE, "dice", "--checkpoint-seconds", "3600")
    with connect(home) as client:
        rolls = [client.call("dice", "roll") for _ in range(5)]
        before = client.call("dice", "state")
    assert len({r[2] for r in rolls}) == 5  # uuids differ
    dice.kill()
    dice.start()
    with connect(home) as client:
        assert client.call("dice", "state") == before  # replayed to the very same values

    # A durable timer set before a crash fires after it, and the caller gets the one result.
    answers: list[str] = []

    def wait_for_timer() -> None:
        with connect(home, timeout=60) as waiter:
            answers.append(waiter.call("dice", "later", 1.0, key="k"))

    waiting = threading.Thread(target=wait_for_timer, daemon=True)
    waiting.start()
    log = dice.log_dir()
    pause = threading.Event()
    for _ in range(500):  # until the step that set the timer is in the log
        with LogReader(log) as reader:
            if any("tim" in r.value for r in reader.records()):
                break
        pause.wait(0.01)
    dice.kill()
    dice.start()
    waiting.join(60)
    assert answers == ["woke"]
    with connect(home) as client:
        assert client.call("dice", "later", 1.0, key="k") == "woke"  # a retry: no second timer
        final = client.call("dice", "state")
    assert final == [*before, "woke"]
    dice.stop()
    assert dice.stdout.count('"woke"') == 1


def test_reading_the_real_clock_is_caught_at_recovery(home: Path, cluster: Cluster) -> None:
    cheat = cluster.start(CHEAT, "cheat", "--checkpoint-seconds", "3600")
    with connect(home) as client:
        client.call("cheat", "stamp")
    cheat.kill()
    cheat.start(wait=False)
    assert cheat.proc is not None
    assert cheat.proc.wait(30) != 0
    message = "\n".join(cheat.stderr)
    assert "NondeterminismError" in message or "replay diverged" in message
    assert "step 2" in message and "'cheat'" in message
    assert "Traceback" not in message


def test_checkpoints_shorten_recovery_and_a_damaged_one_is_skipped(
    home: Path, cluster: Cluster
) -> None:
    ledger = cluster.start(LEDGER, "ledger", "--checkpoint-seconds", "0.2")
    with connect(home) as client:
        for phase in range(3):  # a checkpoint rides on the first batch after each pause
            for tag in range(phase * 20, phase * 20 + 20):
                client.call("ledger", "add", tag, 1)
            threading.Event().wait(0.3)
        client.call("ledger", "add", 60, 1)
        for tag in range(61, 70):
            client.call("ledger", "add", tag, 1)
    ledger.kill()
    checkpoints = sorted((ledger.log_dir() / "checkpoints").glob("*.ckpt"))
    assert len(checkpoints) >= 2
    ledger.start()
    line = [x for x in ledger.stderr if "serving on" in x][-1]
    assert f"checkpoint at LSN {int(checkpoints[-1].stem)};" in line
    replayed = int(re.search(r"replayed (\d+) steps; recovered in [\d.]+ ms", line).group(1))
    assert replayed == 71 - int(checkpoints[-1].stem)  # start + 70 adds; only those after it
    with connect(home) as client:
        assert client.call("ledger", "state")["tags"] == list(range(70))
    ledger.kill()
    *_older, second, newest = sorted((ledger.log_dir() / "checkpoints").glob("*.ckpt"))
    data = bytearray(newest.read_bytes())
    data[-1] ^= 0xFF
    newest.write_bytes(bytes(data))
    ledger.start()
    assert any("skipped a damaged checkpoint" in line for line in ledger.stderr)
    fallback = [line for line in ledger.stderr if "serving on" in line][-1]
    assert f"checkpoint at LSN {int(second.stem)};" in fallback
    with connect(home) as client:
        assert client.call("ledger", "state")["tags"] == list(range(70))


def test_bad_input_is_an_error_and_the_instance_keeps_running(home: Path, cluster: Cluster) -> None:
    ledger = cluster.start(LEDGER, "ledger", "--checkpoint-seconds", "0.1")
    with connect(home) as client:
        client.call("ledger", "add", 0, 5)
        with pytest.raises(RemoteError) as unknown:
            client.call("ledger", "nope")
        assert unknown.value.type_name == "UnknownMethodError"
        with pytest.raises(RemoteError) as arity:
            client.call("ledger", "add", 1)
        assert arity.value.type_name == "TypeError"
        with pytest.raises(Exception, match="cannot"):
            client.call("ledger", "add", 1, object())
        client.call("ledger", "poison")  # state no checkpoint can store
        threading.Event().wait(0.4)
        client.call("ledger", "add", 1, 5)
        client.call("ledger", "cure")
        assert client.call("ledger", "state") == {"total": 10, "tags": [0, 1]}
    assert any("checkpoint" in line and "skipped" in line for line in ledger.stderr)
    ledger.kill()
    ledger.start()
    with connect(home) as client:
        assert client.call("ledger", "state") == {"total": 10, "tags": [0, 1]}


def test_a_second_process_with_the_same_name_is_refused(home: Path, cluster: Cluster) -> None:
    cluster.start(LEDGER, "ledger")
    result = run_cli("run", LEDGER, "--name", "ledger", home=home, timeout=30)
    assert result.returncode == 2
    assert "already running" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("app", "fragment"),
    [
        ("tests/apps/missing.py:Ledger", "does not exist"),
        ("tests/apps/ledger.py:Missing", "has no class"),
        ("tests/apps/ledger.py", "must be"),
        ("no_such_module_here:App", "cannot import"),
    ],
)
def test_unknown_app_paths_are_one_clear_line(home: Path, app: str, fragment: str) -> None:
    result = run_cli("run", app, "--name", "x", home=home, timeout=30)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_stops_cleanly_and_restart_replays_nothing_lost(
    home: Path, cluster: Cluster
) -> None:
    ledger = cluster.start(LEDGER, "ledger")
    with connect(home) as client:
        for tag in range(10):
            client.call("ledger", "add", tag, 2)
    assert ledger.stop() == 0
    assert any("stopped cleanly" in line for line in ledger.stderr)
    ledger.start()
    with connect(home) as client:
        assert client.call("ledger", "state")["total"] == 20
    assert Home(home).lookup("ledger") is not None


def test_immortals_call_prints_json_and_reports_remote_errors(home: Path, cluster: Cluster) -> None:
    cluster.start(LEDGER, "ledger")
    ok = run_cli("call", "ledger", "add", "1", "5", home=home)
    assert ok.returncode == 0
    assert ok.stdout.strip() == "5"
    same = run_cli("call", "ledger", "add", "2", "5", "--key", "k-1", home=home)
    again = run_cli("call", "ledger", "add", "2", "5", "--key", "k-1", home=home)
    assert same.stdout == again.stdout == "10\n"  # a retry with the same key: executed once
    failed = run_cli("call", "ledger", "add", "\"oops\"", home=home)  # a string: TypeError
    assert failed.returncode == 1
    assert "TypeError" in failed.stderr
    missing = run_cli("call", "nobody", "add", "--timeout", "1", home=home)
    assert missing.returncode == 2
    assert "nobody" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_durability_none_runs_the_same_code_with_no_log(home: Path, cluster: Cluster) -> None:
    ledger = cluster.start(LEDGER, "ledger", "--durability", "none")
    with connect(home) as client:
        assert client.call("ledger", "add", 0, 7) == 7
    assert not (home / "logs" / "ledger").exists()
    ledger.kill()
    ledger.start()
    with connect(home) as client:
        assert client.call("ledger", "state") == {"total": 0, "tags": []}  # unprotected: lost
