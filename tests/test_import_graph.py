"""The import contract of the installed package, checked on its source with `ast`.

Arrows point one way: CLI and plugins -> public API -> pipeline stages (engine.training,
inference, evaluation, analysis, distributed) -> store, runs, contracts, losses. So:

* no import cycles anywhere in `astrotransfer` (function-local imports count too: a cycle
  hidden in a function is still a cycle, it only fails later);
* nothing in `astrotransfer.engine` imports `astrotransfer.plugins` or `astrotransfer.cli`
  (nor the public API module, which sits above the engine).

The one exemption is a package's module-level `__getattr__`: the lazy re-exports of the
top-level package point down into everything by design, and run only when a name is used.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import astrotransfer


def _package_roots() -> dict[str, Path]:
    """Dotted package name -> source folder, for the three installed top-level folders."""
    roots = {}
    for name in ("astrotransfer", "astrotransfer.plugins", "astrotransfer.surveys"):
        roots[name] = Path(importlib.import_module(name).__path__[0])
    return roots


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the installed package: name -> (file, is a package __init__)."""
    mods: dict[str, tuple[Path, bool]] = {}
    roots = _package_roots()
    for pkg, root in roots.items():
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            if any(part in ("__pycache__",) for part in rel.parts):
                continue
            parts = list(rel.parts)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            name = ".".join([pkg, *parts])
            # plugins/ and surveys/ sit beside core/, never inside it; skip stray copies
            if pkg == "astrotransfer" and parts[:1] in (["plugins"], ["surveys"]):
                continue
            mods[name] = (path, is_pkg)
    return mods


def _lazy_bodies(tree: ast.Module) -> set[int]:
    """ids of nodes inside a module-level `def __getattr__` (lazy re-exports)."""
    skip: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            skip.update(id(n) for n in ast.walk(node))
    return skip


def import_graph() -> dict[str, set[str]]:
    """module -> the astrotransfer modules it imports (absolute and relative imports)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, (path, is_pkg) in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        skip = _lazy_bodies(tree)
        package = name if is_pkg else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                for alias in node.names:
                    sub = f"{src}.{alias.name}"
                    targets.append(sub if sub in mods else src)
            for t in targets:
                while t and t not in mods:  # `import a.b.c` of a non-module attribute
                    t = t.rpartition(".")[0]
                if t and t.startswith("astrotransfer") and t != name:
                    graph[name].add(t)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_import_graph_has_no_cycles():
    graph = import_graph()
    assert len(graph) > 50, "the walk found too few modules; is the package installed?"
    assert "astrotransfer.engine.training.dispatch" in graph
    cycles = find_cycles(graph)
    print(f"\nimport graph: {len(graph)} modules, "
          f"{sum(len(v) for v in graph.values())} edges, {len(cycles)} cycle(s)")
    for c in cycles:
        print("  cycle:", " <-> ".join(c))
    assert not cycles, f"import cycles: {cycles}"


def test_engine_imports_nothing_above_it():
    graph = import_graph()
    above = ("astrotransfer.plugins", "astrotransfer.cli", "astrotransfer.api",
             "astrotransfer.demo")
    bad = sorted(f"{m} -> {t}" for m, ts in graph.items() if m.startswith("astrotransfer.engine")
                 for t in ts if t.startswith(above))
    print(f"\nengine -> plugins/cli/api imports: {len(bad)}")
    for line in bad:
        print("  ", line)
    assert not bad


def test_no_engine_functions_swapped_at_run_time():
    """No module assigns into another module's namespace (the old rank-aware swap)."""
    offenders = []
    for name, (path, _) in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr":
                first = node.args[0] if node.args else None
                if isinstance(first, ast.Name) and first.id.endswith(("_mod", "module")):
                    offenders.append(f"{name}:{node.lineno}")
    assert not offenders, offenders


def test_package_is_the_installed_one():
    assert Path(astrotransfer.__file__).parent.name in ("core", "astrotransfer")


def test_tools_use_only_the_public_api():
    """tools/ are clients like any notebook: `import astrotransfer` and its public names
    only, nothing from the engine and nothing from tests/."""
    root = Path(__file__).resolve().parents[1] / "tools"
    public = set(astrotransfer.__all__)
    bad = []
    for path in sorted(root.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        if "conftest" in text or '"tests"' in text:
            bad.append(f"{path.name}: reaches into tests/")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                bad += [f"{path.name}:{node.lineno} import {a.name}" for a in node.names
                        if a.name.startswith("astrotransfer.")]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("astrotransfer"):
                if node.module != "astrotransfer":
                    bad.append(f"{path.name}:{node.lineno} from {node.module}")
                else:
                    bad += [f"{path.name}:{node.lineno} {a.name}" for a in node.names
                            if a.name not in public]
    assert not bad, bad
