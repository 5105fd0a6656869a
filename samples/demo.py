"""What `make demo` runs: the seed's counter, with the Server killed by SIGKILL mid-run.

1. starts the Server, armed to SIGKILL itself right after its first call is durable in its
   log and before the reply is sent (the fourth failure of the design brief);
2. starts the Client, whose main() calls server.inc() twice and emits each result;
3. waits for the Server to die, restarts it (it recovers by replay and resends the reply);
4. shows the Client's output, which is 1, 2 as in a run where nothing failed, and the log.

Everything lives under ./.immortals (the embedded default: no server to start).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOME = Path(".immortals").resolve()  # absolute: the children run in REPO, wherever we were started
APP = "samples/counter/counter.py"


def immortals(*args: str, fault: str = "", out: Path | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO), IMMORTALS_FAULT=fault)
    stdout = open(out, "ab") if out else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        [sys.executable, "-m", "runtime", "--home", str(HOME), *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )


def startup_line(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stderr is not None
    line = proc.stderr.readline().decode().strip()
    if " serving on " not in line:
        raise SystemExit(f"demo: an instance failed to start: {line}")
    return line


def command_name() -> str:
    """How to type the ``immortals`` command here: the venv's script is often not on PATH."""
    script = Path(sys.executable).parent / "immortals"
    if not script.exists():
        return f"{sys.executable} -m runtime"
    if shutil.which("immortals") == str(script):
        return "immortals"
    return os.path.relpath(script)


def say(text: str) -> None:
    print(f"\033[1m==>\033[0m {text}" if sys.stdout.isatty() else f"==> {text}", flush=True)


def main() -> int:
    for name in ("server", "client"):
        shutil.rmtree(HOME / "logs" / name, ignore_errors=True)
    output = HOME / "client-output.txt"
    HOME.mkdir(exist_ok=True)
    output.unlink(missing_ok=True)

    say(
        "starting the Server, armed to SIGKILL itself after logging its first call, before replying"
    )
    server = immortals("run", f"{APP}:Server", "--name", "server", fault="after-fsync:2")
    print("   ", startup_line(server))
    say("starting the Client: main() calls server.inc() twice and emits each result")
    client = immortals("run", f"{APP}:Client", "--name", "client", out=output)
    print("   ", startup_line(client))
    server.wait(30)
    assert server.returncode == -signal.SIGKILL, server.returncode
    say("the Server died by SIGKILL mid-run; restarting it (on a new port)")
    server = immortals("run", f"{APP}:Server", "--name", "server")
    print("   ", startup_line(server))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(output.read_text().splitlines()) < 2:
        time.sleep(0.05)
    lines = output.read_text().split()
    for proc in (client, server):
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    say(f"the Client's output: {', '.join(lines)}   (a failure-free run prints 1, 2)")
    if lines != ["1", "2"]:
        print("demo: unexpected output; see .immortals/logs with `immortals log dump`")
        return 1
    say("the Server's log:")
    subprocess.run(
        [sys.executable, "-m", "runtime", "--home", str(HOME), "log", "info", "server"],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        check=True,
    )
    say("try next:")
    cli = command_name()
    for command, what in (
        ("log dump server", "every step, one a line"),
        ("log dump client --json", "one JSON object per step, for scripts"),
        ("log verify server", "check every frame and checkpoint"),
        ("replay client", "re-execute the client's history offline"),
        ("debug client", "the time-travel debugger (? for keys, q quits)"),
    ):
        print(f"    {cli} {command:<24}  # {what}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
