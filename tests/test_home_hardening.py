"""The home directory refuses what would corrupt it or leak it: bad instance names, weak or
exposed secrets, a damaged or full registry, each with one line that says what to do."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import lmdb
import msgpack
import pytest

import runtime._registry as registry_module
from runtime import InstanceError, RegistryError, SecretError
from runtime._home import EPOCHS_DB, RECORDS_DB, Home, InstanceRecord
from runtime._schema import is_valid_name
from runtime.cli import main
from tests._instances import REPO, run_cli

COUNTER = "samples/counter/counter.py:Server"


def _record(name: str, epoch: int = 1) -> InstanceRecord:
    return InstanceRecord(
        name=name,
        host="127.0.0.1",
        port=1,
        epoch=epoch,
        log_dir=f"/nowhere/{name}",
        app=COUNTER,
        code_version="test",
        pid=os.getpid(),
        started=time.time(),
    )


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    h = Home(tmp_path / "home")
    yield h
    h.close()


# -- item 12: instance names --------------------------------------------------------------------

GOOD_NAMES = [
    "server",
    "x",
    "c1-calls-server-5",  # the simulator's who-kind-target-count names
    "client-calls-server-12",
    "tally-friend",
    "Ledger_2.backup",
    "9lives",
    "a" * 63,
]
BAD_NAMES = [
    "",
    "epoch:foo",
    "a/b",
    ".",
    "..",
    ".hidden",
    "-x",
    "_x",
    "a b",
    "a\nb",
    "server\n",
    "caf\u00e9",
    "a\0b",
    "a" * 64,
]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_names_in_use_stay_valid(home: Home, name: str) -> None:
    assert is_valid_name(name)
    assert home.log_dir(name) == home.path / "logs" / name
    assert home.lookup(name) is None
    assert home.next_epoch(name) == 1
    home.register(_record(name))
    assert home.require(name).name == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_bad_name_is_refused_everywhere_it_enters(home: Home, name: str) -> None:
    assert not is_valid_name(name)
    for enter in (
        home.log_dir,
        home.lookup,
        home.require,
        home.next_epoch,
        lambda n: home.register(_record(n)),
    ):
        with pytest.raises(InstanceError, match="a letter or digit, then up to 62") as caught:
            enter(name)
        assert "\n" not in str(caught.value).replace(repr(name), "")


def test_epoch_counters_and_records_cannot_collide(home: Home) -> None:
    """The bug: registering 'epoch:foo' overwrote foo's epoch counter, and foo never restarted."""
    assert home.next_epoch("foo") == 1
    home.register(_record("foo"))
    with pytest.raises(InstanceError):
        home.register(_record("epoch:foo"))
    assert home.next_epoch("foo") == 2
    assert [r.name for r in home.instances()] == ["foo"]
    home.close()
    # Records and reservations live in named databases; the main one holds nothing else. The
    # epoch of a name is a chain of ticket files of its own.
    with lmdb.open(str(home.path / "registry"), max_dbs=4) as env:
        with env.begin() as txn:
            names = sorted(key for key, _ in txn.cursor())
            assert names == [b":epochs", b":leases", b":records", b":standbys"]
        records = env.open_db(b":records")
        with env.begin() as txn:
            assert [key for key, _ in txn.cursor(records)] == [b"foo"]
    assert sorted(os.listdir(home.path / "registry" / "roles" / "foo")) == ["after-0", "after-1"]


def _old_layout(path: Path, entries: dict[bytes, bytes]) -> None:
    """A registry as the previous version wrote it: everything in lmdb's main database."""
    path.mkdir(parents=True)
    with lmdb.open(str(path), max_dbs=1) as env, env.begin(write=True) as txn:
        for key, value in entries.items():
            txn.put(key, value)


def test_a_registry_in_the_previous_layout_is_migrated_on_first_open(tmp_path: Path) -> None:
    from dataclasses import asdict

    registry = tmp_path / "home" / "registry"
    foo, bar = _record("foo", epoch=3), _record("bar", epoch=1)
    _old_layout(
        registry,
        {
            b"foo": msgpack.packb(asdict(foo)),
            b"epoch:foo": b"3",
            b"bar": msgpack.packb(asdict(bar)),
            b"epoch:bar": b"1",
        },
    )
    home = Home(tmp_path / "home")
    try:
        assert home.lookup("foo") == foo
        assert sorted(r.name for r in home.instances()) == ["bar", "foo"]
        assert home.next_epoch("foo") == 4
        assert home.next_epoch("bar") == 2
    finally:
        home.close()
    with lmdb.open(str(registry), max_dbs=4) as env, env.begin() as txn:
        names = sorted(key for key, _ in txn.cursor())
        assert names == [b":epochs", b":leases", b":records", b":standbys"]


def test_migration_repairs_an_epoch_counter_the_old_bug_overwrote(tmp_path: Path) -> None:
    """In the old layout, instance 'epoch:foo' stored its record over foo's epoch counter."""
    from dataclasses import asdict

    registry = tmp_path / "home" / "registry"
    foo = _record("foo", epoch=5)
    _old_layout(
        registry,
        {
            b"foo": msgpack.packb(asdict(foo)),
            b"epoch:foo": msgpack.packb(asdict(_record("epoch:foo"))),
            b"epoch:epoch:foo": b"1",
        },
    )
    home = Home(tmp_path / "home")
    try:
        assert [r.name for r in home.instances()] == ["foo"]  # 'epoch:foo' cannot be named now
        assert home.next_epoch("foo") == 6  # above every epoch foo's log can hold
    finally:
        home.close()


def test_run_refuses_a_bad_name_in_one_line(tmp_path: Path) -> None:
    try:
        result = run_cli("run", COUNTER, "--name", "epoch:foo", home=tmp_path / "home", timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("`immortals run --name epoch:foo` started an instance")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("immortals: error: bad instance name 'epoch:foo'")
    assert "a letter or digit, then up to 62" in lines[0]
    assert not (tmp_path / "home" / "logs").exists()


# -- item 13: the cluster secret ----------------------------------------------------------------


def _write_secret(home: Home, data: bytes, mode: int = 0o600) -> Path:
    home.path.mkdir(parents=True, exist_ok=True)
    path = home.path / "secret"
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_a_new_secret_is_32_random_bytes_readable_by_the_owner_only(home: Home) -> None:
    old_umask = os.umask(0)  # the mode must not depend on the umask
    try:
        secret = home.secret()
    finally:
        os.umask(old_umask)
    assert len(secret) == 32
    assert stat.S_IMODE((home.path / "secret").stat().st_mode) == 0o600
    assert Home(home.path).secret() == secret
    assert [p.name for p in home.path.iterdir()] == ["secret"]  # no temporary file left


def test_a_leftover_temporary_file_does_not_widen_the_new_secret(home: Home) -> None:
    home.path.mkdir(parents=True)
    leftover = home.path / f".secret.{os.getpid()}.tmp"
    leftover.write_bytes(b"")
    leftover.chmod(0o644)
    home.secret()
    assert stat.S_IMODE((home.path / "secret").stat().st_mode) == 0o600


@pytest.mark.parametrize("data", [b"", b"x" * 31], ids=["empty", "31 bytes"])
def test_a_short_secret_is_refused(home: Home, data: bytes) -> None:
    path = _write_secret(home, data)
    with pytest.raises(SecretError) as caught:
        home.secret()
    message = str(caught.value)
    assert str(path) in message and f"holds {len(data)} bytes" in message
    assert "at least 32" in message and "\n" not in message


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644])
def test_a_secret_open_to_group_or_others_is_refused_as_ssh_refuses_a_private_key(
    home: Home, mode: int
) -> None:
    path = _write_secret(home, os.urandom(32), mode)
    with pytest.raises(SecretError, match=f"chmod 600 {path}") as caught:
        home.secret()
    assert f"mode {mode:04o}" in str(caught.value)


def test_a_read_only_secret_of_the_owner_is_accepted(home: Home) -> None:
    data = os.urandom(48)
    _write_secret(home, data, 0o400)
    assert home.secret() == data


def test_an_unreadable_secret_is_refused(home: Home) -> None:
    (home.path / "secret").mkdir(parents=True)
    with pytest.raises(SecretError, match="cannot read the cluster secret") as caught:
        home.secret()
    assert str(home.path / "secret") in str(caught.value)


def test_a_secret_missing_right_after_creation_is_refused(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "link", lambda src, dst: None)  # as if removed at once
    with pytest.raises(SecretError, match="missing right after it was created"):
        home.secret()


def test_immortals_call_and_run_say_what_is_wrong_with_the_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = Home(tmp_path / "home")
    home.register(_record("server"))
    home.close()
    path = _write_secret(home, b"")
    assert main(["call", "server", "get", "--home", str(home.path), "--timeout", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("immortals: error: the cluster secret")
    path.write_bytes(os.urandom(32))
    path.chmod(0o644)
    result = run_cli("run", COUNTER, "--name", "server", home=home.path, timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "chmod 600" in result.stderr


# -- item 14: a damaged or full registry --------------------------------------------------------

DAMAGED = "is damaged"
MOVE_ASIDE = "move it aside"


def _one_error_line(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("immortals: error: "), err
    assert "Traceback" not in err
    return err


def _put_raw(home: Home, db: bytes, key: bytes, value: bytes) -> None:
    """Write bytes straight into one of the registry's databases, past every check."""
    home.close()
    with lmdb.open(str(home.path / "registry"), max_dbs=4) as env:
        handle = env.open_db(db)
        with env.begin(write=True, db=handle) as txn:
            txn.put(key, value)


@pytest.mark.parametrize(
    "value",
    [
        b"\xc1",  # never used in msgpack
        b"\x92\x01",  # an array cut short
        msgpack.packb({"name": "server"}),  # fields missing
        msgpack.packb([1, 2, 3]),
        msgpack.packb(b"\xff\xfe"),
        msgpack.packb({"name": "server", "host": 5}),
    ],
    ids=["bad byte", "truncated", "fields missing", "array", "bytes", "bad type"],
)
def test_a_damaged_record_is_one_line_naming_the_registry(
    home: Home, value: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    home.register(_record("server"))
    _put_raw(home, RECORDS_DB, b"server", value)
    with pytest.raises(RegistryError, match=DAMAGED):
        Home(home.path).lookup("server")
    with pytest.raises(RegistryError, match=DAMAGED):
        Home(home.path).instances()
    assert main(["call", "server", "get", "--home", str(home.path), "--timeout", "5"]) == 2
    err = _one_error_line(capsys.readouterr().err)
    assert f"the registry {home.path / 'registry'} {DAMAGED}" in err and MOVE_ASIDE in err


def test_a_key_that_is_not_utf8_is_damage(home: Home) -> None:
    home.register(_record("server"))
    _put_raw(home, RECORDS_DB, b"\xff\xfe", msgpack.packb({}))
    with pytest.raises(RegistryError, match=DAMAGED):
        Home(home.path).instances()


def test_a_damaged_epoch_counter_stops_run_with_one_line(home: Home) -> None:
    """A counter of the earlier layout (in lmdb), read as the floor of the epoch files."""
    home.register(_record("other"))  # creates the lmdb environment
    _put_raw(home, EPOCHS_DB, b"server", b"\x81\xa1a\x01")
    result = run_cli("run", COUNTER, "--name", "server", home=home.path, timeout=30)
    assert result.returncode == 2
    err = _one_error_line(result.stderr)
    assert DAMAGED in err and MOVE_ASIDE in err and "epoch counter of 'server'" in err


def test_an_epoch_counter_of_the_earlier_layout_is_the_floor(home: Home) -> None:
    home.register(_record("other"))
    _put_raw(home, EPOCHS_DB, b"server", b"7")
    assert Home(home.path).next_epoch("server") == 8


@pytest.mark.parametrize("junk", [b"", b"\xc1", msgpack.packb([1]), msgpack.packb({"epoch": 0})])
def test_a_damaged_epoch_ticket_stops_run_with_one_line(home: Home, junk: bytes) -> None:
    home.next_epoch("server")
    (home.path / "registry" / "roles" / "server" / "after-0").write_bytes(junk)
    result = run_cli("run", COUNTER, "--name", "server", home=home.path, timeout=30)
    assert result.returncode == 2
    err = _one_error_line(result.stderr)
    assert DAMAGED in err and MOVE_ASIDE in err and "epoch ticket after-0 of 'server'" in err


@pytest.mark.parametrize("junk", [b"\x00" * 10, b"not an lmdb file" * 512], ids=["short", "long"])
def test_a_registry_file_that_is_not_lmdb_is_one_line(
    home: Home, junk: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    home.register(_record("server"))
    home.close()
    (home.path / "registry" / "data.mdb").write_bytes(junk)
    assert main(["call", "server", "get", "--home", str(home.path), "--timeout", "5"]) == 2
    err = _one_error_line(capsys.readouterr().err)
    assert DAMAGED in err and MOVE_ASIDE in err
    result = run_cli("run", COUNTER, "--name", "server", home=home.path, timeout=30)
    assert result.returncode == 2
    assert DAMAGED in _one_error_line(result.stderr)


def test_a_registry_path_that_is_a_file_is_one_line(home: Home) -> None:
    home.path.mkdir(parents=True)
    (home.path / "registry").write_text("not a directory")
    with pytest.raises(RegistryError, match="cannot use the registry"):
        home.next_epoch("server")


class _FullDiskTxn:
    def __enter__(self) -> _FullDiskTxn:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def get(self, key: bytes, db: object = None) -> None:
        return None

    def cursor(self, db: object = None) -> list[tuple[bytes, bytes]]:
        return []

    def put(self, key: bytes, value: bytes, db: object = None) -> None:
        raise lmdb.DiskError("mdb_put: No space left on device")


class _FullDiskEnv:
    def begin(self, **options: object) -> _FullDiskTxn:
        return _FullDiskTxn()

    def open_db(self, name: bytes, txn: object = None) -> None:
        return None


def test_a_full_disk_while_writing_is_one_line(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:  # the epoch is a file: ENOSPC at its fsync
        patch.setattr(os, "fsync", no_space)
        with pytest.raises(RegistryError, match="no space left") as caught:
            home.next_epoch("server")
        assert str(home.path / "registry") in str(caught.value)
    monkeypatch.setattr(registry_module, "acquire_env", lambda path, **options: _FullDiskEnv())
    monkeypatch.setattr(registry_module, "release_env", lambda path: None)
    with pytest.raises(RegistryError, match="no space left") as caught:
        home.register(_record("server"))
    assert str(home.path / "registry") in str(caught.value)
    assert "free space" in str(caught.value)
    home.close()  # while release_env is still the stand-in


def test_a_full_disk_at_open_is_one_line(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(path: Path, **options: object) -> None:
        raise lmdb.DiskError(f"{path}: No space left on device")

    monkeypatch.setattr(registry_module, "acquire_env", full)
    with pytest.raises(RegistryError, match="no space left"):
        home.register(_record("server"))


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, filled up (skipped where mounting is not allowed)."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        try:
            with open(mount / "filler", "wb") as filler:
                filler.write(b"\0" * (2 << 20))
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        else:
            pytest.fail("a 1 MiB tmpfs took 2 MiB")
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_run_on_a_full_disk_is_one_line(full_disk: Path) -> None:
    """lmdb would take SIGBUS touching its lock file on a full disk: the free space is checked."""
    result = run_cli("run", COUNTER, "--name", "server", home=full_disk / "home", timeout=30)
    assert result.returncode == 2, result.stderr
    err = _one_error_line(result.stderr)
    assert "no space left" in err.lower() and str(full_disk / "home") in err


def test_a_registry_on_a_full_disk_is_refused_before_lmdb_opens(full_disk: Path) -> None:
    # In a child process: if lmdb were reached, its SIGBUS would kill the test run.
    code = (
        f"from runtime._home import Home\nHome({str(full_disk / 'home')!r}).next_epoch('server')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=REPO
    )
    assert result.returncode == 1, result.stderr
    assert "RegistryError" in result.stderr and "no space left" in result.stderr


def test_a_secret_that_is_a_fifo_is_refused_without_hanging(home: Home) -> None:
    home.path.mkdir(parents=True)
    os.mkfifo(home.path / "secret", 0o600)
    with pytest.raises(SecretError, match="not a regular file"):
        home.secret()
