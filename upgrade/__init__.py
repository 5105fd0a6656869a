"""Upgrade tools: test new code against recorded history before it runs in production.

    from upgrade import assert_replays_equal, check_log

    assert_replays_equal(".immortals/logs/server", NewServer, allow=["method:withdraw"])
    result = check_log(Path(".immortals/logs/server"), load_app("app.py:Server"))

``immortals upgrade test`` is the command line of the same; see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from runtime._apps import load_app
from runtime._codestore import declared_version as app_version
from runtime._versions import MigrationError, migrate_state

from ._compare import FieldDiff
from ._old import OldCodeError, old_app_for
from ._report import instance_text
from ._rules import AllowRule, RuleError, parse_rule, parse_rules
from ._run import InstanceResult, SourceLine, StepDivergence, UpgradeError, check_log

__all__ = [
    "AllowRule",
    "FieldDiff",
    "InstanceResult",
    "MigrationError",
    "OldCodeError",
    "RuleError",
    "SourceLine",
    "StepDivergence",
    "UpgradeError",
    "app_version",
    "assert_replays_equal",
    "check_log",
    "migrate_state",
    "old_app_for",
    "parse_rule",
    "parse_rules",
]


def assert_replays_equal(
    log_dir: str | os.PathLike[str],
    new_app: type[Any] | str,
    *,
    allow: list[str] | None = None,
    from_lsn: int | None = None,
    to_lsn: int | None = None,
    check_migration: bool = False,
    old_app: str | None = None,
    max_divergences: int = 5,
) -> InstanceResult:
    """Fail (AssertionError, with the diff ``immortals upgrade test`` prints) unless every
    recorded step of the log replays through ``new_app`` with the same effects, or with only
    differences that ``allow`` rules declare. ``new_app`` is a class or an app spec."""
    spec = new_app if isinstance(new_app, str) else f"{new_app.__module__}:{new_app.__qualname__}"
    new = load_app(spec)
    result = check_log(
        Path(log_dir),
        new,
        from_lsn=from_lsn,
        to_lsn=to_lsn,
        allow=parse_rules(allow),
        max_divergences=max_divergences,
        check_migration=check_migration,
        old_app=old_app,
    )
    if not result.ok:
        raise AssertionError("\n".join(instance_text(result)))
    return result
