"""The house rules that can be checked mechanically (see DESIGN.md, "Rules for library code").

* No private name crosses a module boundary: a name with a leading underscore is used only in
  the file that defines it. Internals shared between modules live in modules whose file name
  starts with an underscore (``_checks``, ``_runtime``, ...), under names without one, and are
  imported by name (``from ._runtime import warn``), never as the private module itself.
* Every public function and class of a module is listed in its ``__all__``.
* A function a reader can hold in their head: the engine's functions (``otbook/sinkhorn/``)
  stay within about 80 code lines, every other library function within 100.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / "otbook").rglob("*.py"))
TESTS = sorted((ROOT / "tests").glob("*.py"))
ENGINE_LIMIT, LIBRARY_LIMIT = 80, 100


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _imported_privates(path: pathlib.Path) -> list[str]:
    """``from X import _name``, and ``module._name`` on an imported module."""
    tree = ast.parse(path.read_text())
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
                else:
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                modules.add((alias.asname or alias.name).split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in modules):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("path", LIBRARY + TESTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_crosses_a_module_boundary(path):
    if path.name == "test_architecture.py":
        return
    assert _imported_privates(path) == []


def _code_lines(fn: ast.FunctionDef, source: list[str]) -> int:
    """Lines of a function without its docstring, blank lines and comment-only lines."""
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                             ast.Constant):
        body = body[1:]
    if not body:
        return 0
    lines = source[body[0].lineno - 1:fn.end_lineno]
    return sum(1 for ln in lines if ln.strip() and not ln.strip().startswith("#"))


def _functions(path):
    source = path.read_text().splitlines()
    for node in ast.walk(ast.parse("\n".join(source))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, _code_lines(node, source)


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_functions_fit_in_a_reader_s_head(path):
    limit = ENGINE_LIMIT if "sinkhorn" in path.parts else LIBRARY_LIMIT
    long = [f"{name} (line {line}): {n} code lines" for name, line, n in _functions(path)
            if n > limit]
    assert long == [], f"over {limit} code lines"


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_public_names_are_listed_in_all(path):
    tree = ast.parse(path.read_text())
    listed = None
    public = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__"
                                                for t in node.targets):
            listed = set(ast.literal_eval(node.value))
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            public.append(node.name)
    if path.name == "__main__.py" or (listed is None and not public):
        return
    assert listed is not None, f"{path.name} has public names {public} but no __all__"
    assert sorted(set(public) - listed) == []
