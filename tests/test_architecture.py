"""The import rules of docs/dev/architecture.md, read from the source with ``ast``."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"probes": "repscope.probes", "training": "repscope.training", "analyses": "repscope.analyses",
           "repscope": "repscope"}
COMPUTE = ("dims", "lazy", "cka", "rdms", "measures", "uncertainty", "mds", "figure_data", "findings", "cca",
           "procrustes", "measure_checks", "replication", "reuse")


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = [FOLDERS[rel.parts[0]], *rel.parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(source: str, module: str, is_package: bool = False):
    """``(name, members)`` for every import statement in ``source`` (any depth): the
    absolute module name (relative ones resolved) and, for ``from name import a, b``,
    the names imported from it; ``importlib.import_module`` / ``__import__`` with a
    literal name count as ``import name``."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            yield prefix, tuple(alias.name for alias in node.names)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("__import__", "import_module")))):
            yield node.args[0].value, ()


def imports(source: str, module: str, is_package: bool = False) -> set[str]:
    """Absolute names of everything ``source`` imports (any depth, relative resolved,
    and ``importlib.import_module`` / ``__import__`` with a literal name)."""
    found = set()
    for name, members in _imported(source, module, is_package):
        found.add(name)
        found.update(f"{name}.{member}" for member in members)
    return found


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _sources():
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            yield path, _module_name(path), imports(path.read_text(), _module_name(path), path.name == "__init__.py")


RULES = [  # (which modules, forbidden import prefix, why)
    ("repscope.probes", "repscope.training", "probes works on any model"),
    ("repscope.probes", "repscope.analyses", "probes works on any model"),
    ("repscope.analyses", "repscope.training", "analyses reads records, whatever made them"),
    ("repscope.training", "repscope.analyses", "the data flow does not run backwards"),
    *[(package, driver, "the end-to-end drivers sit above the subpackages")
      for package in ("repscope.probes", "repscope.training", "repscope.analyses")
      for driver in ("repscope.reproduce", "repscope.feature_reuse")],
    *[(f"repscope.analyses.{m}", forbidden, "compute, I/O and plotting stay apart")
      for m in COMPUTE for forbidden in ("matplotlib", "repscope.analyses.plots", "repscope.analyses.saving",
                                         "repscope.analyses.pipeline")],
]


# The only imports of the top floor from below: ``python analyses/layer_similarity.py`` and
# ``python analyses/feature_reuse.py`` are the documented paths of the end-to-end commands,
# kept as thin scripts that run their driver's main (each module imports nothing else, and
# nothing imports it).
THIN_SCRIPTS = {"layer_similarity": "repscope.reproduce", "feature_reuse": "repscope.feature_reuse"}
EXCEPTIONS = {(f"repscope.analyses.{script}", name) for script, driver in THIN_SCRIPTS.items()
              for name in (driver, f"{driver}.main")}


def violations(sources) -> list[str]:
    found = []
    for path, module, names in sources:
        for name in names:
            if name.split(".")[0] in ("training", "probes", "analyses"):
                found.append(f"{module} imports the bare name {name!r}; use repscope.{name}")
            for owner, forbidden, why in RULES:
                if (module, name) in EXCEPTIONS:
                    continue
                if _under(module, owner) and _under(name, forbidden):
                    found.append(f"{module} imports {name} ({why})")
            if module == "repscope.analyses.dims" and _under(name, "repscope") and name not in (
                    "repscope.analyses.errors", "repscope.analyses.errors.AnalysisError"):
                found.append(f"{module} imports {name} (dims imports nothing of ours but errors)")
    return found


def test_every_package_keeps_the_import_rules():
    sources = list(_sources())
    assert len(sources) > 40  # the walk found the packages
    assert violations(sources) == []


@pytest.mark.parametrize("module,source,expected", [
    ("repscope.probes.probe", "from repscope.training.model import Conv4", "repscope.probes.probe imports repscope.training"),
    ("repscope.probes.probe", "def f():\n    from ..analyses import compare", "imports repscope.analyses"),
    ("repscope.analyses.pipeline", "import repscope.training.maml", "analyses reads records"),
    ("repscope.analyses.measures", "import importlib\nimportlib.import_module('repscope.training.record')",
     "analyses reads records"),
    ("repscope.analyses.cka", "import matplotlib.pyplot as plt", "compute, I/O and plotting"),
    ("repscope.analyses.dims", "from repscope.analyses.cka import cka", "dims imports nothing"),
    ("repscope.training.record", "from analyses import compare", "bare name 'analyses'"),
])
def test_the_checker_catches_each_kind_of_violation(module, source, expected):
    names = imports(source, module)
    found = violations([(Path("x.py"), module, names)])
    assert any(expected in v for v in found), found


@pytest.mark.parametrize("script,driver", sorted(THIN_SCRIPTS.items()))
def test_the_thin_scripts_are_the_only_exceptions_and_stay_thin(script, driver):
    module = f"repscope.analyses.{script}"
    names = imports((REPO / "analyses" / f"{script}.py").read_text(), module)
    assert {n for n in names if _under(n, "repscope")} == {driver, f"{driver}.main"}
    # no module imports the script; no other module below the top floor imports the driver
    others = [(m, n) for _, m, ns in _sources() for n in ns if _under(n, module)]
    assert others == []
    assert violations([(Path("x.py"), "repscope.analyses.pipeline",
                        imports(f"from {driver} import main", "repscope.analyses.pipeline"))])


def test_a_subprocess_call_of_a_training_stage_is_not_an_import():
    source = 'import subprocess, sys\nsubprocess.run([sys.executable, "-m", "repscope.training.maml"])'
    assert violations([(Path("x.py"), "repscope.analyses.layer_similarity",
                        imports(source, "repscope.analyses.layer_similarity"))]) == []


# --- no import cycle -----------------------------------------------------------------

def _enclosing(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _known_module(name: str, known: set[str]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def module_edges(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that importing ``module`` runs, by its own imports at
    any depth (function-level ones too): each imported module, and the packages
    enclosing it that do not enclose ``module`` (Python runs a package's ``__init__``
    before a submodule; the importer's own packages are already being run, so only an
    explicit import of one of them counts).
    ``from package import submodule`` needs the submodule, not the package's ``__init__``."""
    edges = set()
    for name, members in _imported(source, module, is_package):
        targets = [f"{name}.{m}" for m in members if f"{name}.{m}" in known]
        if len(targets) < len(members) or not members:  # a name defined in ``name`` itself
            targets.append(name)
        for target in filter(None, (_known_module(t, known) for t in targets)):
            mine = set(_enclosing(module)) | ({module} if is_package else set())
            edges.update(p for p in _enclosing(target) if p not in mine and p in known)
            edges.add(target)
    edges.discard(module)
    return edges


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each group of modules that import each other, directly or through others
    (the strongly connected components with more than one module), as sorted lists."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def import_graph(files) -> dict[str, set[str]]:
    """``{module: modules it imports}`` of ``(module, source, is_package)`` triples."""
    files = list(files)
    known = {module for module, _, _ in files}
    return {module: module_edges(source, module, is_package, known)
            for module, source, is_package in files}


def _package_files():
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            yield _module_name(path), path.read_text(), _is_package(path)


def test_no_module_imports_itself_through_others():
    graph = import_graph(_package_files())
    assert {"repscope.training.engines", "repscope.training.config"} <= set(graph)
    assert import_cycles(graph) == []


@pytest.mark.parametrize("files,cycle", [
    ([("pkg.a", "from .b import f", False), ("pkg.b", "from pkg.c import g", False),
      ("pkg.c", "import pkg.a", False)], ["pkg.a", "pkg.b", "pkg.c"]),
    # a function-level import closes the circle as well (it runs when the function does)
    ([("pkg.model", "def build():\n    from .config import C", False),
      ("pkg.config", "from .model import same_padding", False)], ["pkg.config", "pkg.model"]),
    # importing pkg.eng.tensors runs pkg/eng/__init__, which imports pkg.eng.loop -> pkg.inner
    ([("pkg.inner", "from .eng.tensors import t", False),
      ("pkg.eng", "from .loop import step", True), ("pkg.eng.loop", "from ..inner import f", False),
      ("pkg.eng.tensors", "import torch", False)], ["pkg.eng", "pkg.eng.loop", "pkg.inner"]),
    ([("pkg", "from .a import f", True), ("pkg.a", "import importlib\nimportlib.import_module('pkg')",
                                           False)], ["pkg", "pkg.a"]),
])
def test_the_cycle_check_catches_a_synthetic_cycle(files, cycle):
    assert import_cycles(import_graph(files)) == [cycle]


def test_the_cycle_check_passes_a_one_way_package():
    files = [("pkg", "from .a import f\nfrom .b import g", True), ("pkg.a", "from . import b", False),
             ("pkg.b", "from .errors import E", False), ("pkg.errors", "", False)]
    graph = import_graph(files)
    assert graph["pkg.a"] == {"pkg.b"}  # not the package's __init__, which the import does not need
    assert import_cycles(graph) == []


# --- floors within a package (docs/dev/architecture.md) ------------------------------

#: Modules of a package on floors, lowest first: a module imports nothing of its
#: package on a higher floor (modules not listed: the top floor).
FLOORS = {
    "repscope.analyses": [
        ("errors", "dims", "lazy"),
        ("cka", "rdms", "cca", "procrustes"),
        ("measures",),
        ("figure_data", "uncertainty", "mds", "plateau", "task_units", "measure_checks"),
        ("findings", "plots", "measure_check_plots", "replication", "reuse", "reuse_plots"),
        ("saving",),
        ("pipeline", "sanity"),
        ("layer_similarity", "feature_reuse"),
    ],
    "repscope.training": [
        ("errors",),
        ("options", "norm", "data"),
        ("config",),
        ("model",),
        ("inner", "tasks"),
        ("engines.tensors", "engines.network"),
        ("engines.higher_loop", "engines.batched"),
        ("engines.cuda_graph",),
        ("engines",),
        ("distributed", "evaluate", "checkpoint", "cli"),
    ],
}


def _floor(package: str, module: str):
    rel = module[len(package) + 1:]
    for level, names in enumerate(FLOORS[package]):
        if any(rel == n or (n == "data" and rel.startswith("data.")) for n in names):
            return level
    return len(FLOORS[package])


def floor_violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in graph.items():
        for package in FLOORS:
            if not _under(module, package) or module == package:
                continue
            for target in targets:
                if _under(target, package) and target != package and \
                        _floor(package, target) > _floor(package, module):
                    found.append(f"{module} imports {target}, a higher floor of {package}")
    return sorted(found)


def test_each_package_keeps_its_floors():
    assert floor_violations(import_graph(_package_files())) == []


def test_the_floor_check_catches_an_import_upwards():
    files = [("repscope.training.config", "from .engines import ENGINES", False),
             ("repscope.training.engines", "", True),
             ("repscope.analyses.dims", "def f():\n    from .measures import m", False),
             ("repscope.analyses.measures", "", False)]
    assert floor_violations(import_graph(files)) == [
        "repscope.analyses.dims imports repscope.analyses.measures, a higher floor of repscope.analyses",
        "repscope.training.config imports repscope.training.engines, a higher floor of repscope.training"]
