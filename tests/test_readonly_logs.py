"""An archived log is inspectable: every read-only command works on a copy nobody may write.

Two ways to be sure nothing writes. Where the kernel enforces it (not root, or root inside a user
namespace made with ``unshare --user``, where a ``chmod -R a-w`` directory is really read-only),
the commands run as subprocesses. Root ignores write bits, so in-process tests make ``os.access``
say "not writable" for the archive (what the code asks before writing) and check that no file
under it was created, changed or removed: the file list, sizes and mtimes before and after.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from logformat import LogReader
from replayer import Replayer
from tests._instances import REPO

COUNTER = Path(__file__).parent / "fixtures" / "debugger" / "counter"  # 241 steps, 2 checkpoints

Listing = dict[str, tuple[int, int]]


def listing(root: Path) -> Listing:
    """Every file and directory under ``root``: (size, mtime in ns)."""
    out = {".": (0, root.stat().st_mtime_ns)}
    for path in sorted(root.rglob("*")):
        st = path.stat()
        out[str(path.relative_to(root))] = (st.st_size if path.is_file() else 0, st.st_mtime_ns)
    return out


def archive(tmp_path: Path, *, with_index: bool) -> Path:
    """A copy of the counter log (with the index and snapshots a reader leaves, if asked), made
    read-only with ``chmod -R a-w``."""
    log = tmp_path / "archive" / "counter"
    shutil.copytree(COUNTER, log)
    if with_index:
        with Replayer(log, spill=True, snapshot_every=50) as r:
            r.verify()  # leaves index/ and replay-cache/ beside the log, as real use does
        assert (log / "index").is_dir() and (log / "replay-cache").is_dir()
    subprocess.run(["chmod", "-R", "a-w", str(log.parent)], check=True)
    return log


@pytest.fixture(params=[True, False], ids=["with-index", "no-index"])
def archived(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    log = archive(tmp_path, with_index=request.param)
    yield log
    subprocess.run(["chmod", "-R", "u+w", str(tmp_path)], check=True)  # let pytest clean up


@pytest.fixture
def not_writable(archived: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``os.access`` answers as it would for a user who may not write the archive (also as root)."""
    real = os.access
    top = archived.parent.resolve()

    def access(path: str | os.PathLike[str], mode: int, **kwargs: object) -> bool:
        inside = Path(os.path.abspath(path)).resolve().is_relative_to(top)
        if inside and mode & os.W_OK:
            return False
        return real(path, mode, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)
    return archived


def test_the_log_reader_reads_without_writing(not_writable: Path) -> None:
    before = listing(not_writable)
    with LogReader(not_writable) as reader:
        assert reader.last_lsn == 241
        assert [r.lsn for r in reader.records(100, 102)] == [100, 101, 102]
        assert reader.read(200).value["in"]["m"] == "inc"
        assert [c.lsn for c in reader.checkpoints()] == [101, 201]
        assert reader.stats().frames == 241
        assert reader.seek_time(reader.read(150).wall_ns) == 150
    assert listing(not_writable) == before


def test_the_replayer_keeps_its_snapshots_off_the_log(not_writable: Path) -> None:
    before = listing(not_writable)
    with Replayer(not_writable, spill=True, snapshot_every=50) as first:
        assert first.verify().ok
        assert first.state_at(120) == {"count": 119}
    with Replayer(not_writable, spill=True, snapshot_every=50) as second:
        assert len(second.cache) >= 4  # the first one's snapshots, from a private folder
        assert second.find(lambda state: state["count"] == 60, start=0) == 61
    assert listing(not_writable) == before


def test_the_debugger_opens_and_indexes_without_writing(not_writable: Path) -> None:
    from debugger import DebuggerApp
    from tests.test_debugger import SIZE, keys, settle

    before = listing(not_writable)

    async def session() -> None:
        app = DebuggerApp(not_writable)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert app.history is not None and app.history.count == 241
            await keys(pilot, "G")
            assert app.view is not None and app.view.state == {"count": 240}
            assert not [n for n in app._notifications if n.severity == "error"]

    asyncio.run(session())
    assert listing(not_writable) == before


# -- the commands, where the kernel refuses writes ------------------------------------------------


def _unprivileged() -> list[str] | None:
    """A command prefix under which write bits are enforced, or None if there is none here."""
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    probe = subprocess.run([unshare, "--user", "true"], capture_output=True)
    return [unshare, "--user"] if probe.returncode == 0 else None


PREFIX = _unprivileged()
enforced = pytest.mark.skipif(
    PREFIX is None, reason="root without user namespaces: covered by the os.access tests above"
)


def run(*command: str) -> subprocess.CompletedProcess[str]:
    assert PREFIX is not None
    return subprocess.run(
        [*PREFIX, *command],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )


@enforced
@pytest.mark.parametrize(
    ("command", "options", "expect"),
    [
        ("log info", [], "241"),
        ("log dump", ["--from", "5", "--to", "6"], "inc"),
        ("replay", ["--to", "3"], 'state after step 3: {"count": 2}'),
        ("replay", ["--verify"], "reproduces all 241 steps"),
        ("replay", ["--state-at", "150"], '"count": 149'),
    ],
    ids=["info", "dump", "replay", "replay-verify", "state-at"],  # `log verify` reads no index
)
def test_read_only_commands_work_on_an_archived_log(
    archived: Path, command: str, options: list[str], expect: str
) -> None:
    before = listing(archived)
    done = run(sys.executable, "-m", "runtime", *command.split(), str(archived), *options)
    assert done.returncode == 0, done.stderr
    assert expect in done.stdout
    assert "Traceback" not in done.stderr
    assert listing(archived) == before


@enforced
def test_the_debugger_works_on_an_archived_log(archived: Path) -> None:
    before = listing(archived)
    script = textwrap.dedent(
        """
        import asyncio, sys
        from debugger import DebuggerApp
        from tests.test_debugger import SIZE, keys, settle

        async def main():
            app = DebuggerApp(sys.argv[1])
            async with app.run_test(size=SIZE) as pilot:
                await settle(pilot)
                await keys(pilot, "G")
                print(app.history.count, app.view.state)
                print([n.message for n in app._notifications if n.severity == "error"])

        asyncio.run(main())
        """
    )
    done = run(sys.executable, "-c", script, str(archived))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["241 {'count': 240}", "[]"]
    assert listing(archived) == before
