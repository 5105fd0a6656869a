"""``immortals upgrade test``: recorded history through new code, compared step by step.

The log is written the way a live instance writes it (``tests.replaylog.Recorder``) by
``tests/apps/upgrade_v1.py``; the other ``upgrade_*`` apps are the candidate new versions: an
equivalent refactor, a behaviour change (a fee), and version 2 with a right and a wrong
migration.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from runtime import connect
from runtime.cli import main
from tests._instances import Cluster, run_cli
from tests.apps import upgrade_refactor
from tests.replaylog import Recorder
from upgrade import assert_replays_equal, migrate_state

APPS = Path(__file__).parent / "apps"
V1 = f"{APPS / 'upgrade_v1.py'}:Bank"
REFACTOR = "tests/apps/upgrade_refactor.py:Bank"
FEE = "tests/apps/upgrade_fee.py:Bank"
V2 = "tests/apps/upgrade_v2.py:Bank"
V2_WRONG = "tests/apps/upgrade_v2.py:WrongBank"


def record(home: Path, name: str = "bank") -> Path:
    """start, deposit 100, deposit 50, [checkpoint at 3], withdraw 30 (4), stamp (5),
    withdraw 500 (6, refused either way), withdraw 10 (7), stamp (8)."""
    log = home / "logs" / name
    rec = Recorder(log, V1, name=name)
    rec.call("deposit", 100)
    rec.call("deposit", 50)
    assert rec.checkpoint()
    rec.call("withdraw", 30)
    rec.call("stamp")
    rec.call("withdraw", 500)
    rec.call("withdraw", 10)
    rec.call("stamp")
    rec.close()
    return log


@pytest.fixture
def home(tmp_path: Path) -> Path:
    record(tmp_path)
    return tmp_path


def upgrade(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--home", str(home), "upgrade", "test", *args])
    out, err = capsys.readouterr()
    return code, out, err


def line_of(path: Path, marker: str) -> int:
    return next(i for i, text in enumerate(path.read_text().splitlines(), 1) if marker in text)


def test_an_equivalent_refactor_passes(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = upgrade(home, capsys, "bank", "--app", REFACTOR)
    assert code == 0, out
    assert "8 checked: 8 equal, 0 diverged, 0 allowed" in out


def test_a_fee_fails_at_its_steps_with_the_diff_and_the_lines_of_both_versions(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = upgrade(home, capsys, "bank", "--app", FEE)
    assert code == 1
    assert "8 checked: 6 equal, 2 diverged, 0 allowed" in out
    block = out.split("diverged at step 4:")[1].split("diverged at step 7:")[0]
    assert "call withdraw(30)" in block
    assert "emit[0]['total'] (emits): recorded 120, new 119" in block
    assert "rep[0][2] (results): recorded 120, new 119" in block
    fee_line = line_of(APPS / "upgrade_fee.py", "# charges a fee")
    old_line = line_of(APPS / "upgrade_v1.py", "self.balance -= amount")
    assert f"new code:      tests/apps/upgrade_fee.py:{fee_line} in withdraw()" in block
    assert f"recorded code: tests/apps/upgrade_v1.py:{old_line} in withdraw()" in block
    assert "diverged at step 7: call withdraw(10)" in out
    assert "step 6" not in out  # refused by both versions alike


def test_the_new_line_is_the_one_that_made_the_differing_effect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The recorded code's file was edited since: only NEW is traced, and its line is the one
    # that produced the first differing effect (the emit), not the last line of the handler.
    edited = tmp_path / "bank.py"
    edited.write_text((APPS / "upgrade_v1.py").read_text())
    log = tmp_path / "logs" / "bank"
    rec = Recorder(log, f"{edited}:Bank", name="bank")
    rec.call("deposit", 100)
    rec.call("withdraw", 30)
    rec.close()
    edited.write_text(edited.read_text() + "\n# edited\n")
    code, out, _ = upgrade(tmp_path, capsys, str(log), "--app", FEE)
    assert code == 1
    assert "note: recorded code not traced" in out
    emit_line = line_of(APPS / "upgrade_fee.py", "self.emit(")
    assert f"new code:      tests/apps/upgrade_fee.py:{emit_line} in withdraw()" in out
    assert "recorded code:" not in out


def test_allow_turns_exactly_that_difference_into_a_pass(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = upgrade(home, capsys, "bank", "--app", FEE, "--allow", "method:withdraw")
    assert code == 0, out
    assert "8 checked: 6 equal, 0 diverged, 2 allowed" in out
    assert "allowed at step 4" in out and "(allowed)" in out
    paths = ["--allow", "path:rep.*.2", "--allow", "path:emit.*.total"]
    code, out, _ = upgrade(home, capsys, "bank", "--app", FEE, *paths)
    assert code == 0, out
    # A rule for some other difference leaves this one failing; half the rules, half fails.
    for rule in ("method:deposit", "effect:timers", "path:rep.*.1"):
        code, out, _ = upgrade(home, capsys, "bank", "--app", FEE, "--allow", rule)
        assert code == 1, rule
        assert "2 diverged, 0 allowed" in out
    code, out, _ = upgrade(home, capsys, "bank", "--app", FEE, "--allow", "effect:results")
    assert code == 1
    assert "emit[0]['total'] (emits): recorded 120, new 119\n" in out
    assert "rep[0][2] (results): recorded 120, new 119  (allowed)" in out


def test_check_migration_catches_a_wrong_migration_and_passes_a_right_one(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = upgrade(home, capsys, "bank", "--app", V2_WRONG)
    assert code == 0, out  # its effects are the same: only the migration check can tell
    code, out, _ = upgrade(home, capsys, "bank", "--app", V2_WRONG, "--check-migration")
    assert code == 1
    assert "version None -> 2" in out
    assert "migration check failed at step 3" in out  # old code then migrate loses history
    assert 'entries[0] (state): only new: ["deposit", 100]' in out
    assert "migration check failed at step 8" in out  # from the checkpoint at 3
    code, out, _ = upgrade(home, capsys, "bank", "--app", V2, "--check-migration")
    assert code == 0, out
    assert "migration: commutes with replay at every checkpoint in range" in out
    # From the checkpoint: the state is migrated before NEW runs (else entries is missing).
    code, out, _ = upgrade(home, capsys, "bank", "--app", V2, "--from", "5")
    assert code == 0, out
    assert "steps 5..8" in out and "from checkpoint 3" in out


def test_migrate_state_rules() -> None:
    from tests.apps import upgrade_v2

    state = {"balance": 1, "log": [["deposit", 1]]}
    assert migrate_state(upgrade_v2.Bank, state, None) == {
        "balance": 1,
        "entries": [["deposit", 1]],
    }
    assert state == {"balance": 1, "log": [["deposit", 1]]}  # the caller's copy is untouched
    assert migrate_state(upgrade_v2.Bank, state, 2) == state  # same version: kept
    assert migrate_state(upgrade_refactor.Bank, state, None) == state  # no migrate: kept


def test_junit_and_json(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record(home, "other")  # a second instance under the same home: --all takes both
    report = home / "junit.xml"
    code, out, _ = upgrade(home, capsys, "--app", FEE, "--junit", str(report), "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False
    assert [i["instance"] for i in doc["instances"]] == ["bank", "other"]
    first = doc["instances"][0]
    assert (first["steps"], first["equal"], first["diverged"]) == (8, 6, 2)
    assert first["diverged_lsns"] == [4, 7]
    diffs = first["divergences"][0]["diffs"]
    assert {k: diffs[1][k] for k in ("path", "expected", "actual")} == {
        "path": ["rep", 0, 2],
        "expected": 120,
        "actual": 119,
    }
    assert first["divergences"][0]["new_line"]["text"].endswith("# charges a fee")
    root = ET.parse(report).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures")) == ("4", "2")
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["bank", "other"]
    cases = suites[0].findall("testcase")
    assert [c.get("name") for c in cases] == ["steps 1..3", "steps 4..8"]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("message") == "2 diverged steps: 4, 7"
    props = {p.get("name"): p.get("value") for p in suites[0].iter("property")}
    assert (props["steps"], props["equal"], props["diverged"]) == ("8", "6", "2")
    code, out, _ = upgrade(home, capsys, "--app", REFACTOR, "--junit", str(report))
    assert code == 0
    assert ET.parse(report).getroot().get("failures") == "0"
    rows = [line for line in out.splitlines() if line.startswith("│ ")]  # the summary table
    assert [row.split()[1] for row in rows] == ["bank", "other"]
    assert all(row.split()[3:14:2] == ["1..8", "8", "8", "0", "0", "-"] for row in rows), rows


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["nosuch", "--app", REFACTOR], "no instance named 'nosuch'"),
        (["bank", "--app", "tests/apps/missing.py:Bank"], "missing.py"),
        (["bank", "--app", REFACTOR, "--allow", "colour:red"], "unknown rule 'colour'"),
        (["bank", "--app", REFACTOR, "--allow", "effect:smells"], "no effect kind 'smells'"),
        (["bank", "--app", REFACTOR, "--from", "99"], "LSN 99 is outside the log"),
        (["bank", "--app", REFACTOR, "--from", "6", "--to", "5"], "is empty"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    home: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    code, out, err = upgrade(home, capsys, *args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and says in err, err


def test_the_installed_command(home: Path) -> None:
    done = run_cli("upgrade", "test", "bank", "--app", FEE, "--allow", "oops", home=home)
    assert done.returncode == 2
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "method:NAME" in done.stderr
    done = run_cli("upgrade", "test", "bank", "--app", REFACTOR, home=home)
    assert done.returncode == 0, done.stderr
    help_text = run_cli("upgrade", "test", "--help", home=home).stdout
    assert "path:FIELD.PATH" in help_text and "effect:KIND" in help_text


def test_assert_replays_equal(home: Path) -> None:
    log = home / "logs" / "bank"
    result = assert_replays_equal(log, upgrade_refactor.Bank)
    assert result.equal == 8
    with pytest.raises(AssertionError) as failed:
        assert_replays_equal(log, FEE)
    text = str(failed.value)
    assert "diverged at step 4: call withdraw(30)" in text
    assert "rep[0][2] (results): recorded 120, new 119" in text
    assert assert_replays_equal(log, FEE, allow=["method:withdraw"]).allowed == 2
    with pytest.raises(AssertionError, match="migration check failed"):
        assert_replays_equal(log, V2_WRONG, check_migration=True)


def test_new_code_that_raises_out_of_a_step_is_a_divergence_not_a_crash(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text(
        (APPS / "upgrade_v1.py")
        .read_text()
        .replace("self.balance = 0", "self.balance = 0\n        raise RuntimeError('boom')")
    )
    code, out, _ = upgrade(home, capsys, "bank", "--app", f"{broken}:Bank")
    assert code == 1
    assert "diverged at step 1: start" in out
    assert "error (error): only new:" in out and "boom" in out


def test_a_log_written_by_a_real_instance(tmp_path: Path) -> None:
    live = tmp_path / "live"
    cluster = Cluster(live)
    try:
        bank = cluster.start("tests/apps/upgrade_v1.py:Bank", "bank")
        with connect(live, timeout=20) as client:
            assert client.call("bank", "deposit", 100) == 100
            assert client.call("bank", "withdraw", 30) == 70
            assert isinstance(client.call("bank", "stamp"), float)
        assert bank.stop() == 0
    finally:
        cluster.stop_all()
    done = run_cli("upgrade", "test", "bank", "--app", REFACTOR, home=live)
    assert done.returncode == 0, done.stdout + done.stderr
    done = run_cli("upgrade", "test", "bank", "--app", FEE, "--json", home=live)
    assert done.returncode == 1, done.stderr
    (result,) = json.loads(done.stdout)["instances"]
    withdraw = [d for d in result["divergences"] if d["method"] == "withdraw"]
    assert result["diverged"] == len(withdraw) == 1, result
    assert [d["path"] for d in withdraw[0]["diffs"]] == [["emit", 0, "total"], ["rep", 0, 2]]
    assert withdraw[0]["new_line"]["line"] == line_of(APPS / "upgrade_fee.py", "# charges a fee")
