"""Applying an app's state migration: the one function every upgrade path calls.

An app may declare ``version = N`` (an int class attribute) and a classmethod
``migrate(cls, state, from_version) -> dict`` that turns the state of an older version (``None``
when that version declared none) into its own; chaining across several versions is the
method's job, since only it knows its history. A class without ``migrate`` keeps the state as it
is. This module sits directly above the runtime (it may import ``runtime``, never ``replayer``
or ``debugger``) because the runtime will apply migrations itself when a restart upgrades.
"""

from __future__ import annotations

import copy
from typing import Any

from runtime._errors import ImmortalsError


class MigrationError(ImmortalsError):
    """An app's ``migrate`` raised, or returned something other than a state dict."""


def app_version(cls: type[Any]) -> int | None:
    """The version an app class declares (``version = N``), None when it declares none."""
    version = getattr(cls, "version", None)
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int):
        raise MigrationError(
            f"{cls.__name__}.version must be an int, not {type(version).__name__} {version!r}"
        )
    return version


def migrate_state(
    new_cls: type[Any], state: dict[str, Any], from_version: int | None
) -> dict[str, Any]:
    """``state`` (of an app at ``from_version``) as ``new_cls`` expects it.

    The same version, or a class without ``migrate``, keeps the state (a copy of it). The
    migration receives a deep copy, so one that fails half-way leaves the caller's state whole.
    """
    to_version = app_version(new_cls)
    migrate = getattr(new_cls, "migrate", None)
    if migrate is None or from_version == to_version:
        return copy.deepcopy(state)
    try:
        migrated = migrate(copy.deepcopy(state), from_version)
    except Exception as exc:
        raise MigrationError(
            f"{new_cls.__name__}.migrate(state, from_version={from_version!r}) raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(migrated, dict) or not all(isinstance(k, str) for k in migrated):
        raise MigrationError(
            f"{new_cls.__name__}.migrate() must return the new state as a dict of attribute "
            f"names, not {type(migrated).__name__}"
        )
    return migrated
