"""Finding an app's class from ``path/to/file.py:Class`` or ``module:Class``, and its version.

The code version is what tools use to tell whether recorded history ran on the code at hand: the
hash of the app's bundle of sources (``_codestore``), which the log keeps under that version.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path

from ._api import Immortal
from ._codestore import CodeBundle, bundle_app
from ._errors import AppInitError, AppLoadError


@dataclass(frozen=True, slots=True)
class LoadedApp:
    spec: str
    cls: type[Immortal]
    bundle: CodeBundle  # its sources, as the log keeps them; ``bundle.version`` is the version

    @property
    def code_version(self) -> str:
        return self.bundle.version


def load_app(spec: str) -> LoadedApp:
    """Import the class named by ``spec``; AppLoadError with a one-line reason if it cannot be."""
    target, sep, class_name = spec.rpartition(":")
    if not sep or not target or not class_name:
        raise AppLoadError(
            f"app {spec!r} must be path/to/file.py:Class or module:Class (with a colon)"
        )
    module = _import_file(target) if target.endswith(".py") else _import_module(target)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise AppLoadError(f"{target} has no class {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Immortal)):
        raise AppLoadError(f"{spec} is not a subclass of runtime.Immortal")
    _check_init(cls)
    return LoadedApp(spec, cls, bundle_app(cls, spec))


def _check_init(cls: type[Immortal]) -> None:
    """Refuse, before anything starts, an ``__init__`` that needs arguments.

    The runtime creates an instance with no arguments (an instance's state comes from its
    log, not from a constructor's caller), so such a class could never start: better said at
    load time, in one line, than as a TypeError out of the first start.
    """
    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return  # a C-level __init__ (object's): it takes no arguments
    needed = [
        p.name
        for p in list(signature.parameters.values())[1:]  # past self
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if needed:
        raise AppInitError(
            f"{cls.__name__}.__init__ needs {', '.join(needed)}, but an immortal is created "
            "with no arguments: give them defaults, or set them later (in main() or a handler)"
        )


def _import_file(path_text: str) -> object:
    path = Path(path_text)
    if not path.is_file():
        raise AppLoadError(f"app file {path_text} does not exist")
    name = "immortals_app_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"cannot load {path_text} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise AppLoadError(f"importing {path_text} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _import_module(name: str) -> object:
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise AppLoadError(f"cannot import module {name!r}: {type(exc).__name__}: {exc}") from exc
