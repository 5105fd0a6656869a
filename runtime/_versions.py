"""Which code ran which step of a log, and that code loaded back: the log's code book.

``meta.json`` lists every code version an instance ran, each with the LSN it started at; the
log's code store keeps each version's bundle (``_codestore``). A ``CodeBook`` answers the two
questions every tool that re-executes history asks: which version ran step N
(``version_at``), and its app class (``app_for``). Recovery, the replayer and the debugger use
it, so each part of a log that spans upgrades re-executes with its own code.

A version whose code the log does not keep (a log written before code was kept, or a damaged
code file) falls back to the code at hand, with a note in ``fallbacks``: exactly what happened
before versions were kept, and the reason a replay may then diverge.

Migrations: an app may declare ``version = N`` (an int) and a classmethod
``migrate(cls, state: dict, from_version: int | None) -> dict`` that turns the state of an
older version into its own. One call covers any older version (``from_version`` says which),
so a chain of changes is written as a chain of ``if from_version < K:`` steps in one place.
Without ``migrate`` the state is kept as it is.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from logformat import CodeStoreError, LogMeta, code_path, load_code, store_code

from ._api import Immortal
from ._codestore import CodeBundle, ModuleCompiler, declared_version, load_bundle, recompile
from ._errors import AppLoadError, UpgradeError


class CodeBook:
    """The code versions of one log, loaded on demand (and cached).

    ``at_hand`` gives the code to fall back on for a version the log does not keep (called
    only then); ``forced`` replaces every version's code (``replay --app``: what would this
    code have done over the whole history?). ``compile_module`` compiles every version's
    sources (the forced code and the code at hand too) instead of plain ``compile``: the
    logpoint pass inserts its evaluations so."""

    def __init__(
        self,
        log_dir: Path,
        meta: LogMeta,
        *,
        at_hand: Callable[[], type[Immortal]] | None = None,
        forced: type[Immortal] | None = None,
        compile_module: ModuleCompiler | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.meta = meta
        self.fallbacks: list[str] = []
        self._at_hand = at_hand
        self._forced = forced
        self._compile = compile_module
        self._classes: dict[str, type[Immortal]] = {}

    @property
    def latest(self) -> str:
        return self.meta.code_version

    def version_at(self, lsn: int) -> str:
        """The code version that ran step ``lsn`` (the log's first one before any entry)."""
        found = self.meta.versions[0].code_version if self.meta.versions else self.meta.code_version
        for entry in self.meta.versions:
            if entry.from_lsn <= lsn:
                found = entry.code_version
        return found

    def app_at(self, lsn: int) -> type[Immortal]:
        """The app class that ran step ``lsn``."""
        return self.app_for(self.version_at(lsn))

    def app_for(self, version: str) -> type[Immortal]:
        """The app class of ``version``: the recorded code, else the code at hand (noted)."""
        if self._forced is not None and self._compile is None:
            return self._forced
        cls = self._classes.get(version)
        if cls is not None:
            return cls
        if self._forced is not None:
            assert self._compile is not None
            cls = self._classes[version] = recompile(self._forced, version, self._compile)
            return cls
        try:
            blob = load_code(self.log_dir, version)
        except CodeStoreError as exc:
            blob, why = None, f"its code is damaged ({exc})"
        else:
            why = "the log does not keep its code (written before code was kept)"
        if blob is not None:
            where = str(self.log_dir)
            cls, _spec = load_bundle(version, blob, where=where, compile_module=self._compile)
        elif self._at_hand is not None:
            cls = self._at_hand()
            if self._compile is not None:
                cls = recompile(cls, version, self._compile)
            self.fallbacks.append(f"{version}: {why}; re-executing with the code at hand")
        else:
            raise AppLoadError(
                f"{self.log_dir}: {why} for version {version}: pass the code with --app "
                "path/to/file.py:Class"
            )
        self._classes[version] = cls
        return cls

    def load_all(self) -> None:
        """Load the code of every version the log lists, now: an upgrade step asks for its
        version's class while a handler's sandbox is up, where reading files is refused."""
        for entry in self.meta.versions:
            self.app_for(entry.code_version)

    def update(self, meta: LogMeta) -> None:
        """The log's metadata read again (a follower: the primary may have upgraded); loads
        the code of any version it lists that was not loaded yet."""
        if meta.versions != self.meta.versions:
            self.meta = meta
            self.load_all()

    def keep(self, bundle: CodeBundle, cls: type[Immortal]) -> None:
        """Keep the code at hand in the log (before any step runs it) and remember its class."""
        if not code_path(self.log_dir, bundle.version).exists():  # (packing it costs)
            store_code(self.log_dir, bundle.version, bundle.blob)
        self._classes[bundle.version] = cls


class MigrationError(UpgradeError):
    """An app's ``migrate`` raised, or returned something other than a state dict."""


def migrate_state(
    new_cls: type[Immortal], state: dict[str, Any], from_version: int | None
) -> dict[str, Any]:
    """``state`` (of an app at ``from_version``) as ``new_cls`` expects it.

    The same version, or a class without ``migrate``, keeps the state (a copy of it). The
    migration receives a deep copy, so one that fails half-way leaves the caller's state whole.
    Every upgrade path calls this one function: a restart with new code, ``immortals upgrade
    test`` and its migration check."""
    to_version = declared_version(new_cls)
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
