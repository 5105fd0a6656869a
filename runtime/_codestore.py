"""An app's code as its log keeps it: a bundle of its sources, and that bundle loaded back.

A step can only be re-executed with the code that ran it. So when an instance starts, the
sources of its app are packed into a **bundle** and kept in the log (``logformat``'s code
store) under the bundle's hash, which *is* the code version: the app's module and the
project-local modules it uses (found by following the module's globals: imported modules, and
the modules of imported classes and functions), never the runtime itself, the standard library
or installed packages, whose names and versions are recorded instead. Any tool can then load
the code that ran any step, long after the file was edited (``load_bundle``).

A loaded bundle lives beside whatever else is imported: its modules are executed under their
own names (so their imports of each other resolve), then renamed to private names
(``immortals_code_<hash>.<name>``) and their original names given back to whatever held them
before. Their code objects name a file of the form ``<immortals code VERSION: path>``, whose
lines ``linecache`` holds, so ``inspect.getsource``, tracebacks and the replayer's tracer show
the source that ran then, not the file on disk today.

Bundle (msgpack map): ``format`` 1; ``app`` the spec it was started as; ``module`` and
``class`` of the app; ``modules``: list of ``{name, path, source, package}``; ``packages``:
``{distribution: version}``; ``python``; ``declared``: the class's ``version`` attribute.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import itertools
import linecache
import sys
import sysconfig
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from logformat import pack_value, unpack_value

from ._api import Immortal
from ._errors import AppLoadError

BUNDLE_FORMAT: Final = 1
# Packages of immortals itself: the platform an app runs on, not part of the app.
_PLATFORM: Final = frozenset(("runtime", "logformat", "replayer", "debugger", "upgrade"))


@dataclass(frozen=True, slots=True)
class CodeBundle:
    version: str  # "sha256:" and 16 hex digits of the sources: the code version
    pack: Callable[[], bytes]  # the packed bundle, as the log keeps it (made when needed)
    declared: int | None  # the app's ``version`` class attribute, for migrations

    @property
    def blob(self) -> bytes:
        """The packed bundle. Made on demand: finding the installed packages' versions takes
        a third of a second, and a log that keeps this version already needs none of it."""
        return self.pack()


def declared_version(cls: type) -> int | None:
    """The version number an app declares (``version = N``), None if it declares none."""
    value = getattr(cls, "version", None)
    if value is None:
        return None
    if type(value) is not int:
        raise AppLoadError(
            f"{cls.__name__}.version must be an int, not {type(value).__name__} {value!r}"
        )
    return value


def bundle_app(cls: type[Immortal], spec: str) -> CodeBundle:
    """The bundle of an app class that is imported now."""
    main = sys.modules.get(cls.__module__)
    if main is None:
        raise AppLoadError(f"{spec}: the module of {cls.__qualname__} is not imported")
    root = _project_root(main)
    modules = _local_modules(main, root)
    entries = _entries(modules, root)
    version = _version_of(cls, entries)
    declared = declared_version(cls)

    @functools.cache
    def pack() -> bytes:
        return pack_value(
            {
                "format": BUNDLE_FORMAT,
                "app": spec,
                "module": main.__name__,
                "class": cls.__qualname__,
                "modules": entries,
                "packages": _package_versions(main, root),
                "python": sys.version.split()[0],
                "declared": declared,
            }
        )

    return CodeBundle(version, pack, declared)


def bundle_summary(blob: bytes) -> dict[str, Any]:
    """What a bundle holds, for people (``log info``): app, modules, packages, declared version."""
    data = _read(blob, where="a code bundle")
    return {
        "app": data.get("app"),
        "modules": [m["path"] or m["name"] for m in data["modules"]],
        "packages": data.get("packages", {}),
        "declared": data.get("declared"),
    }


class ModuleCompiler(Protocol):
    """How a loaded bundle's module is compiled (the default is plain ``compile``).

    ``version`` is the code version whose steps the module will re-execute, ``path`` its path
    in the bundle;
    ``namespace`` is the module's dictionary before its code runs, for names the compiled code
    refers to. The logpoint pass compiles copies with evaluations inserted at given lines."""

    def __call__(
        self, source: str, filename: str, *, version: str, path: str, namespace: dict[str, Any]
    ) -> types.CodeType: ...


def load_bundle(
    version: str, blob: bytes, *, where: str, compile_module: ModuleCompiler | None = None
) -> tuple[type[Immortal], str]:
    """The app class a bundle holds, and the spec it was started as (AppLoadError if not).

    With ``compile_module``, the modules are compiled through it: a variant of the code kept
    apart (under private names of its own) from the plain load of the same version."""
    data = _read(blob, where=where)
    hook = None if compile_module is None else (compile_module, version)
    return _load(version, data, where=where, compile_module=hook), str(data.get("app", ""))


def recompile(cls: type[Immortal], serves: str, compile_module: ModuleCompiler) -> type[Immortal]:
    """An imported app's class again, its modules' sources (as on disk now) compiled through
    ``compile_module``, to re-execute the steps of code version ``serves`` (what the compiler
    is told; file names carry the code's own version, so the recorded lines of ``serves`` in
    ``linecache`` stay as they were). What a bundle of the code at hand would load as, without
    packing one (finding package versions costs a third of a second)."""
    main = sys.modules.get(cls.__module__)
    if main is None:
        raise AppLoadError(f"the module of {cls.__qualname__} is not imported")
    root = _project_root(main)
    entries = _entries(_local_modules(main, root), root)
    data = {"module": main.__name__, "class": cls.__qualname__, "modules": entries}
    version = _version_of(cls, entries)
    return _load(version, data, where=str(main.__file__), compile_module=(compile_module, serves))


_variants = itertools.count(1)


def _load(
    version: str,
    data: dict[str, Any],
    *,
    where: str,
    compile_module: tuple[ModuleCompiler, str] | None,
) -> type[Immortal]:
    """Execute a bundle's modules (``data``) beside everything else; its app class.
    ``compile_module`` is a compiler and the version it is told the modules serve."""
    entries: dict[str, dict[str, Any]] = {m["name"]: m for m in data["modules"]}
    private = "immortals_code_" + version.replace(":", "_")
    if compile_module is not None:  # a variant: the plain load keeps its own names
        private += f"_variant{next(_variants)}"
    finder = _BundleFinder(version, entries, compile_module)
    hidden = {name: sys.modules.pop(name) for name in entries if name in sys.modules}
    sys.meta_path.insert(0, finder)
    try:
        main = importlib.import_module(data["module"])
        loaded = {name: sys.modules[name] for name in entries if name in sys.modules}
    except Exception as exc:
        raise AppLoadError(
            f"{where}: the recorded code of {version} does not import: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        sys.meta_path.remove(finder)
        for name in entries:
            sys.modules.pop(name, None)
        sys.modules.update(hidden)
    for name, module in loaded.items():
        _rename(module, name, f"{private}.{name}")
        sys.modules[f"{private}.{name}"] = module
    cls = main
    for part in str(data["class"]).split("."):
        cls = getattr(cls, part, None)  # type: ignore[assignment]
    if not (isinstance(cls, type) and issubclass(cls, Immortal)):
        raise AppLoadError(f"{where}: the recorded code of {version} has no app {data['class']}")
    return cls


# -- what a bundle holds ---------------------------------------------------------------------------


def _project_root(main: types.ModuleType) -> Path:
    """The folder the app's modules live in: its file's folder, above its packages."""
    folder = Path(main.__file__ or ".").resolve().parent
    if "." in main.__name__:  # module:Class form: climb to the top package's parent
        for _ in main.__name__.split(".")[:-1]:
            folder = folder.parent
    return folder


def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    return tuple(sorted(str(Path(p).resolve()) for p in roots))


def _is_local(module: types.ModuleType, root: Path) -> bool:
    file = getattr(module, "__file__", None)
    if not file or not file.endswith(".py") or module.__name__.split(".")[0] in _PLATFORM:
        return False
    path = str(Path(file).resolve())
    if path.startswith(_installed_roots()):
        return False
    return path.startswith(str(root) + "/")


def _local_modules(main: types.ModuleType, root: Path) -> list[types.ModuleType]:
    """The app's module and every project-local module it reaches, in a stable order."""
    found: dict[str, types.ModuleType] = {}
    todo = [main]
    while todo:
        module = todo.pop()
        if module.__name__ in found:
            continue
        found[module.__name__] = module
        for value in list(vars(module).values()):
            target = value if isinstance(value, types.ModuleType) else None
            if target is None:
                owner = getattr(value, "__module__", None)
                target = sys.modules.get(owner) if isinstance(owner, str) else None
            if target is not None and target.__name__ not in found and _is_local(target, root):
                todo.append(target)
        parent = module.__name__.rpartition(".")[0]  # a submodule needs its package
        if parent and parent in sys.modules and _is_local(sys.modules[parent], root):
            todo.append(sys.modules[parent])
    return [found[name] for name in sorted(found, key=lambda n: (n != main.__name__, n))]


def _version_of(cls: type, entries: list[dict[str, Any]]) -> str:
    # Paths relative to the project, not module names: a file app's module name comes from
    # its absolute path, and the same code must have the same version on any host.
    identity = [cls.__qualname__, [[e["path"], e["source"]] for e in entries]]
    return "sha256:" + hashlib.sha256(pack_value(identity)).hexdigest()[:16]


def _entries(modules: list[types.ModuleType], root: Path) -> list[dict[str, Any]]:
    """A bundle's ``modules`` list: each module's name, path in the project and source."""
    return [
        {
            "name": module.__name__,
            "path": _relative(Path(module.__file__ or ""), root),
            "source": _source(module),
            "package": hasattr(module, "__path__"),
        }
        for module in modules
    ]


def _package_versions(main: types.ModuleType, root: Path) -> dict[str, str]:
    """Versions of the installed distributions whose top-level modules the app module uses."""
    tops = {
        (value.__name__ if isinstance(value, types.ModuleType) else str(value.__module__)).split(
            "."
        )[0]
        for value in vars(main).values()
        if isinstance(value, types.ModuleType)
        or isinstance(getattr(value, "__module__", None), str)
    }
    by_top = importlib.metadata.packages_distributions()
    versions: dict[str, str] = {}
    for top in sorted(tops):
        for dist in by_top.get(top, ()):
            try:
                versions[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def _source(module: types.ModuleType) -> str:
    file = module.__file__
    assert file is not None
    return Path(file).read_text(encoding="utf-8")


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return path.name


def _read(blob: bytes, *, where: str) -> dict[str, Any]:
    try:
        data = unpack_value(blob)
    except Exception as exc:
        raise AppLoadError(f"{where}: the stored code does not decode: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise AppLoadError(f"{where}: stored code of format {found!r}, this version reads 1")
    return data


# -- loading ----------------------------------------------------------------------------------------


CODE_FILE_PREFIX: Final = "<immortals code "


def code_filename(version: str, path: str) -> str:
    """The file name a bundle module's code objects carry (and linecache knows)."""
    return f"{CODE_FILE_PREFIX}{version}: {path}>"


class _BundleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds a bundle's modules by their original names, while the bundle is being loaded."""

    def __init__(
        self,
        version: str,
        entries: dict[str, dict[str, Any]],
        compile_module: tuple[ModuleCompiler, str] | None = None,
    ) -> None:
        self.version = version
        self.entries = entries
        self.compile_module = compile_module

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        entry = self.entries.get(fullname)
        if entry is None:
            return None
        spec = importlib.machinery.ModuleSpec(fullname, self, is_package=bool(entry["package"]))
        spec.origin = code_filename(self.version, entry["path"] or fullname)
        return spec

    def exec_module(self, module: types.ModuleType) -> None:
        entry = self.entries[module.__name__]
        filename = code_filename(self.version, entry["path"] or module.__name__)
        source: str = entry["source"]
        lines = source.splitlines(keepends=True)
        linecache.cache[filename] = (len(source), None, lines, filename)
        module.__file__ = filename
        if entry["package"]:
            module.__path__ = []
        if self.compile_module is None:
            code = compile(source, filename, "exec")
        else:
            compiler, serves = self.compile_module
            path = entry["path"] or module.__name__
            code = compiler(source, filename, version=serves, path=path, namespace=module.__dict__)
        exec(code, module.__dict__)  # the app's own recorded code


def _rename(module: types.ModuleType, old: str, new: str) -> None:
    """Give a loaded bundle module, and what it defines, its private name."""
    module.__name__ = new
    for value in vars(module).values():
        if getattr(value, "__module__", None) == old:
            try:
                value.__module__ = new
            except (AttributeError, TypeError):
                continue
