"""The bundle's own copy of cohortseg: the source of the transforms a bundle runs
(:mod:`cohortseg.inference.bundle.transforms`, the predictor) and of every cohortseg function,
class and constant they reach, copied verbatim into one module that imports no cohortseg
(``scripts/cohortseg_portable.py``), so that the bundle runs wherever MONAI runs and segments
exactly as the library does.

The copy is made when a bundle is exported, by following names: a name a definition uses is
looked up among its module's top-level statements, and a cohortseg import, definition or
constant is copied too (and what it uses, in turn), any other import is kept. So the module
cannot drift from the library: it is the library's code of the day it was exported.
"""

from __future__ import annotations

import ast
import inspect
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from types import ModuleType

from cohortseg.core.errors import CohortsegError
from cohortseg.inference.bundle.transforms import (
    PrepareImaged,
    PrepareLabeld,
    RestoreLabelsd,
    SaveLabelsd,
    segment_images,
)
from cohortseg.inference.predictor import Predictor

#: The module's name under the bundle's ``scripts/`` (configs name its members
#: ``scripts.cohortseg_portable.NAME``).
MODULE_NAME = "cohortseg_portable"

#: What bundles' configs use; everything they reach comes along.
ROOTS = (PrepareImaged, PrepareLabeld, RestoreLabelsd, SaveLabelsd, segment_images, Predictor)

#: Imports of cohortseg's modules that a clean MONAI environment lacks, and what the portable
#: module imports instead: ISA-L's gzip reads and writes the same bytes as the standard
#: library's (``decompress(data)``, ``compress(data, compresslevel, mtime=...)``), faster.
SUBSTITUTES = {("isal", "igzip"): ("gzip", None)}


@dataclass
class _Module:
    """A cohortseg module's source and what each of its top-level names is bound by."""

    module: ModuleType
    lines: list[str]
    bindings: dict[str, tuple[ast.stmt, ast.alias | None]]


@dataclass
class _Copy:
    """What the portable module holds: third-party and standard-library imports as (module,
    name, as-name) with ``name`` None for ``import module``, and cohortseg definitions in an
    order where each one's dependencies at definition time come first."""

    imports: dict[str, tuple[str, str | None, str | None]] = field(default_factory=dict)
    definitions: dict[str, tuple[str, str]] = field(default_factory=dict)
    visiting: set[str] = field(default_factory=set)
    modules: dict[str, _Module] = field(default_factory=dict)


def portable_source(roots: Sequence[object] = ROOTS) -> str:
    """The text of ``scripts/cohortseg_portable.py``: every cohortseg definition that
    ``roots`` (functions and classes of cohortseg) reach, verbatim, and the imports they need
    besides cohortseg.

    Raises
    ------
    CohortsegError
        If a definition reaches cohortseg in a way that cannot be copied (a whole module
        imported, a name imported under another name, or two definitions of one name).
    """
    copy = _Copy()
    for root in roots:
        module = _module(copy, sys.modules[root.__module__])  # type: ignore[attr-defined]
        _add_name(copy, module, root.__name__)  # type: ignore[attr-defined]
    return _render(copy)


def _module(copy: _Copy, module: ModuleType) -> _Module:
    """The parsed top-level bindings of a cohortseg module (cached)."""
    if module.__name__ not in copy.modules:
        source = inspect.getsource(module)
        bindings: dict[str, tuple[ast.stmt, ast.alias | None]] = {}
        for stmt in ast.parse(source).body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bindings[stmt.name] = (stmt, None)
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        bindings[target.id] = (stmt, None)
            elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
                for alias in stmt.names:
                    bound = alias.asname or alias.name.split(".")[0]
                    bindings[bound] = (stmt, alias)
        copy.modules[module.__name__] = _Module(module, source.splitlines(), bindings)
    return copy.modules[module.__name__]


def _add_name(copy: _Copy, module: _Module, name: str) -> None:
    """Copy what ``name`` is bound to at the top of ``module`` (nothing for builtins and
    locals)."""
    if name not in module.bindings:
        return
    stmt, alias = module.bindings[name]
    if alias is None:
        _add_definition(copy, module, name, stmt)
    elif isinstance(stmt, ast.ImportFrom) and (stmt.module or "").startswith("cohortseg"):
        if alias.asname not in (None, alias.name):
            raise _cannot(module, f"imports {alias.name} as {alias.asname}")
        target = getattr(module.module, name)
        if not inspect.isfunction(target) and not inspect.isclass(target):
            raise _cannot(
                module,
                f"imports {name}, which is not a function or class (import functions by name)",
            )
        _add_name(copy, _module(copy, sys.modules[target.__module__]), name)
    elif isinstance(stmt, ast.Import) and alias.name.startswith("cohortseg"):
        raise _cannot(module, f"imports the module {alias.name}; import its functions by name")
    else:
        _add_import(copy, module, name, stmt, alias)


def _add_import(copy: _Copy, module: _Module, name: str, stmt: ast.stmt, alias: ast.alias) -> None:
    """Keep a third-party or standard-library import, substituted where
    :data:`SUBSTITUTES` says."""
    if isinstance(stmt, ast.ImportFrom):
        entry = (stmt.module or "", alias.name, alias.asname)
        if (stmt.module, alias.name) in SUBSTITUTES:
            instead, _ = SUBSTITUTES[(stmt.module or "", alias.name)]
            entry = (instead, None, name if name != instead else None)
    else:
        entry = (alias.name, None, alias.asname)
    if copy.imports.setdefault(name, entry) != entry:
        raise _cannot(module, f"binds {name} to {entry}, another module to {copy.imports[name]}")


def _add_definition(copy: _Copy, module: _Module, name: str, stmt: ast.stmt) -> None:
    """Copy a top-level definition or assignment after what it uses."""
    origin = module.module.__name__
    if name in copy.definitions:
        if copy.definitions[name][0] != origin:
            raise _cannot(module, f"defines {name}, as {copy.definitions[name][0]} does")
        return
    if name in copy.visiting:  # functions that call each other: either order works
        return
    copy.visiting.add(name)
    used = {node.id for node in ast.walk(stmt) if isinstance(node, ast.Name)} - {name}
    for other in sorted(used):
        _add_name(copy, module, other)
    decorators = getattr(stmt, "decorator_list", [])
    start = min([stmt.lineno, *(d.lineno for d in decorators)])
    end = stmt.end_lineno or stmt.lineno
    copy.definitions[name] = (origin, "\n".join(module.lines[start - 1 : end]))
    copy.visiting.discard(name)


def _render(copy: _Copy) -> str:
    """The module's text: a docstring, the imports, then each definition under a comment that
    names where it comes from."""
    plain = sorted(
        f"import {m} as {a}" if a else f"import {m}"
        for m, n, a in copy.imports.values()
        if n is None
    )
    grouped: dict[str, list[str]] = {}
    for m, n, a in copy.imports.values():
        if n is not None:
            grouped.setdefault(m, []).append(f"{n} as {a}" if a else n)
    froms = [f"from {m} import {', '.join(sorted(set(ns)))}" for m, ns in sorted(grouped.items())]
    modules = sorted({origin for origin, _ in copy.definitions.values()})
    header = (
        f'"""cohortseg {version("cohortseg")}: its way into the plan\'s grid, predictor and way '
        "back,\ncopied verbatim from the library when this bundle was exported, so that the "
        "bundle runs\nwithout cohortseg. Do not edit: export the bundle again.\n\nFrom: "
        + ", ".join(modules)
        + '.\n"""\n\nfrom __future__ import annotations\n\n'
    )
    body = [f"# {origin}.{name}\n{text}" for name, (origin, text) in copy.definitions.items()]
    return header + "\n".join(plain + froms) + "\n\n\n" + "\n\n\n".join(body) + "\n"


def _cannot(module: _Module, problem: str) -> CohortsegError:
    return CohortsegError(
        f"scripts/{MODULE_NAME}.py cannot hold the code of {module.module.__name__}: it {problem}"
    )
