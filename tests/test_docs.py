"""The documentation: a strict Sphinx build, a complete API reference, running guides.

One offline HTML build (``-W --keep-going -n``, ``REPSCOPE_OFFLINE_DOCS=1``, as CI) is
shared by the tests of this module; it takes about 10-15 s on 2 cores.
"""
from __future__ import annotations

import doctest
import importlib
import inspect
import os
import pkgutil
import re
import runpy
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PACKAGES = ("repscope.probes", "repscope.training", "repscope.analyses")
GUIDES = ("wrapping.rst", "data_format.rst")

# Public functions and classes whose docstring has no ``Examples`` section yet. The
# issue asks for a runnable example on every one; this list may only shrink (a new
# public name without an example fails ``test_public_api_has_runnable_examples``).
KNOWN_WITHOUT_EXAMPLES = frozenset({
    "repscope.analyses.figure_data.inner_loop_change",
    "repscope.analyses.figure_data.rdm_of_rdms",
    "repscope.analyses.figure_data.training_change",
    "repscope.analyses.measures.Measure",
    "repscope.analyses.pipeline.AnalysisConfig",
    "repscope.analyses.pipeline.analyse_maml",
    "repscope.analyses.pipeline.analyse_supervised",
    "repscope.analyses.pipeline.redraw",
    "repscope.analyses.pipeline.summarize",
    "repscope.analyses.plots.plot_accuracy",
    "repscope.analyses.plots.plot_rdm_of_rdms",
    "repscope.analyses.plots.plot_training_change",
    "repscope.analyses.saving.load_netcdf",
    "repscope.analyses.saving.save_figure",
    "repscope.analyses.saving.save_text",
    "repscope.probes.probe.Recording",
    "repscope.training.checkpoint.latest_resumable",
    "repscope.training.checkpoint.load_checkpoint",
    "repscope.training.checkpoint.load_meta_parameters",
    "repscope.training.checkpoint.rng_state",
    "repscope.training.checkpoint.set_rng_state",
    "repscope.training.data.episodes.Episode",
    "repscope.training.data.lake.LakeRun",
    "repscope.training.data.omniglot.read_archive",
    "repscope.training.data.sources.Known",
    "repscope.training.data.sources.locate",
    "repscope.training.maml.main",
    "repscope.training.maml.train",
    "repscope.training.record.main",
    "repscope.training.record.record_run",
    "repscope.training.supervised.load_data",
    "repscope.training.supervised.main",
    "repscope.training.supervised.train_and_record",
    "repscope.training.tasks.lake_runs",
})


def _build(out: Path, offline: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env["REPSCOPE_OFFLINE_DOCS"] = "1" if offline else ""
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-j", "1",
           "-b", "html", "-d", str(out / ".doctrees"), str(DOCS), str(out)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    """The strict offline build; fails with Sphinx's own warnings when it does not pass."""
    out = tmp_path_factory.mktemp("docs-html")
    done = _build(out)
    if done.returncode != 0:
        pytest.fail(f"sphinx-build -W -n failed (exit {done.returncode}):\n{done.stderr[-6000:]}")
    return out


def _inventory(path: Path) -> dict[str, str]:
    """``{name: "domain:role"}`` of a Sphinx ``objects.inv`` (format version 2)."""
    raw = path.read_bytes()
    header_end = 0
    for _ in range(4):
        header_end = raw.index(b"\n", header_end) + 1
    assert raw.startswith(b"# Sphinx inventory version 2"), raw[:40]
    entries = {}
    for line in zlib.decompress(raw[header_end:]).decode().splitlines():
        m = re.match(r"(?x)(.+?)\s+(\S+:\S+)\s+(-?\d+)\s+(\S*)\s+(.*)", line)
        if m:
            entries[m.group(1)] = m.group(2)
    return entries


def _modules():
    """Every importable public module of our packages (no ``_private`` ones, no conftest)."""
    yield importlib.import_module("repscope")
    top = importlib.import_module("repscope")
    for info in pkgutil.iter_modules(top.__path__, "repscope."):  # the top floor: reproduce
        if not info.name.rpartition(".")[2].startswith("_"):
            yield importlib.import_module(info.name)
    for pkg in PACKAGES:
        package = importlib.import_module(pkg)
        yield package
        for info in pkgutil.walk_packages(package.__path__, pkg + "."):
            parts = info.name.split(".")
            if any(p.startswith("_") for p in parts) or parts[-1] == "conftest":
                continue
            yield importlib.import_module(info.name)


def _public(module) -> dict[str, object]:
    """A module's public names: its ``__all__``, else the functions and classes it defines."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, obj in vars(module).items()
                 if not n.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
                 and obj.__module__ == module.__name__]
    return {f"{module.__name__}.{n}": getattr(module, n) for n in names}


def _resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_strict_offline_build_passes(html):
    assert (html / "index.html").is_file()
    for page in ("getting_started", "wrapping", "data_format", "reproducing", "benchmarks"):
        assert (html / "guide" / f"{page}.html").is_file(), page


def test_every_public_name_is_documented(html):
    inventory = _inventory(html / "objects.inv")
    documented = {}
    for name, role in inventory.items():
        if role.startswith("py:") and name.split(".")[0] == "repscope" and role != "py:module":
            try:
                documented.setdefault(id(_resolve(name)), []).append(name)
            except (ImportError, AttributeError):  # dataclass fields, instance attributes
                pass
    missing = []
    for module in _modules():
        if module.__name__ not in inventory:
            missing.append(f"module {module.__name__}")
        for name, obj in _public(module).items():
            if name in inventory:
                continue
            same = documented.get(id(obj), [])
            if inspect.isfunction(obj) or inspect.isclass(obj):
                ok = bool(same)
            else:  # a constant: documented under the same name in some module
                ok = any(n.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1] for n in same)
            if not ok:
                missing.append(name)
    assert not missing, f"public names missing from the API reference: {missing}"


def test_own_references_are_never_ignored_and_offline_switch_works(monkeypatch):
    conf = DOCS / "conf.py"
    monkeypatch.setenv("REPSCOPE_OFFLINE_DOCS", "1")
    offline = runpy.run_path(str(conf))
    monkeypatch.setenv("REPSCOPE_OFFLINE_DOCS", "0")
    online = runpy.run_path(str(conf))
    assert offline["intersphinx_mapping"] == {}
    assert {"torch", "xarray", "numpy", "rsatoolbox"} <= set(online["intersphinx_mapping"])
    assert offline["nitpicky"] and online["nitpicky"]

    def ignored(ns, role, target):
        return any(re.fullmatch(r, role) and re.fullmatch(t, target)
                   for r, t in ns["nitpick_ignore_regex"])

    for target in ("repscope.probes.Probe", "repscope.training.config.MAMLConfig", "repscope.analyses.compare",
                   "repscope.analyses.rdms.rdms", "repscope.probes.schema.SCHEMA_VERSION"):
        for ns in (offline, online):
            for role in ("py:class", "py:func", "py:data", "py:obj", "py:mod"):
                assert not ignored(ns, role, target), (role, target)
    assert ignored(offline, "py:class", "torch.nn.Module")
    assert ignored(offline, "py:class", "xarray.Dataset")
    assert not ignored(online, "py:class", "torch.nn.Module")


@pytest.mark.parametrize("page", GUIDES)
def test_guide_examples_run(page):
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testfile(str(DOCS / "guide" / page), module_relative=False,
                              optionflags=flags, verbose=False, report=True)
    assert result.attempted > 5, f"{page} lost its examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {page} failed"


def test_public_api_has_runnable_examples():
    without = set()
    for module in _modules():
        for name, obj in _public(module).items():
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if inspect.isclass(obj) and issubclass(obj, BaseException):
                continue
            if "Examples\n--------" not in (inspect.getdoc(obj) or ""):
                without.add(f"{obj.__module__}.{obj.__qualname__}")
    new = sorted(without - KNOWN_WITHOUT_EXAMPLES)
    assert not new, f"public functions/classes without an Examples section: {new}"


# -- Pages as a reader sees them ----------------------------------------------------------

PAGES = sorted(DOCS.glob("*.rst")) + sorted(DOCS.glob("guide/*.rst")) + sorted(DOCS.glob("api/*.rst"))
FIGURES = ("fig1a", "fig1b", "fig2", "fig3", "fig4", "fig5")  # what the main job draws


def _code_blocks(text: str):
    """``(line number, language, [(line number, line), ...])`` of every literal block:
    ``.. code-block:: LANG`` and ``::`` paragraphs (language ``None``)."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = re.match(r"^(\s*)\.\. code-block::\s*(\S*)", line)
        literal = line.rstrip().endswith("::") and not re.match(r"^\s*\.\. ", line)
        if not (directive or literal):
            i += 1
            continue
        base = len(line) - len(line.lstrip())
        j, body = i + 1, []
        while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > base):
            body.append((j + 1, lines[j]))
            j += 1
        code = [(n, b) for n, b in body if b.strip() and not (directive and b.strip().startswith(":"))]
        if code:
            yield i + 1, (directive.group(2) if directive else None), code
        i = j


def test_code_blocks_are_tagged_and_fit_the_page():
    untagged, wide = [], []
    for page in PAGES:
        for start, lang, code in _code_blocks(page.read_text()):
            where = f"{page.relative_to(DOCS)}:{start}"
            if lang is None and not code[0][1].lstrip().startswith(">>>"):
                untagged.append(where)  # '::' highlights shell commands and output as Python
            indent = min(len(b) - len(b.lstrip()) for _, b in code)
            wide += [f"{page.relative_to(DOCS)}:{n}" for n, b in code if len(b.rstrip()) - indent > 88]
    assert not untagged, f"literal blocks without a language (use code-block text/bash): {untagged}"
    assert not wide, f"code lines wider than 88 characters: {wide}"


def test_pages_speak_to_users():
    """No words about how the project is built: issue numbers, "this machine", the
    developers' data folder other than as an example value of REPSCOPE_DATA."""
    bad = re.compile(r"(?i)\bissue[ -]?#?\d+|\bthis machine\b|\bthis session\b|build machine"
                     r"|(?<!REPSCOPE_DATA=)\.\./shared/data")
    found = []
    for page in [*PAGES, REPO / "README.md"]:
        for n, line in enumerate(page.read_text().splitlines(), 1):
            if bad.search(line):
                found.append(f"{page.name}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


def test_landing_page_example_runs_and_gallery_shows_every_figure(tmp_path, monkeypatch):
    index = (DOCS / "index.rst").read_text()
    assert ".. figure::" in index and "pip install" in index
    python = [c for _, lang, c in _code_blocks(index) if lang == "python"]
    assert len(python) == 1 and len(python[0]) <= 15, "the landing page's Probe example"
    monkeypatch.chdir(tmp_path)
    source = textwrap.dedent("\n".join(line for _, line in python[0]))
    exec(compile(source, "index.rst", "exec"), {"__name__": "__landing__"})
    gallery = (DOCS / "gallery.rst").read_text()
    for fig in FIGURES:
        assert f"_static/quick_{fig}.png" in gallery, fig
        assert (DOCS / "_static" / f"quick_{fig}.png").is_file(), fig
    assert gallery.count("**Compares**") == gallery.count("**Read**") == len(FIGURES)
