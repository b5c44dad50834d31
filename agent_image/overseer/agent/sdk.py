"""The anthropic SDK, imported lazily: `from .sdk import anthropic`.

`import anthropic` runs the package's `__init__`, which imports every type of every API the SDK
covers (some 3,000 modules, 2-3 s of CPU on 2 cores), and so does any `import anthropic.x`, and
the SDK's own modules import from `anthropic.types` and its subpackages, whose `__init__`s do the
same. A goal pod needs the client and the Messages API only. So, for the `anthropic` packages
only, this module's import finder creates each package without running its `__init__` and
resolves a name the `__init__` re-exports (`from .x import Name`) on first use, by importing
just module `x`: the laziness Python's own lazy imports (PEP 810) would give. A name the
`__init__` does not re-export that way (and no submodule has) runs the whole `__init__`, so any
use of the SDK keeps working, only less cheaply. tests/test_start_imports.py keeps the budget.

A few functions the SDK's modules take at import but call rarely (DEFERRED) are stand-ins that
load their module at their first call: what they would import costs more than everything else on
the way to the first request. Likewise a few imports (MOVED) run inside the only functions that
use their names, at their first call.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

ROOT = "anthropic"

DEFERRED: dict[str, tuple[str, ...]] = {
    # The base client takes it at import and calls it for an error response only: the module maps
    # every error code of every API to its class (some 200 modules of types).
    "anthropic._error_classes": ("make_status_error",),
    # Called only for a span that records, which the agent's client has only when the environment
    # names a tracer provider (backoff.model_client), or by the streaming helpers: their modules
    # import the types of the whole beta Messages API.
    "anthropic.lib._tracing": ("finish_api_call_span", "messages_create_request_attributes", "get",
                               "share_message_snapshot", "withhold_message_snapshot"),
}


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


MOVED: dict[str, tuple[str, ...]] = {
    # Used by parse_beta_response alone, for the beta API's responses: the types of every beta block.
    "anthropic.lib._parse._response": ("BetaMessage", "ParsedBetaMessage", "ParsedBetaTextBlock",
                                       "ParsedBetaContentBlock"),
}


def move_imports(tree: ast.Module, names: set[str]) -> dict[str, ast.ImportFrom]:
    """Move the module-level `from x import name` of names into the top-level functions that use
    them, in place; the import each name had. Nothing moves (and {} is returned) unless the module
    has postponed annotations and uses the names in function bodies only."""
    if not any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and
               any(a.name == "annotations" for a in n.names) for n in tree.body):
        return {}
    moved = {a.asname or a.name: ast.ImportFrom(node.module, [a], node.level) for node in tree.body
             if isinstance(node, ast.ImportFrom) for a in node.names if (a.asname or a.name) in names}

    def used(nodes: list[Any]) -> set[str]:
        return {n.id for node in nodes if node is not None for n in ast.walk(node)
                if isinstance(n, ast.Name) and n.id in moved}

    users: list[tuple[ast.FunctionDef | ast.AsyncFunctionDef, set[str]]] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if used([*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]):
                return {}
            users.append((node, used(node.body)))
        elif not isinstance(node, ast.ImportFrom) and used([node]):
            return {}  # needed at import: nothing to gain
    for function, needed in users:
        at = 1 if ast.get_docstring(function) is not None else 0
        function.body[at:at] = [moved[name] for name in sorted(needed)]
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            node.names = [a for a in node.names if (a.asname or a.name) not in moved]
    tree.body = [n for n in tree.body if not isinstance(n, ast.ImportFrom) or n.names]
    ast.fix_missing_locations(tree)
    return moved


class _MovedImports(importlib.machinery.SourceFileLoader):
    """A module compiled with its MOVED imports inside the functions that use them; its attributes
    of those names resolve on first use, as if imported."""

    def get_code(self, fullname: str) -> Any:
        tree = ast.parse(self.get_data(self.path), self.path)
        self.moved = move_imports(tree, set(MOVED[fullname]))
        return compile(tree, self.path, "exec", dont_inherit=True)

    def exec_module(self, module: ModuleType) -> None:
        super().exec_module(module)
        moved, package = self.moved, module.__package__

        def __getattr__(name: str) -> Any:
            if name not in moved:
                raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")
            node = moved[name]
            source = importlib.import_module(importlib.util.resolve_name("." * node.level + (node.module or ""), package))
            return getattr(source, node.names[0].name)

        if moved:
            module.__getattr__ = __getattr__  # type: ignore[method-assign]


def _stand_in(name: str, real: Callable[[], Any]) -> Any:
    """A function that calls what real() returns: the real function, loaded at the first call."""
    def call(*args: Any, **kwargs: Any) -> Any:
        return real()(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


class _DeferredModule(importlib.abc.Loader):
    """A module that runs on the first use of anything but its DEFERRED functions."""

    def __init__(self, real: importlib.abc.Loader, deferred: tuple[str, ...]) -> None:
        self.real, self.deferred = real, deferred

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        real = self.real

        def run() -> ModuleType:
            if module.__dict__.pop("__getattr__", None) is not None:
                real.exec_module(module)  # its own functions replace the stand-ins
            return module

        def __getattr__(name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")
            return getattr(run(), name)

        for name in self.deferred:
            setattr(module, name, _stand_in(name, functools.partial(lambda n: getattr(run(), n), name)))
        module.__getattr__ = __getattr__  # type: ignore[method-assign]


class _LazyPackage(importlib.abc.Loader):
    def __init__(self, real: importlib.abc.Loader, names: dict[str, tuple[str, str]], star: list[str],
                 other: bool) -> None:
        self.real, self.names, self.star, self.other = real, names, star, other

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        names, loader = self.names, self
        for name in DEFERRED.get(module.__name__, ()):
            submodule, attribute = names[name]
            real = functools.partial(lambda s, a: getattr(importlib.import_module(s), a),
                                     f"{module.__name__}.{submodule}", attribute)
            setattr(module, name, _stand_in(name, real))

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
        if spec is None or not spec.origin or spec.loader is None:
            return spec
        if spec.submodule_search_locations is None:
            if fullname in DEFERRED:
                spec.loader = _DeferredModule(spec.loader, DEFERRED[fullname])
            elif fullname in MOVED:
                spec.loader = _MovedImports(fullname, spec.origin)
            return spec  # a plain module: imported as usual
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
