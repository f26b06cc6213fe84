"""The house's import rules, read from the source: drivers see the core through `gateway.driver` alone, the core
imports no driver, no import loop hides behind import order, and every module imports on its own."""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

PROJECT = ("gateway", "drivers", "models", "bench", "peers", "tests")
IMPORTED_ALONE = ("gateway", "drivers", "models", "bench", "peers")
DRIVER_API = "gateway.driver"


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the module imported (for `from X import name`, X.name when that is a module, else X)
    line: int
    type_only: bool  # under `if TYPE_CHECKING:`


def modules(packages: tuple[str, ...] = PROJECT) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[Import]:
    """Every import in a module, at any depth (a function's own imports too), with the module it names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    type_only = {id(n) for node in ast.walk(tree) if _type_checking(node) for n in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in dict.fromkeys(targets):
            yield Import(name, target, node.lineno, id(node) in type_only)


def _project(target: str) -> bool:
    return target.split(".")[0] in PROJECT


def test_drivers_see_the_core_through_gateway_driver_alone() -> None:
    """Every module under drivers/ (the virtual venue's too: it needs nothing more) imports from the core only
    `gateway.driver`, at any depth and for types too, so a site's own driver has one stable surface to follow."""
    known = modules()
    wrong = [f"{known[i.module].relative_to(ROOT)}:{i.line} imports {i.target}"
             for name, path in known.items() if name.startswith("drivers.")
             for i in imports(name, path, known)
             if i.target.split(".")[0] == "gateway" and i.target != DRIVER_API]
    assert not wrong, "drivers import the core through gateway.driver only:\n" + "\n".join(wrong)


def test_the_core_imports_no_driver() -> None:
    """Drivers are found by name (entry points, or `package.module:Class`); the core never names one."""
    known = modules()
    wrong = [f"{known[i.module].relative_to(ROOT)}:{i.line} imports {i.target}"
             for name, path in known.items() if name.startswith("gateway.")
             for i in imports(name, path, known) if i.target.split(".")[0] == "drivers"]
    assert not wrong, "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_loop_but_type_only_ones() -> None:
    """A loop is a loop even when a function-local import keeps it from failing today: every import counts, at
    any depth, except those under `if TYPE_CHECKING:`. A module importing `a.b` imports package `a` too."""
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for i in imports(name, path, known):
            if i.type_only or not _project(i.target):
                continue
            target = i.target
            while target and target not in known:
                target = target.rpartition(".")[0]
            parts = target.split(".")
            for depth in range(1, len(parts) + 1):  # the packages on the way are imported first
                step = ".".join(parts[:depth])
                if step in known and step != name:
                    graph[name].add(step)
    loops = _cycles(graph)
    assert not loops, "import loops (not type-only):\n" + "\n".join(" <-> ".join(loop) for loop in loops)


# Run by a fresh interpreter: third-party libraries are imported once, then each module of the project in a child
# forked from that state, so no module of the project is loaded before the one being tried.
_EACH_ALONE = """
import importlib, json, os, sys, traceback
names, libraries = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for library in libraries:
    try:
        importlib.import_module(library)
    except Exception:
        pass  # the module needing it will say so
assert not [m for m in sys.modules if m.split(".")[0] in {n.split(".")[0] for n in names}], "project loaded early"
failed = {}
for name in names:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code = 0
        try:
            importlib.import_module(name)
        except BaseException:
            os.write(write, traceback.format_exc().encode())
            code = 1
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        text = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failed[name] = text or f"exit status {status}"
print(json.dumps(failed))
"""


def test_every_module_imports_on_its_own() -> None:
    """Each module of gateway/, drivers/, models/, bench/ and peers/ imported first, alone, in a process of its own:
    an import loop or a missing import that another module's import order hides fails here. (`__main__` modules
    run their program when imported; what they import is imported here on its own.)"""
    known = modules()
    names = sorted(n for n in known if n.split(".")[0] in IMPORTED_ALONE and not n.endswith(".__main__"))
    libraries = sorted({i.target.split(".")[0] for name, path in known.items() for i in imports(name, path, known)
                        if not i.type_only and not _project(i.target) and i.target.split(".")[0] != "__future__"
                        and i.target.split(".")[0] not in sys.stdlib_module_names})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", _EACH_ALONE, json.dumps(names), json.dumps(libraries)],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=150)
    assert result.returncode == 0, result.stderr
    failed: dict[str, str] = json.loads(result.stdout.splitlines()[-1])
    assert len(names) > 100
    assert not failed, "\n\n".join(f"import {name} alone:\n{text}" for name, text in failed.items())


def test_names_moved_out_of_gateway_config_still_import_from_it_with_a_warning() -> None:
    """A site's driver written against 0.1 keeps working for a release, and is told where each name went."""
    from gateway import config

    for name, home in config._MOVED.items():
        with pytest.warns(DeprecationWarning, match=f"{home}.{name}"):
            moved = getattr(config, name)
        assert moved is getattr(importlib.import_module(home), name)
    with pytest.raises(AttributeError):
        config.NoSuchName  # noqa: B018
