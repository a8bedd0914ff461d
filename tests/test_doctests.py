"""Every docstring example of the package runs, imported by its ``repscope.*`` name.

pytest's ``--doctest-modules`` imports a file by its path, which for ``probes/probe.py``
in a checkout is the bare name ``probes.probe``: a second copy of the module under a name
users never import. Here each module is imported as users do and its examples run with
:mod:`doctest`. ``DATA`` names the real data folder (``$REPSCOPE_DATA`` or
``../shared/data``), like the ``data_root`` fixture.
"""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import repscope
from conftest import _data_root

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _module_names() -> list[str]:
    names = ["repscope"] + [info.name for info in pkgutil.iter_modules(repscope.__path__, "repscope.")]
    for sub in ("probes", "training", "analyses"):
        package = importlib.import_module(f"repscope.{sub}")
        names.append(package.__name__)
        names += [info.name for info in pkgutil.walk_packages(package.__path__,
                                                               package.__name__ + ".")]
    return sorted(names)


MODULES = _module_names()


def test_every_subpackage_is_walked():
    assert {"repscope.probes.probe", "repscope.training.data.omniglot",
            "repscope.analyses.cka"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, capsys):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    tests = finder.find(module, name, globs={**vars(module), "DATA": _data_root()})
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    report = capsys.readouterr().out
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed:\n{report}"
