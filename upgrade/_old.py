"""Which code recorded a step: the one place that answers it.

The log keeps the source of every code version it ran (``runtime._versions.CodeBook`` reads
it), so the recorded code is loaded from the log itself, whatever the files on disk say today.
A log written before code was kept falls back to the app its metadata names, imported from
where it is now, and accepted only if its code version is still the recorded one (an edited
file is not the code that ran). ``--old-app`` overrides both.
"""

from __future__ import annotations

from pathlib import Path

from logformat import LogReader
from replayer._replayer import resolve_app
from runtime._apps import LoadedApp, load_app
from runtime._codestore import CodeBundle, declared_version
from runtime._errors import AppLoadError, ImmortalsError
from runtime._versions import CodeBook


class OldCodeError(ImmortalsError):
    """The code that recorded a step is not at hand (moved, edited, or not importable)."""


def old_app_for(log_dir: Path, lsn: int, *, override: str | None = None) -> LoadedApp:
    """The app that executed step ``lsn`` of the log in ``log_dir``.

    ``override`` (``--old-app``) is taken as given: the user vouches for it. Otherwise the code
    the log keeps for the version in effect at ``lsn``.
    """
    if override is not None:
        return load_app(override)
    reader = LogReader(log_dir)
    try:
        meta = reader.meta
    finally:
        reader.close()
    book = CodeBook(log_dir, meta)
    version = book.version_at(lsn)
    spec = next((v.app for v in reversed(meta.versions) if v.from_lsn <= lsn), meta.app)
    try:
        cls = book.app_for(version)
    except AppLoadError:
        return _from_disk(log_dir, spec, version, lsn)
    return LoadedApp(spec, cls, CodeBundle(version, lambda: b"", declared_version(cls)))


def _from_disk(log_dir: Path, spec: str, version: str, lsn: int) -> LoadedApp:
    """A log that keeps no code: the named app, if it is still the code that ran."""
    try:
        loaded = resolve_app(spec, log_dir)
    except AppLoadError as exc:
        raise OldCodeError(
            f"the log keeps no code for step {lsn} and {spec!r} cannot be imported ({exc}); "
            "pass --old-app"
        ) from None
    if loaded.code_version != version:
        raise OldCodeError(
            f"the log keeps no code for step {lsn}, and {spec} has changed since it ran (code "
            f"version {loaded.code_version[:12]}, recorded {version[:12]}); pass the old code "
            "as --old-app"
        )
    return loaded
