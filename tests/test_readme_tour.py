"""The README's tour, run top to bottom as written (issue 13, "Done means").

The tour's shell blocks sit between ``<!-- tour -->`` and ``<!-- /tour -->`` markers; this test
joins them into one bash script and runs it from the repository's root, as a reader would
after ``make demo``, with ``set -e`` so that any command that fails fails the test. Only the
interactive debugger (``immortals debug``) is left out of the markers: its behaviour is covered
by the Pilot tests. The script runs in its own session, killed at the end, so an instance it
started never outlives the test.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path

from tests._instances import REPO

README = REPO / "README.md"
BLOCK = re.compile(r"```sh\n(.*?)```", re.S)


def tour_script() -> str:
    text = README.read_text()
    parts = re.findall(r"<!-- tour -->(.*?)<!-- /tour -->", text, re.S)
    assert parts, "README.md has no <!-- tour --> blocks"
    blocks = [block for part in parts for block in BLOCK.findall(part)]
    assert blocks, "the tour's markers hold no sh blocks"
    return "set -e\n" + "\n".join(blocks)


def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    script = tour_script()
    assert (REPO / ".venv" / "bin" / "activate").exists(), "the tour needs make's .venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMMORTALS_")}
    env["TMPDIR"] = str(tmp_path)  # where the tour's mktemp -d lands
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # any instance the tour left running
    assert proc.returncode == 0, out
    lines = out.splitlines()
    assert lines[:2] == ["1", "2"], out  # the client's two emits
    assert "3" in lines and "4" in lines, out  # the calls before and after the crash
    assert lines.index("4") > lines.index("3")
    assert "every order charged exactly once" in out
    assert '"count": 2' in out  # --state-at 3
    assert "diverged, as it should" in out
    assert "damaged" in lines
