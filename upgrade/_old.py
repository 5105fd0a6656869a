"""Which code recorded a step: the one place that answers it.

Until the log keeps the source of every version it ran (issue 14, part 1), the recorded code is
the app the log's metadata names for that LSN, imported from where it is today, and accepted
only if its code version is still the recorded one (an edited file is not the code that ran).
When the code store lands, only :func:`old_app_for` changes.
"""

from __future__ import annotations

from pathlib import Path

from logformat import LogReader
from replayer._replayer import resolve_app
from runtime._apps import LoadedApp, load_app
from runtime._errors import AppLoadError, ImmortalsError


class OldCodeError(ImmortalsError):
    """The code that recorded a step is not at hand (moved, edited, or not importable)."""


def old_app_for(log_dir: Path, lsn: int, *, override: str | None = None) -> LoadedApp:
    """The app that executed step ``lsn`` of the log in ``log_dir``.

    ``override`` (``--old-app``) is taken as given: the user vouches for it. Otherwise the
    metadata's version history names the app in effect at ``lsn``.
    """
    if override is not None:
        return load_app(override)
    reader = LogReader(log_dir)
    try:
        meta = reader.meta
    finally:
        reader.close()
    spec, version = meta.app, meta.code_version
    for entry in meta.versions:
        if entry.from_lsn <= lsn:
            spec, version = entry.app, entry.code_version
    try:
        loaded = resolve_app(spec, log_dir)
    except AppLoadError as exc:
        raise OldCodeError(
            f"the recorded code {spec!r} cannot be imported ({exc}); pass --old-app"
        ) from None
    if loaded.code_version != version:
        raise OldCodeError(
            f"{spec} has changed since it recorded step {lsn} (code version "
            f"{loaded.code_version[:12]}, recorded {version[:12]}); pass the old code as --old-app"
        )
    return loaded
