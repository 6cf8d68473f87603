"""Plugins: user code named on the command line (`--plugin FILE_OR_MODULE`, repeatable) that registers
models, datasets and search spaces exactly as the built-in ones do (trainables.registry,
search_spaces.register_space). See examples/resnet_mini_plugin.py.

A plugin is a `.py` file (imported as a module named after the file) or an importable module name. The
driver loads plugins before it reads --space; experiment.json records them, so --resume loads them again.
Trials load them too: on the driver's machine from the same path; on a Ray cluster the files travel in
the runtime env (`py_modules`) and trials import them by module name. Nothing here imports TensorFlow.

A plugin that fails to import, registers a name twice or declares a knob of an unknown type raises
PluginError: one line naming the file and the line (the driver exits 2 with it).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from trainables import registry


class PluginError(Exception):
    """A plugin could not be loaded; the message names the file and the line."""


def is_file_ref(ref: str) -> bool:
    return ref.endswith(".py") or "/" in ref


def module_name(ref: str) -> str:
    """The module a plugin is imported as: a file's stem, or the module name given."""
    return Path(ref).stem if is_file_ref(ref) else ref


def load_plugins(refs: Iterable[str], shipped: bool = False) -> list[ModuleType]:
    """Import each plugin once per process (again is a no-op). `shipped`: the files came with Ray's
    runtime env (py_modules) and are imported by module name, wherever the driver had them."""
    return [load_plugin(ref, shipped) for ref in refs]


def load_plugin(ref: str, shipped: bool = False) -> ModuleType:
    if not is_file_ref(ref) or shipped:
        return _import_module(module_name(ref), ref)
    path = Path(ref).expanduser().resolve()
    if not path.is_file():
        raise PluginError(f"--plugin {ref}: no such file; give the path of a .py file or an importable module")
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == path:
            return loaded
        raise PluginError(
            f"--plugin {ref}: module name {name!r} is already taken by "
            f"{getattr(loaded, '__file__', None) or 'a built-in module'}; rename the file"
        )
    if not name.isidentifier():
        raise PluginError(f"--plugin {ref}: {path.name} is not a valid module name; rename it (letters, digits, _)")
    found = importlib.util.find_spec(name)
    if found is not None and found.origin and Path(found.origin).resolve() != path:
        raise PluginError(f"--plugin {ref}: module name {name!r} would shadow {found.origin}; rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None  # a .py path always has a source loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: pickles of its functions (the searcher's) name this module
    try:
        with registry.registering_from(str(path)):
            spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - whatever user code raises becomes one line naming its file
        sys.modules.pop(name, None)
        raise PluginError(_where(e, str(path))) from None
    return module


def _import_module(name: str, ref: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise PluginError(
            f"--plugin {ref}: no module named {name!r}; give the path of a .py file or a module on PYTHONPATH"
        )
    origin = found.origin or name
    try:
        with registry.registering_from(origin):
            return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - whatever user code raises becomes one line naming its file
        sys.modules.pop(name, None)
        raise PluginError(_where(e, origin)) from None


def _where(error: BaseException, path: str) -> str:
    """'plugin FILE line N: what went wrong', the line being the plugin's own (its deepest frame)."""
    message = f"{type(error).__name__}: {error}" if not isinstance(error, registry.RegistryError) else str(error)
    if isinstance(error, SyntaxError) and error.filename:
        return f"plugin {error.filename} line {error.lineno}: SyntaxError: {error.msg}"
    frames = [f for f in traceback.extract_tb(error.__traceback__) if _same(f.filename, path)]
    line = f" line {frames[-1].lineno}" if frames else ""
    return f"plugin {path}{line}: {message}"


def _same(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return a == b
