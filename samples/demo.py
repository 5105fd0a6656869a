"""What `make demo` runs: the seed's counter, with the Server killed by SIGKILL mid-run.

1. starts the Server, armed to SIGKILL itself right after its first call is durable in its
   log and before the reply is sent (the fourth failure of the design brief);
2. starts the Client, whose main() calls server.inc() twice and emits each result;
3. waits for the Server to die, restarts it (it recovers by replay and resends the reply);
4. shows the Client's output, which is 1, 2 as in a run where nothing failed, and the log.

Everything lives in a home of the demo's own, ./.immortals-demo (the embedded registry: no
server to start), never in ./.immortals where your own instances live. Each run starts that home
afresh, but only after checking that it is the demo's (a marker file) and that none of its
instances still runs: the demo deletes nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOME = Path(".immortals-demo").resolve()  # absolute: the children run in REPO, wherever we started
MARKER = HOME / "made-by-the-demo"
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


def fresh_home() -> None:
    """Start the demo's home afresh; refuse (SystemExit) where that could lose anything."""
    if HOME.exists():
        if not MARKER.exists():
            raise SystemExit(
                f"demo: {HOME} exists and was not made by the demo; move it aside and run again"
            )
        status = subprocess.run(
            [sys.executable, "-m", "runtime", "--home", str(HOME), "status", "--json"],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        if status.returncode != 0:
            raise SystemExit(f"demo: cannot tell what runs in {HOME}: {status.stderr.strip()}")
        running = [i["name"] for i in json.loads(status.stdout)["instances"] if i["running"]]
        if running:
            raise SystemExit(
                f"demo: {', '.join(running)} of an earlier demo still run in {HOME}; stop them "
                f"(`{command_name()} --home {shown(HOME)} stop NAME`) and run again"
            )
        shutil.rmtree(HOME)
    HOME.mkdir()
    MARKER.write_text("samples/demo.py made this home; the next `make demo` starts it afresh\n")


def shown(path: Path) -> str:
    """``path`` as the user can type it from where they are."""
    return os.path.relpath(path)


def main() -> int:
    fresh_home()
    output = HOME / "client-output.txt"

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
        if proc.wait(30) != 0:
            print(f"demo: an instance did not stop cleanly (exit {proc.returncode})")
            return 1
    say(f"the Client's output: {', '.join(lines)}   (a failure-free run prints 1, 2)")
    if lines != ["1", "2"]:
        print(f"demo: unexpected output; see {shown(HOME)}/logs with `immortals log dump`")
        return 1
    say("the Server's log:")
    subprocess.run(
        [sys.executable, "-m", "runtime", "--home", str(HOME), "log", "info", "server"],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        check=True,
    )
    say(f"try next (the demo's home is {shown(HOME)}, so each command names it):")
    cli = f"{command_name()} --home {shown(HOME)}"
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
