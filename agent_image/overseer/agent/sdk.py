"""The anthropic SDK, imported lazily: `from .sdk import anthropic`.

`import anthropic` runs the package's `__init__`, which imports every type of every API the SDK
covers (some 3,000 modules, 2-3 s of CPU on 2 cores), and so does any `import anthropic.x`, and
the SDK's own modules import from `anthropic.types` and its subpackages, whose `__init__`s do the
same. A goal pod needs the client and the Messages API only. So, for the `anthropic` packages
only, this module's import finder creates each package without running its `__init__` and
resolves a name the `__init__` re-exports (`from .x import Name`) on first use, by importing
just module `x`: the laziness Python's own lazy imports (PEP 810) would give. A name the
`__init__` does not re-export that way (and no submodule has) runs the whole `__init__`, so any
use of the SDK keeps working, only less cheaply. tests/test_agent_imports.py keeps the budget.
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.machinery
import os
import sys
from types import ModuleType
from typing import Any

ROOT = "anthropic"


def reexports(init_path: str) -> tuple[dict[str, tuple[str, str]], list[str], bool]:
    """What an `__init__` re-exports, name -> (submodule, attribute); what `import *` takes from
    it; and whether it does anything else (a star import, a call...) that only running it would do."""
    with open(init_path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), init_path)
    names: dict[str, tuple[str, str]] = {}
    star: list[str] | None = None
    other = False
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                if alias.name == "*":
                    other = True
                else:
                    names[alias.asname or alias.name] = (node.module, alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        elif isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]:
            star = list(ast.literal_eval(node.value))
        else:
            other = True
    return names, star if star is not None else [n for n in names if not n.startswith("_")], other


class _LazyPackage(importlib.abc.Loader):
    def __init__(self, real: importlib.abc.Loader, names: dict[str, tuple[str, str]], star: list[str],
                 other: bool) -> None:
        self.real, self.names, self.star, self.other = real, names, star, other

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        names, loader = self.names, self

        def __getattr__(name: str) -> Any:  # PEP 562: called only for names not set yet
            if name in names:
                submodule, attribute = names[name]
                value = getattr(importlib.import_module(f"{module.__name__}.{submodule}"), attribute)
                setattr(module, name, value)
                return value
            if not name.startswith("__"):
                full = f"{module.__name__}.{name}"
                if importlib.machinery.PathFinder.find_spec(full, module.__path__) is not None:
                    return importlib.import_module(full)
                if loader.other:
                    loader.other = False
                    loader.real.exec_module(module)  # the whole __init__, as a plain import would run it
                    if name in module.__dict__:
                        return module.__dict__[name]
            raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")

        module.__getattr__ = __getattr__  # type: ignore[method-assign]
        module.__dict__["__all__"] = list(self.star)  # `from package import *` then resolves each name


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != ROOT and not fullname.startswith(ROOT + "."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.submodule_search_locations is None or not spec.origin or spec.loader is None:
            return spec  # a plain module (or a namespace package): imported as usual
        spec.loader = _LazyPackage(spec.loader, *reexports(spec.origin))
        return spec


def _install() -> None:
    if ROOT in sys.modules:
        return  # imported already, the plain way: nothing left to save
    sys.meta_path.insert(0, _Finder())


_install()
import anthropic  # noqa: E402 - after the finder, on purpose

if os.environ.get("ANTHROPIC_LOG"):  # what the package's __init__ would have set up
    from anthropic._utils._logs import setup_logging

    setup_logging()

__all__ = ["anthropic"]
