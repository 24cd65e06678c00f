"""The imports run one way: the package `gpt2/` imports nothing of `data/`, the scripts or the benchmarks;
`data/` may use `gpt2/` but no script; and no module of ours takes part in an import cycle.

Read from the source with `ast`, every import statement (at the top or inside a function) counted."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {p.stem for p in REPO.glob("*.py")}  # train, distill, evaluate, sample, report, study, bench
# A lower layer may not import a higher one. bench.py is the benchmarks' entry point, their layer.
LAYER = {"gpt2": 0, "data": 1, **{name: 2 for name in SCRIPTS}, "benchmarks": 3, "bench": 3}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_imports(path: Path) -> set[str]:
    """The modules of this repository that `path` imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    ours = set()
    for name in names:
        while name and not ((REPO / name.replace(".", "/")).with_suffix(".py").is_file()
                            or (REPO / name.replace(".", "/") / "__init__.py").is_file()):
            name = name.rpartition(".")[0]  # `from gpt2 import tokenizer` names a module; `import x.y.Class` not
        if name and name.split(".")[0] in LAYER:
            ours.add(name)
    return ours


def import_graph() -> dict[str, set[str]]:
    files = [*REPO.glob("*.py"), *REPO.glob("gpt2/**/*.py"), *REPO.glob("data/*.py"), *REPO.glob("benchmarks/*.py")]
    return {module_name(p): our_imports(p) - {module_name(p)} for p in files}


def test_no_module_imports_a_higher_layer():
    upward = [(m, dep) for m, deps in import_graph().items() for dep in deps
              if LAYER[dep.split(".")[0]] > LAYER[m.split(".")[0]]]
    assert upward == [], upward


def test_no_import_cycles():
    graph = import_graph()
    # A package's __init__ re-exports its modules: importing `gpt2` means importing what __init__ imports.
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    packages = {"gpt2", "gpt2.metrics", "data"}  # `import gpt2.x` runs gpt2/__init__ first: not a cycle of ideas
    cycles = [c for c in cycles if not set(c) & packages]
    assert cycles == [], cycles
