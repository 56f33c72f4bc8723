"""The package layout's rules (README "Layout"), read from the source: no import cycle inside
``recbole_psrq``, and each package imports only what its row in the README allows."""
import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "recbole_psrq"


def module_name(path):
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules():
    return {module_name(p): p for p in PACKAGE_ROOT.rglob("*.py")}


def imported_modules(path, known):
    """Every module ``path`` imports, at module level or inside a function: ``from pkg import sub`` counts as
    an import of ``pkg.sub`` when that is a module of the package, else of ``pkg``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return found


def import_graph():
    modules = all_modules()
    return {name: {m for m in imported_modules(path, modules) if m in modules and m != name}
            for name, path in modules.items()}


def find_cycle(graph):
    """One import cycle as a list of modules (first == last), or None (iterative DFS, three colours)."""
    state = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return None


def test_no_import_cycle_inside_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_sees_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) in (["a", "b", "c", "a"], ["b", "c", "a", "b"], ["c", "a", "b", "c"])
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _third_party_imports(package):
    modules = all_modules()
    for name, path in modules.items():
        if name == package or name.startswith(package + "."):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    yield name, [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    yield name, [node.module or ""]


@pytest.mark.parametrize("package, forbidden", [
    ("recbole_psrq.quantization", ("recbole", "recbole_psrq.data", "recbole_psrq.model", "recbole_psrq.quick_start")),
    ("recbole_psrq.convert", ("recbole", "recbole_psrq.model", "recbole_psrq.quick_start", "recbole_psrq.benchmark")),
    ("recbole_psrq.encode", ("recbole", "recbole_psrq.model", "recbole_psrq.quick_start", "recbole_psrq.convert",
                             "recbole_psrq.benchmark")),
    ("recbole_psrq.data", ("recbole_psrq.convert", "recbole_psrq.encode", "recbole_psrq.benchmark",
                           "recbole_psrq.model")),
])
def test_packages_import_only_what_their_layout_row_allows(package, forbidden):
    offenders = [(name, mod) for name, mods in _third_party_imports(package) for mod in mods
                 if any(mod == f or mod.startswith(f + ".") for f in forbidden)]
    assert not offenders, f"{package} may not import {forbidden}: {offenders}"
