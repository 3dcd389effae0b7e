"""Issue 9 item 1, kept: crc_core has no function over ~70 lines, imports no private name across modules, and its
modules import each other without a cycle (imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "crc_core"
MAX_FUNCTION_LINES = 70


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(encoding="utf-8"))
    return out


def _imported(module: str, node: ast.ImportFrom | ast.Import, is_package: bool) -> list[str]:
    """Absolute names of the crc_core modules an import statement refers to."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("crc_core")]
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("crc_core"):
        return []
    return [target] + [f"{target}.{a.name}" for a in node.names]


def test_no_function_is_longer_than_a_screen():
    long = [(name, fn.name, fn.end_lineno - fn.lineno + 1) for name, tree in _modules().items()
            for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
            and fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long


def test_no_private_name_is_imported_across_modules():
    private = [(name, node.module, a.name) for name, tree in _modules().items() for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) for a in node.names
               if a.name.startswith("_") and not a.name.startswith("__")]
    assert not private


def _runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run (anywhere, functions included), not those under ``if TYPE_CHECKING:``."""
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in typing_only]


def test_modules_import_each_other_without_a_cycle():
    modules = _modules()
    packages = {name for name in modules if (ROOT.parent / name.replace(".", "/") / "__init__.py").exists()}
    graph = {name: sorted({t for node in _runtime_imports(tree) for t in _imported(name, node, name in packages)
                           if t in modules and t != name
                           and not name.startswith(t + ".")})  # a module may use its own package's __init__
             for name, tree in modules.items()}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in graph[name]:
            assert state.get(dep) != 1, " -> ".join([*path, name, dep])
            if dep not in state:
                visit(dep, [*path, name])
        state[name] = 2

    for name in graph:
        if name not in state:
            visit(name, [])
    assert len(graph) > 30  # the walk saw the package
