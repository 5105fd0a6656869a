"""Start, kill and restart real instance processes for crash tests.

Output goes to files, not pipes: an instance that emits a lot must never block on a full pipe
that the test is not reading at that moment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO))


class Instance:
    """One ``immortals run`` process (restartable); stdout and stderr kept across restarts."""

    def __init__(self, home: Path, app: str, name: str, *extra: str, label: str = "") -> None:
        """``label`` names its output files (``LABEL.stdout``; default: the name), for several
        processes of one instance (a primary and its standbys)."""
        self.home = home
        self.app = app
        self.name = name
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._out = home.parent / f"{label or name}.stdout"
        self._err = home.parent / f"{label or name}.stderr"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "runtime",
            "--home",
            str(self.home),
            "run",
            self.app,
            "--name",
            self.name,
            *self.extra,
        ]

    def start(self, *, wait: bool = True, timeout: float = 30.0, fault: str = "") -> None:
        """Start (again); ``fault`` arms IMMORTALS_FAULT for this start only."""
        env = dict(_env(), IMMORTALS_FAULT=fault) if fault else _env()
        with open(self._out, "ab") as out, open(self._err, "ab") as err:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=err, env=env, cwd=REPO)
        self.starts += 1
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> str:
        """Block until this start's startup line appears on stderr; return it."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = [line for line in self.stderr if " serving on " in line]
            if len(lines) >= self.starts:
                return lines[-1]
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited before serving: {self.stderr[-5:]}")
            time.sleep(0.01)
        raise AssertionError(f"{self.name} did not start within {timeout} s")

    def wait_for_line(self, text: str, timeout: float = 30.0) -> str:
        """Block until a line of this instance's stderr holds ``text`` (a standby following,
        a takeover serving); that line. Fails if the process exits first."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.stderr if text in line]
            if found:
                return found[0]
            assert self.proc is not None and self.proc.poll() is None, self.stderr[-5:]
            assert time.monotonic() < deadline, (
                f"no {text!r} within {timeout} s: {self.stderr[-3:]}"
            )
            time.sleep(0.005)

    def kill(self) -> None:
        """SIGKILL, and wait until the process is gone."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM (a clean stop); returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    @property
    def stdout(self) -> list[str]:
        return self._out.read_text().splitlines() if self._out.exists() else []

    @property
    def stderr(self) -> list[str]:
        return self._err.read_text().splitlines() if self._err.exists() else []

    def log_dir(self) -> Path:
        return self.home / "logs" / self.name


class Cluster:
    """The instances of one test's home; every one still running is killed at the end."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.instances: list[Instance] = []

    def add(self, app: str, name: str, *extra: str, label: str = "") -> Instance:
        instance = Instance(self.home, app, name, *extra, label=label)
        self.instances.append(instance)
        return instance

    def start(self, app: str, name: str, *extra: str) -> Instance:
        instance = self.add(app, name, *extra)
        instance.start()
        return instance

    def stop_all(self) -> None:
        for instance in self.instances:
            instance.ensure_stopped()


def run_cli(*args: str, home: Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        cwd=REPO,
    )
