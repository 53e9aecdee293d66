"""The engine packages import without cycles: not at run time, not for type checking, not inside
functions. A cycle there means two modules are one concept, or one reaches up a layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tether

PACKAGE = Path(tether.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, wherever the import statement is."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            module = node.module or ""
            target = f"{base}.{module}".strip(".") if node.level else module
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _cycle(package: str) -> list[str] | None:
    """A cycle among the modules of `package` (its `__init__` excluded), or None."""
    folder = PACKAGE / package.split(".", 1)[1]
    modules = {_module_name(p): p for p in folder.glob("*.py") if p.name != "__init__.py"}
    edges = {m: sorted(_imports(p) & (modules.keys() - {m})) for m, p in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for nxt in edges[module]:
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(modules):
        if module not in state and (found := visit(module)) is not None:
            return found
    return None


@pytest.mark.parametrize(
    "package", ["tether.flow", "tether.graph", "tether.tools", "tether.coordination"]
)
def test_engine_packages_have_no_import_cycles(package: str) -> None:
    assert _cycle(package) is None


def test_the_cycle_check_finds_a_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "tether"
    (fake / "ring").mkdir(parents=True)
    (fake / "ring" / "__init__.py").write_text("")
    (fake / "ring" / "a.py").write_text("from .b import x\n")
    (fake / "ring" / "b.py").write_text("def f():\n    from tether.ring.a import y\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", fake)
    assert _cycle("tether.ring") == ["tether.ring.a", "tether.ring.b", "tether.ring.a"]
