"""Every example of docs/GUIDE.md, run as written, checked against what the guide says.

The guide marks each fenced ``python`` and ``sh`` block with ``<!-- guide-test: NAME -->`` (the
convention is stated at the top of its source). ``EXAMPLES`` maps each name to its block's text;
each test below is registered with ``@example(NAME)`` and runs that text:

* an app block is executed as a module and driven through a real coordinator by the in-process
  driver of ``tests/test_app_patterns.py`` (``Run``: the instance is named ``me`` there), or
  written to the file the guide names and started as a real ``immortals run`` process;
* an ``sh`` block is run line by line in a fresh directory (``Shell``): ``immortals`` is
  ``python -m runtime``, ``immortals run`` lines start in the background and wait until the
  instance serves, every other line runs to the end.

``test_every_block_is_marked_and_tested`` fails on a block without a marker and on a marker
without a test, so an example cannot change, or appear, without a test that runs it. Prose that
quotes an output is checked with ``assert_in_guide``.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime._actions import Append
from tests._instances import REPO
from tests.test_app_patterns import Run

GUIDE = REPO / "docs" / "GUIDE.md"
TEXT = GUIDE.read_text()
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.M | re.S)
_MARK = re.compile(r"<!-- guide-test: ([\w.-]+) -->\n\Z")


def _blocks() -> list[tuple[str | None, str, str]]:
    """Every fenced block of the guide: (its marker's name or None, language, text)."""
    found = []
    for match in _FENCE.finditer(TEXT):
        mark = _MARK.search(TEXT, 0, match.start())
        found.append((mark.group(1) if mark else None, match.group(1), match.group(2)))
    return found


EXAMPLES: dict[str, str] = {name: text for name, _lang, text in _blocks() if name is not None}
TESTED: set[str] = set()


def example(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a test as the one that runs the guide's example ``name``."""
    TESTED.add(name)
    return lambda test: test


def load(name: str) -> dict[str, Any]:
    """Execute example ``name`` as a module; its globals."""
    namespace: dict[str, Any] = {"__name__": f"guide_{name.replace('-', '_')}"}
    exec(compile(EXAMPLES[name], f"docs/GUIDE.md:{name}", "exec"), namespace)
    return namespace


def assert_in_guide(text: str) -> None:
    """``text`` is quoted in the guide (compared with runs of whitespace as one space)."""
    flat = " ".join(TEXT.split())
    assert " ".join(text.split()) in flat, text


def test_every_block_is_marked_and_tested() -> None:
    blocks = _blocks()
    names = [name for name, _lang, _text in blocks if name is not None]
    unmarked = [
        text[:60] for name, lang, text in blocks if name is None and lang in ("python", "sh")
    ]
    assert unmarked == [], "blocks without a guide-test marker"
    assert len(names) == len(set(names)), "a marker name is used twice"
    assert set(names) == TESTED, "markers and tests differ"


# -- driving apps ------------------------------------------------------------------------------


def result(run: Run, key: str) -> Any:
    """What the outside call ``key`` returned (an error as ``(False, [type, message, lsn])``)."""
    return run.c.streams.known_result(key)


class Peers:
    """Other instances, played by the test: it sees what ``me`` sent them and answers by hand."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.answered: set[tuple[str, int]] = set()
        self.seq: dict[str, int] = {}

    def calls(self, peer: str) -> list[tuple[int, str, list[Any]]]:
        """The calls sent to ``peer`` not answered yet: (seq, method, args)."""
        return [
            (m[1], m[3], m[4])
            for send in self.run.sent
            if send.peer == peer
            for m in send.messages
            if m[2] == "c" and (peer, m[1]) not in self.answered
        ]

    def reply(self, peer: str, value: Any) -> None:
        """``peer`` answers the oldest call it has not answered with ``value``."""
        seq = self.calls(peer)[0][0]
        self.answered.add((peer, seq))
        self.seq[peer] = self.seq.get(peer, 0) + 1
        self.run.c.receive_messages(peer, [["me", self.seq[peer], "r", seq, True, value]])
        self.run.settle()


def durable_steps_then_crash(run: Run, rounds: int) -> None:
    """Let ``rounds`` appends become durable, releasing nothing else, then crash."""
    for _ in range(rounds):
        for action in run.c.take():
            if isinstance(action, Append):
                run.log.extend(action.records)  # type: ignore[arg-type]
                run.c.append_done(100)
    run.crash()


# -- running real processes --------------------------------------------------------------------


class Shell:
    """Runs the lines of an ``sh`` block in ``cwd``; keeps the instances it started."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.instances: dict[str, subprocess.Popen[bytes]] = {}
        self.env = dict(os.environ, PYTHONPATH=str(REPO))
        self.env.pop("IMMORTALS_HOME", None)

    def block(self, name: str, replace: dict[str, str] | None = None) -> list[Any]:
        """Run every line of block ``name``; the outcome of each (``CompletedProcess``, or the
        stderr path of an instance started in the background)."""
        outcomes = []
        for line in EXAMPLES[name].splitlines():
            for old, new in (replace or {}).items():
                line = line.replace(old, new)
            if line.strip():
                outcomes.append(self.line(line))
        return outcomes

    def line(self, line: str) -> Any:
        words = shlex.split(line, comments=True)
        env = dict(self.env)
        while "=" in words[0]:
            variable, _, value = words.pop(0).partition("=")
            env[variable] = value
        assert words[0] == "immortals", line
        argv = [sys.executable, "-m", "runtime", *words[1:]]
        if "run" in words:
            return self._start(words[words.index("--name") + 1], argv, env)
        return subprocess.run(
            argv, cwd=self.cwd, env=env, capture_output=True, text=True, timeout=60
        )

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> Any:
        out, err = self.cwd / f"{name}.stdout", self.cwd / f"{name}.stderr"
        starts = err.read_text().count(" serving on ") if err.exists() else 0
        with open(out, "ab") as stdout, open(err, "ab") as stderr:
            proc = subprocess.Popen(argv, cwd=self.cwd, env=env, stdout=stdout, stderr=stderr)
        self.instances[name] = proc
        deadline = time.monotonic() + 30
        while err.read_text().count(" serving on ") <= starts:
            if proc.poll() is not None:  # it refused to start
                del self.instances[name]
                return subprocess.CompletedProcess(argv, proc.returncode, "", err.read_text())
            assert time.monotonic() < deadline, f"{name} did not start"
            time.sleep(0.01)
        return err

    def interrupt(self, name: str) -> int:
        """Ctrl-C: SIGINT, and the exit code."""
        proc = self.instances.pop(name)
        proc.send_signal(signal.SIGINT)
        return proc.wait(30)

    def close(self) -> None:
        for proc in self.instances.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    sh = Shell(tmp_path)
    try:
        yield sh
    finally:
        sh.close()


def write(shell: Shell, name: str, filename: str) -> None:
    assert_in_guide(
        f"save it as `{filename}`" if name != "account" else "Save this as `account.py`"
    )
    (shell.cwd / filename).write_text(EXAMPLES[name])


# -- 1. a first app ----------------------------------------------------------------------------


@example("account")
@example("account-shell")
@example("client")
def test_a_first_app_run_called_stopped_and_restarted(
    shell: Shell, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(shell, "account", "account.py")
    serving, deposit, withdraw, refused, balance = shell.block("account-shell")
    assert re.match(r"alice serving on 127\.0\.0\.1:\d+ \(epoch 1\); ", serving.read_text())
    assert (deposit.returncode, deposit.stdout) == (0, "100\n")
    assert (withdraw.returncode, withdraw.stdout) == (0, "70\n")
    assert refused.returncode == 1
    assert refused.stderr == "immortals: alice.withdraw raised ValueError: balance 70 < 500\n"
    assert balance.stdout == "70\n"
    assert shell.interrupt("alice") == 0
    assert "alice stopped cleanly at LSN 5" in serving.read_text()
    assert_in_guide('"alice stopped cleanly at LSN 5": its last step')
    shell.line("immortals run account.py:Account --name alice")  # the same command again
    monkeypatch.chdir(shell.cwd)
    exec(compile(EXAMPLES["client"], "docs/GUIDE.md:client", "exec"), {})  # asserts 95 itself
    assert shell.line("immortals call alice get_balance").stdout == "95\n"  # deposited once


# -- 2. what a handler may do ------------------------------------------------------------------


@example("refused")
def test_a_handler_that_opens_a_file_is_refused() -> None:
    run = Run(load("refused")["Settings"])
    run.call("load_wrong", key="wrong")
    ok, (type_name, message, lsn) = result(run, "wrong")
    assert (ok, type_name, lsn) == (False, "SandboxError", 2)
    assert_in_guide(f"`load_wrong` fails with `SandboxError: {message}`")
    run.call("load", '{"debug": true}', key="right")
    assert result(run, "right") == (True, '{"debug": true}')


@example("print")
def test_print_goes_to_tagged_stderr_and_emit_to_stdout(shell: Shell) -> None:
    (shell.cwd / "greeter.py").write_text(EXAMPLES["print"])
    err = shell.line("immortals run greeter.py:Greeter --name greeter")
    assert shell.line("immortals call greeter hello '\"world\"'").stdout == '"ok"\n'
    assert shell.interrupt("greeter") == 0
    assert "[greeter LSN 2] greeting world\n" in err.read_text()
    assert (shell.cwd / "greeter.stdout").read_text() == '"hello world"\n'
    shell.line("immortals run greeter.py:Greeter --name greeter")  # recovery replays step 2
    assert shell.interrupt("greeter") == 0
    assert err.read_text().count("greeting world") == 1  # quiet in replay
    assert (shell.cwd / "greeter.stdout").read_text() == '"hello world"\n'  # emitted once


# -- 3. time, randomness and ids ---------------------------------------------------------------


@example("raffle")
def test_the_raffle_recovers_the_same_tickets_times_and_winner() -> None:
    raffle = load("raffle")["Raffle"]
    run = Run(raffle)
    for who in ("ann", "bob", "cid"):
        run.call("enter", who, key=who)
    run.call("draw", key="draw")
    run.wait(1.0)
    assert result(run, "draw") is None  # still in its drum roll
    before = run.state
    run.crash()  # killed mid-sleep
    assert run.state == before
    assert {t["at"] for t in before["tickets"].values()} == {1000.0}  # self.now(), recorded
    run.wait(1.5)  # the durable timer fires after the restart
    ok, winner = result(run, "draw")
    assert ok and winner in ("ann", "bob", "cid") and run.state["winner"] == winner
    after = run.state
    run.crash()
    assert run.state == after


# -- 4. calling other instances ----------------------------------------------------------------


@example("bank")
@example("bank-shell")
def test_the_bank_moves_money_between_accounts(shell: Shell) -> None:
    from replayer import Replayer

    write(shell, "account", "account.py")
    write(shell, "bank", "bank.py")
    _a, _b, _bank, deposit, done, refused, balance, step = shell.block("bank-shell")
    assert deposit.stdout == "100\n"
    assert done.stdout == '"done"\n'
    assert refused.stdout == '"refused: balance 70 < 500"\n'
    assert balance.stdout == "30\n"
    assert step.returncode == 0 and "withdraw" in step.stdout and "ValueError" in step.stdout
    for name in ("alice", "bob", "bank"):
        assert shell.interrupt(name) == 0
    with Replayer(shell.cwd / ".immortals" / "logs" / "bank") as replay:
        state = replay.state_at(replay.last_lsn)
    assert state["refused"] == [["alice", "ValueError", "balance 70 < 500", 4]]
    assert state["done"] == [["alice", "bob", 30]]
    assert_in_guide('stores `["alice", "ValueError", "balance 70 < 500", 4]`: alice\'s step 4')


# -- 5. posting to yourself --------------------------------------------------------------------


@example("summer")
def test_a_job_posted_to_itself_in_chunks_runs_each_chunk_once() -> None:
    summer = load("summer")["Summer"]
    run = Run(summer)
    run.call("start_job", 1000)
    assert run.state == {"total": 499500, "finished": True}
    assert run.sent == []  # never the network
    assert len([i for i in run.inputs("call") if i["m"] == "add"]) == 10

    run = Run(summer)
    run.settle()
    run.c.outside_call("caller", {"t": "call", "id": "job", "m": "start_job", "a": [1000]})
    durable_steps_then_crash(run, 4)  # a few chunks ran, then SIGKILL
    assert not run.state["finished"]
    run.settle()
    assert run.state == {"total": 499500, "finished": True}
    assert len([i for i in run.inputs("call") if i["m"] == "add"]) == 10


# -- 6. combinators ----------------------------------------------------------------------------


@example("quotes")
def test_gather_first_and_timeout_over_two_suppliers() -> None:
    run = Run(load("quotes")["Buyer"])
    peers = Peers(run)
    run.call("best_price", "widget", key="best")
    assert [m for _s, m, _a in peers.calls("acme") + peers.calls("bolt")] == ["price", "price"]
    peers.reply("acme", 12)
    assert result(run, "best") is None  # gather waits for both
    peers.reply("bolt", 10)
    assert result(run, "best") == (True, 10)

    run.call("fastest", "widget", key="fast")
    peers.reply("bolt", 10)
    assert result(run, "fast") == (True, ["bolt", 10])
    peers.reply("acme", 12)  # no longer waited for: dropped
    assert run.c.executor.early == {} and run.c.replica.quiescent

    run.call("price_or_none", "widget", key="bounded")
    run.wait(3.0)
    assert result(run, "bounded") == (True, None)
    peers.reply("acme", 12)  # late: dropped, durably
    assert run.c.executor.early == {}

    run.call("patient", "widget", key="patient")
    run.wait(3.0)
    assert run.state["log"] == ["acme is slow"] and result(run, "patient") is None
    peers.reply("acme", 12)
    assert result(run, "patient") == (True, 12)
    run.crash()  # and all of it replays
    assert run.state["log"] == ["acme is slow"]


# -- 7. timer callbacks ------------------------------------------------------------------------


@example("monitor")
def test_periodic_work_with_timer_callbacks() -> None:
    run = Run(load("monitor")["Monitor"])
    run.wait(185)
    assert run.state["checks"] == 3
    assert run.c.replica.quiescent  # waiting for a callback suspends nothing
    run.crash()
    run.wait(60)
    assert run.state["checks"] == 4  # survived the crash, fired once
    run.call("pause", key="pause")
    assert result(run, "pause") == (True, True)
    run.wait(300)
    assert run.state["checks"] == 4
    run.call("remind_at", run.clock + 10, "tea", key="tea")
    run.call("remind_at", 0.0, "past", key="past")  # in the past: at once
    run.wait(0)
    assert run.state["reminders"] == ["past"]
    run.wait(11)
    assert run.state["reminders"] == ["past", "tea"]


@example("loop-antipattern")
def test_a_loop_in_main_blocks_checkpoints_and_holds_calls() -> None:
    run = Run(load("loop-antipattern")["BadMonitor"], checkpoint_seconds=60)
    run.wait(61)
    assert run.state["checks"] == 1 and not run.c.replica.quiescent
    run.c.timer_fired("checkpoint")  # a checkpoint falls due...
    run.settle()
    run.call("get_checks", key="held")
    assert result(run, "held") is None  # ...so new calls are held back
    run.c.advance(run.clock + 5.0)  # up to 5 s (quiescence_timeout)
    run.c.timer_fired("hold")
    run.settle()
    assert result(run, "held") == (True, 1)
    assert all(append.checkpoint is None for append in run.appends)
    (warning,) = run.warnings
    quoted = "a handler stays suspended mid-await (a main() that never returns?)"
    assert warning.startswith("me: no checkpoint for ") and quoted in warning
    assert_in_guide(f'"no checkpoint for N s: {quoted} ...".')


# -- 8. durable side effects -------------------------------------------------------------------


@pytest.fixture
def payments() -> Iterator[Any]:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "guide_charge_service", REPO / "samples" / "charge" / "service.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    server = module.serve(0)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@example("charge")
def test_the_shop_charges_once_through_an_idempotent_service(payments: Any) -> None:
    import json
    import urllib.request

    def service() -> dict[str, Any]:
        with urllib.request.urlopen(service_url, timeout=5) as answer:
            seen: dict[str, Any] = json.load(answer)
            return seen

    namespace = load("charge")
    service_url = namespace["PAYMENTS"] = f"http://127.0.0.1:{payments.server_address[1]}"
    run = Run(namespace["Shop"])
    run.call("buy", "o-1", 500, key="b1")
    ok, receipt = result(run, "b1")
    assert ok and receipt == {"receipt": "r-1", "order": "o-1", "amount": 500}
    run.crash()  # replay: the recorded receipt, no second request
    run.call("buy", "o-1", 500, key="b2")  # asked again: the shop's own rule
    assert result(run, "b2") == (True, receipt)
    assert service()["requests"] == 1

    run.c.outside_call("caller", {"t": "call", "id": "b3", "m": "buy", "a": ["o-2", 700]})
    run.settle(run_effects=False)
    (effect,) = run.effects
    assert effect.request.key == "me/5/0"  # instance / LSN / position
    run.run_one_effect()  # the service charged...
    run.c.take()  # ...and the shop died before the outcome was durable
    run.crash()
    run.settle()  # the effect runs again, under the same key
    seen = service()
    assert seen["requests_by_key"]["me/5/0"] == 2 and len(seen["charges"]) == 2
    assert run.state["receipts"]["o-2"]["receipt"] == "r-2"  # charged once

    attempts: list[str] = []
    real = namespace["charge_card"]

    def counted(key: str, order: str, amount: int) -> Any:
        attempts.append(key)
        return real(key, order, amount)

    namespace["charge_card"] = counted
    namespace["PAYMENTS"] = "http://127.0.0.1:9"  # nothing listens there
    run.call("buy", "o-3", 900, key="b4")
    assert result(run, "b4") == (True, None)
    assert len(attempts) == 4  # retries=3
    (failure,) = run.state["failures"]
    assert failure.startswith("o-3: URLError: ")
    assert_in_guide("after 4 attempts, `buy` returns `None` and `failures` says why")


# -- 9. errors ---------------------------------------------------------------------------------


@example("rollback")
def test_an_exception_keeps_the_changes_made_before_it() -> None:
    run = Run(load("rollback")["Cart"])
    run.call("add_all_wrong", ["tea", "", "jam"], key="wrong")
    assert result(run, "wrong") == (False, ["ValueError", "empty item", 2])
    assert run.state == {"items": ["tea"]}
    run.call("add_all", ["milk", ""], key="right")
    assert result(run, "right") == (False, ["ValueError", "empty item", 3])
    run.crash()
    assert run.state == {"items": ["tea"]}


def test_failed_posts_and_timer_callbacks_are_warned_about_as_the_guide_says() -> None:
    from runtime import Immortal, rpc

    class Poster(Immortal):
        async def main(self) -> None:
            self.ref(self.instance_name).deposit.post(-1)
            self.call_later(1, "later")

        @rpc
        def deposit(self, amount: int) -> None:
            raise ValueError("negative")

        @rpc
        def later(self) -> None:
            raise KeyError("gone")

    run = Run(Poster)
    run.wait(2)
    assert run.warnings == [
        "me: step 2: post deposit() from me raised ValueError: negative",
        "me: step 3: timer callback (timer 1) raised KeyError: 'gone'",
    ]
    assert_in_guide("`shop: step 7: post deposit() from bank raised ValueError: ...`")
    assert_in_guide("`shop: step 9: timer callback (timer 2) raised KeyError: ...`")


# -- 10. when code changes ---------------------------------------------------------------------


@example("account-v2")
@example("upgrade-shell")
def test_replay_verify_tells_whether_new_code_replays(shell: Shell) -> None:
    write(shell, "account", "account.py")
    write(shell, "account-v2", "account_v2.py")
    _carol, deposit, withdraw, same, new, tested = shell.block("upgrade-shell")
    assert (deposit.stdout, withdraw.stdout) == ("100\n", "70\n")
    assert same.returncode == 0 and "reproduces all 3 steps 1..3" in same.stdout
    assert new.returncode == 1
    assert "step 3: results: recorded" in new.stdout and "step 2" not in new.stdout
    assert re.search(r"recorded \[\[.*, true, 70\]\], replay \[\[.*, true, 69\]\]", new.stdout)
    assert tested.returncode == 1 and re.search(r"new code:\s+account_v2.py", tested.stdout)
    assert "if amount + FEE > self.balance" in tested.stdout  # where the versions part
    assert shell.interrupt("carol") == 0


@example("restart-upgrade-shell")
def test_a_restart_with_changed_code_upgrades_and_history_still_replays(shell: Shell) -> None:
    test_replay_verify_tells_whether_new_code_replays(shell)
    _run, withdraw, statement, verify = shell.block("restart-upgrade-shell")
    assert withdraw.stdout == "59\n"
    assert statement.stdout == "[100, -30, -11]\n"
    assert verify.returncode == 0, verify.stdout + verify.stderr
    upgrade_line = [line for line in _run.read_text().splitlines() if ": upgrade sha256:" in line]
    assert upgrade_line and "2 the same, 1 differ" in upgrade_line[-1]


# -- 11. homes and names -----------------------------------------------------------------------


@example("home-shell")
def test_homes_and_names(shell: Shell) -> None:
    write(shell, "account", "account.py")
    home = str(shell.cwd / "guide-home")
    _dave, deposit, info, bad = shell.block("home-shell", {"/tmp/guide-home": home})
    assert deposit.stdout == "5\n"
    assert info.returncode == 0 and "account.py:Account" in info.stdout
    assert "LSNs          1..2" in info.stdout
    assert not (shell.cwd / ".immortals" / "logs" / "dave").exists()
    assert (Path(home) / "logs" / "dave").is_dir()
    assert bad.returncode == 2
    assert bad.stderr.startswith("immortals: error: bad instance name 'dave smith': a name is ")
    from runtime._schema import NAME_RULE

    assert NAME_RULE in bad.stderr
    assert_in_guide(NAME_RULE.replace("'.', '_' or '-'", "`.`, `_` or `-`"))


def test_a_start_after_a_checkpoint_does_not_prove_that_new_code_replays(shell: Shell) -> None:
    write(shell, "account", "account.py")
    write(shell, "account-v2", "account_v2.py")
    shell.line("immortals run account.py:Account --name erin --checkpoint-seconds 0.1")
    assert shell.line("immortals call erin deposit 100").stdout == "100\n"
    assert shell.line("immortals call erin withdraw 30").stdout == "70\n"
    time.sleep(0.3)
    shell.line("immortals call erin get_balance")  # this step's append carries a checkpoint
    assert shell.interrupt("erin") == 0
    started = shell.line("immortals run account_v2.py:Account --name erin")
    lines = started.read_text().splitlines()
    assert "; checkpoint at LSN 4; replayed 0 steps" in lines[-1]
    assert any(": upgrade sha256:" in line and "no recorded steps" in line for line in lines)
    assert shell.interrupt("erin") == 0
    recorded = shell.line("immortals replay erin --verify")  # each step with its own code
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    verify = shell.line("immortals replay erin --verify --app account_v2.py:Account")
    assert verify.returncode == 1 and "step 3: results" in verify.stdout
    assert_in_guide("re-executes the steps since the last checkpoint with the new code")
