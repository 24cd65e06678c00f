"""The imports run one way, in three floors: the package `gpt2/` imports nothing of ours above it; `data/` may
use `gpt2/`; on top, side by side, the pipeline's scripts (train.py, distill.py, evaluate.py, sample.py,
report.py), the studies (`studies/`) and the benchmarks (`benchmarks/`), each importing only the floors below
and itself. No module imports a script; no module of ours takes part in an import cycle; and `gpt2/` holds no
module that only the studies use.

Read from the source with `ast`, every import statement (at the top or inside a function) counted."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {p.stem for p in REPO.glob("*.py")}  # train, distill, evaluate, sample, report
PACKAGES = ("gpt2", "data", "studies", "benchmarks")
# A floor may import the floors below it and its own package; the top floor's three neighbours not each other.
LAYER = {"gpt2": 0, "data": 1, "studies": 2, "benchmarks": 2, **{name: 2 for name in SCRIPTS}}


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
    files = [*REPO.glob("*.py"), *(p for package in PACKAGES for p in REPO.glob(f"{package}/**/*.py"))]
    return {module_name(p): our_imports(p) - {module_name(p)} for p in files}


def top(name: str) -> str:
    return name.split(".")[0]


def test_every_module_has_a_floor():
    assert set(map(top, import_graph())) <= set(LAYER), "a new top-level folder or script: give it a floor in LAYER"


def test_no_module_imports_a_higher_floor_or_a_neighbour():
    wrong = [(m, dep) for m, deps in import_graph().items() for dep in deps
             if top(dep) != top(m) and LAYER[top(dep)] >= LAYER[top(m)]]
    assert wrong == [], wrong


def test_no_module_imports_a_script():
    graph = import_graph()
    assert [(m, dep) for m, deps in graph.items() for dep in deps if dep in SCRIPTS] == []
    assert SCRIPTS == {"train", "distill", "evaluate", "sample", "report"}  # the pipeline, and nothing else


def test_the_package_holds_no_module_only_the_studies_use():
    """A module of gpt2/ is there for the package, the data or the scripts: imported by at least one module
    outside studies/ (a module the studies alone import belongs in studies/)."""
    graph = import_graph()
    users = {m: {u for u, deps in graph.items() if m in deps} for m in graph if top(m) == "gpt2"}
    studies_only = [m for m, us in users.items() if us and all(top(u) == "studies" for u in us)]
    assert studies_only == [], studies_only


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
