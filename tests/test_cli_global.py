"""The ``immortals`` command as a whole: global options, its assembly, the layering it keeps.

Most tests call ``main([...])`` in-process; running an instance and the replay/debug commands
through ``python -m runtime`` use subprocesses, as users and the crash tests do.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points, version
from pathlib import Path

import pytest

from runtime import CallTimeoutError, InstanceError, connect
from runtime._home import Home, InstanceRecord
from runtime.cli import ENTRY_POINT_GROUP, build_parser, main
from tests.replaylog import Recorder

REPO = Path(__file__).resolve().parent.parent
COUNTER = "samples/counter/counter.py:Server"


def _module(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m runtime ARGS`` from the checkout, with no --home put in front."""
    return subprocess.run(
        [sys.executable, "-m", "runtime", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(env or os.environ, PYTHONPATH=str(REPO)),
        cwd=REPO,
    )


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    """A home holding instance ``server`` (the counter) with two calls in its log."""
    home = tmp_path / "home"
    rec = Recorder(home / "logs" / "server", COUNTER)
    rec.call("inc")
    rec.call("inc")
    rec.close()
    return home


def _choices(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    raise AssertionError("no subcommands")


# -- --home before or after the subcommand, and from the environment ------------------------------


def test_run_accepts_home_after_the_subcommand(tmp_path: Path) -> None:
    home = tmp_path / "home"
    err = tmp_path / "server.stderr"
    command = [sys.executable, "-m", "runtime", "run", COUNTER, "--name", "server"]
    with open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [*command, "--home", str(home)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            cwd=REPO,
        )
    try:
        deadline = time.monotonic() + 30
        while " serving on " not in err.read_text():
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "the instance did not start"
            time.sleep(0.02)
        registry = Home(home)
        record = registry.lookup("server")
        registry.close()
        assert record is not None, "not registered under the --home given after `run`"
        assert f"serving on {record.address} " in err.read_text()
    finally:
        proc.terminate()
        proc.wait(30)
    assert (home / "logs" / "server").is_dir()


def test_log_info_accepts_home_after_the_subcommand(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["log", "info", "server", "--json", "--home", str(recorded)]) == 0
    assert json.loads(capsys.readouterr().out)["instance"] == "server"


def test_the_home_after_the_subcommand_wins(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = str(tmp_path / "elsewhere")
    assert main(["--home", elsewhere, "log", "info", "server", "--home", str(recorded)]) == 0
    capsys.readouterr()
    assert main(["--home", str(recorded), "log", "info", "server", "--home", elsewhere]) == 2
    assert "elsewhere" in capsys.readouterr().err


def test_immortals_home_is_the_default(
    recorded: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IMMORTALS_HOME", str(recorded))
    assert main(["log", "info", "server", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["records"] >= 2
    monkeypatch.delenv("IMMORTALS_HOME")
    monkeypatch.chdir(recorded.parent)  # ./.immortals is the last default: nothing is there
    assert main(["log", "info", "server"]) == 2
    assert ".immortals" in capsys.readouterr().err


def test_replay_and_debug_work_through_python_m_runtime_with_home_after(recorded: Path) -> None:
    result = _module("replay", "server", "--home", str(recorded), "--state-at", "3")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"count": 2}
    env = dict(os.environ, IMMORTALS_HOME=str(recorded))
    verify = _module("replay", "server", "--verify", env=env)
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.startswith("ok: ")
    debug = _module("debug", "--help")
    assert debug.returncode == 0, debug.stderr
    assert "--home DIR" in debug.stdout


# -- --version, unknown commands, how the command is assembled -----------------------------------


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"immortals {version('immortals')}\n"
    assert version("immortals") == "0.1.0"


def test_an_unknown_subcommand_is_one_line_exit_2() -> None:
    result = _module("frobnicate")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("immortals: error: ") and "frobnicate" in lines[0]


def test_commands_come_from_entry_points_the_runtimes_first() -> None:
    assert _choices(build_parser()) == [
        "run",
        "call",
        "status",
        "stop",
        "log",
        "debug",
        "replay",
        "upgrade",
    ]


def test_a_command_that_fails_to_load_is_named_and_the_rest_still_work(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ghost = EntryPoint("ghost", "no_such_package.cli:add_parser", ENTRY_POINT_GROUP)
    warnings: list[str] = []
    parser = build_parser([*entry_points(group=ENTRY_POINT_GROUP), ghost], warnings.append)
    assert len(warnings) == 1
    assert "`ghost`" in warnings[0] and "no_such_package" in warnings[0]
    assert "ghost" not in _choices(parser)
    args = parser.parse_args(["log", "info", "server", "--home", str(recorded)])
    assert args.handler(args) == 0


def test_a_bare_checkout_still_offers_the_runtimes_commands() -> None:
    parser = build_parser([], warn=lambda line: pytest.fail(line))
    assert _choices(parser) == ["run", "call", "status", "stop", "log"]
    assert parser.epilog and "pip install -e ." in parser.epilog


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "app.py:A", "--name", "a"],
        ["--home", "h", "stop", "a"],
        ["--home=h", "call", "a", "m"],
    ],
)
def test_a_command_line_loads_only_the_group_of_its_command(argv: list[str]) -> None:
    """A restart's time to serving is mostly imports: `run` loads neither the replayer, the
    upgrade tools, the debugger nor the other runtime groups."""
    code = (
        "import sys\n"
        "from runtime.cli import build_parser\n"
        f"parser = build_parser(argv={argv!r})\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('replayer', 'upgrade', 'debugger') or m.startswith('runtime.cli_'))\n"
        "print(' '.join(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    group = {"run": "run", "stop": "status", "call": "call"}[
        next(a for a in argv if a[0] != "-" and a != "h")
    ]
    assert done.stdout.split() == [f"runtime.cli_{group}"]


def test_help_and_an_unknown_command_still_see_every_group(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("run", "stop", "replay", "debug", "upgrade"))
    assert main(["bogus"]) == 2
    assert "choose from 'run', 'call', 'status', 'stop', 'log'" in capsys.readouterr().err


def test_the_runtime_never_imports_the_packages_above_it() -> None:
    above = {"replayer", "debugger", "upgrade"}
    offending = []
    for path in sorted((REPO / "runtime").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offending += [
                f"{path.relative_to(REPO)}:{node.lineno} imports {n}"
                for n in names
                if n.split(".")[0] in above
            ]
    assert not offending, offending


# -- a call that gets no answer ------------------------------------------------------------------


@pytest.fixture
def silent_address() -> Iterator[tuple[str, int]]:
    """A TCP server that accepts connections and never says a word."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[:2]
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        server.close()


def test_a_call_nobody_answers_raises_call_timeout_error(
    tmp_path: Path, silent_address: tuple[str, int]
) -> None:
    home = Home(tmp_path / "home")
    host, port = silent_address
    home.register(
        InstanceRecord(
            name="mute",
            host=host,
            port=port,
            epoch=1,
            log_dir=str(home.path / "logs" / "mute"),
            app=COUNTER,
            code_version="test",
            pid=os.getpid(),
            started=time.time(),
        )
    )
    started = time.monotonic()
    with (
        connect(home, timeout=0.5) as client,
        pytest.raises(CallTimeoutError, match=r"mute\.inc got no answer within 0\.5 s") as caught,
    ):
        client.call("mute", "inc", key="k-1")
    assert time.monotonic() - started < 1.5  # no attempt outlives the call's own timeout
    assert isinstance(caught.value, InstanceError)  # callers catching InstanceError still do
    message = str(caught.value)
    assert "immortals log info mute" in message and "'k-1'" in message
    home.close()
