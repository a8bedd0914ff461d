"""The import rules of docs/dev/architecture.md, read from the source with ``ast``."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"probes": "repscope.probes", "training": "repscope.training", "analyses": "repscope.analyses",
           "repscope": "repscope"}
COMPUTE = ("dims", "lazy", "cka", "rdms", "measures", "uncertainty", "mds", "figure_data", "findings",
           "replication")


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = [FOLDERS[rel.parts[0]], *rel.parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str, is_package: bool = False) -> set[str]:
    """Absolute names of everything ``source`` imports (any depth, relative resolved,
    and ``importlib.import_module`` / ``__import__`` with a literal name)."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("__import__", "import_module")))):
            found.add(node.args[0].value)
    return found


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _sources():
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            yield path, _module_name(path), imports(path.read_text(), _module_name(path), path.name == "__init__.py")


RULES = [  # (which modules, forbidden import prefix, why)
    ("repscope.probes", "repscope.training", "probes works on any model"),
    ("repscope.probes", "repscope.analyses", "probes works on any model"),
    ("repscope.analyses", "repscope.training", "analyses reads records, whatever made them"),
    ("repscope.training", "repscope.analyses", "the data flow does not run backwards"),
    *[(f"repscope.analyses.{m}", forbidden, "compute, I/O and plotting stay apart")
      for m in COMPUTE for forbidden in ("matplotlib", "repscope.analyses.plots", "repscope.analyses.saving",
                                         "repscope.analyses.pipeline")],
]


def violations(sources) -> list[str]:
    found = []
    for path, module, names in sources:
        for name in names:
            if name.split(".")[0] in ("training", "probes", "analyses"):
                found.append(f"{module} imports the bare name {name!r}; use repscope.{name}")
            for owner, forbidden, why in RULES:
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


def test_a_subprocess_call_of_a_training_stage_is_not_an_import():
    source = 'import subprocess, sys\nsubprocess.run([sys.executable, "-m", "repscope.training.maml"])'
    assert violations([(Path("x.py"), "repscope.analyses.layer_similarity",
                        imports(source, "repscope.analyses.layer_similarity"))]) == []
