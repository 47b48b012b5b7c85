"""Architecture rules of HCCFusionLib, checked from the source with `ast` (nothing is imported).

- Imports go one way: the graph of HCCFusionLib modules (module-level and function-level imports) has no cycle.
- No library file is over 600 lines.
- Only `demo` imports `phantom` (the synthetic data generator is a demo/test tool, never a library dependency).
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

LIB = Path(os.environ.get("HCCFUSION_ARCH_ROOT", Path(__file__).resolve().parents[1])) / "HCCFusionLib"
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under HCCFusionLib (packages by their __init__)."""
    out = {}
    for path in sorted(LIB.rglob("*.py")):
        parts = list(path.relative_to(LIB.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """Absolute dotted name of the module an `ImportFrom` reads from."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Edges module -> HCCFusionLib modules it imports anywhere in its body (functions included)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(name, path, node)
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.append(sub if sub in modules else source)
            for target in targets:
                while target and target not in modules:  # `import HCCFusionLib.x.y` -> nearest known module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_reports_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_sees_function_level_imports():
    graph = import_graph()
    assert "HCCFusionLib.study" in graph["HCCFusionLib.io"]  # module level
    assert "HCCFusionLib.phantom" in graph["HCCFusionLib.demo"]
    assert "HCCFusionLib.pipeline" in graph["HCCFusionLib.demo"]  # inside run_demo


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_library_file_over_600_lines():
    long = {str(p.relative_to(LIB.parent)): n for p in LIB.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines (split them by job): {long}"


def test_only_demo_imports_phantom():
    graph = import_graph()
    users = sorted(name for name, targets in graph.items()
                   if not name.startswith("HCCFusionLib.phantom") and name != "HCCFusionLib.demo"
                   and any(t == "HCCFusionLib.phantom" or t.startswith("HCCFusionLib.phantom.") for t in targets))
    assert not users, f"library modules importing phantom (only demo and tests may): {users}"
