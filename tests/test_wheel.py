"""repscope as a user installs it: a wheel built from the checkout, installed into a fresh
environment that does not see the checkout.

Editable installs (``pip install -e .``) read the source folders directly, so a package
that the wheel leaves out still imports in every other test. This test builds the wheel
(``pip wheel --no-deps --no-build-isolation``: no network needed where setuptools is
installed), installs it into a new
virtual environment, and from a temporary working directory imports every module of the
checkout, runs each command's ``--help`` and the README's "Wrap your own model" snippet
(twice: it must not trip over its own output).

The new environment sees the packages of the running one (``--system-site-packages``
plus a ``.pth`` line for a virtual environment's own site-packages) so that torch and the
other heavy dependencies need not be installed again; a ``.pth`` line adds a folder to
``sys.path`` without running the editable-install hooks inside it, so ``repscope`` can only
come from the wheel, which the test checks through ``repscope.__file__``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from conftest import REPO

# The checkout folders and the import names they install as (pyproject.toml's package-dir).
FOLDERS = {"repscope": "repscope", "probes": "repscope.probes",
           "training": "repscope.training", "analyses": "repscope.analyses"}


def _checkout_modules() -> list[str]:
    """Every module of the checkout by its installed name (private ones too)."""
    names = []
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts and parts[-1] == "__main__":
                continue  # runs the command line on import; exercised through --help below
            names.append(".".join((package, *parts)))
    return names


def _run(cmd, cwd, env, timeout=600) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, (
        f"{' '.join(map(str, cmd))} exited {done.returncode}\n"
        f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}")
    return done


def _readme_snippet() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Wrap your own model", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, "README.md lost its 'Wrap your own model' snippet"
    return match.group(1)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(python of the fresh environment, environment variables, working directory)``."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_NO_INPUT"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    venv = tmp / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", "--system-site-packages", "--without-pip", venv], tmp, env)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        tmp, env).stdout.strip())
    # The build runs on a copy of the checkout's tracked layout: nothing is written into
    # the tree (setuptools leaves build/ and *.egg-info behind in the folder it builds).
    source = tmp / "source"
    ignore = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__",
                                    "_build", "runs", "results", ".venv")
    shutil.copytree(REPO, source, ignore=ignore)
    # Build first, while the new environment sees only the base interpreter's packages
    # (a virtual environment's own, often older, setuptools would shadow them). Offline
    # with the base setuptools; where that cannot build, pip's isolated build (network).
    dist = tmp / "dist"
    build = [python, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, source]
    done = subprocess.run([str(c) for c in build[:4] + ["--no-build-isolation"] + build[4:]],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        _run(build, tmp, env)
    if sys.prefix != sys.base_prefix:  # running inside a virtual environment: see its packages
        own = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
        (purelib / "_running_env.pth").write_text("\n".join(sorted(own)) + "\n")
    wheels = list(dist.glob("repscope-*.whl"))
    assert len(wheels) == 1, wheels
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheels[0]], tmp, env)
    work = tmp / "cwd"
    work.mkdir()
    env["REPSCOPE_CACHE"] = str(tmp / "cache")
    return python, env, work, venv


def test_installed_from_the_wheel_not_the_checkout(installed):
    python, env, work, venv = installed
    out = _run([python, "-c", "import json, sys, repscope; "
                "print(json.dumps([repscope.__file__, sys.path]))"], work, env).stdout
    file, path = json.loads(out)
    assert Path(file).resolve().is_relative_to(venv.resolve()), file
    assert str(REPO) not in path and str(REPO.resolve()) not in path, path


def test_every_module_of_the_checkout_imports(installed):
    python, env, work, venv = installed
    names = _checkout_modules()
    assert "repscope.training.engines.batched" in names  # the folder once left out
    script = textwrap.dedent("""
        import importlib, json, sys
        failed = {}
        for name in json.loads(sys.argv[1]):
            try:
                importlib.import_module(name)
            except Exception as err:
                failed[name] = f"{type(err).__name__}: {err}"
        print(json.dumps(failed))
    """)
    failed = json.loads(_run([python, "-c", script, json.dumps(names)], work, env)
                        .stdout.strip().splitlines()[-1])
    assert not failed, f"modules missing from (or broken in) the wheel: {failed}"


def test_declared_dependencies_are_installed(installed):
    python, env, work, venv = installed
    script = textwrap.dedent("""
        import importlib.metadata as md, json, re
        missing = []
        for req in md.requires("repscope") or []:
            if "extra ==" in req:
                continue
            name = re.match(r"[A-Za-z0-9_.-]+", req).group(0)
            try:
                md.version(name)
            except md.PackageNotFoundError:
                missing.append(req)
        print(json.dumps(missing))
    """)
    missing = json.loads(_run([python, "-c", script], work, env).stdout)
    assert not missing, missing
    requires = _run([python, "-c", "import importlib.metadata as md, json; "
                     "print(json.dumps(md.requires('repscope')))"], work, env).stdout
    assert "pooch" in requires  # the data download


@pytest.mark.parametrize("command", [
    ["-m", "repscope.training.maml", "--help"],
    ["-m", "repscope.training.record", "--help"],
    ["-m", "repscope.training.supervised", "--help"],
    ["-m", "repscope", "layer-similarity", "--help"],
    ["-m", "repscope", "--help"],
])
def test_command_help(installed, command):
    python, env, work, venv = installed
    out = _run([python, *command], work, env).stdout
    assert "usage:" in out.lower(), out


def test_readme_snippet_runs_twice(installed):
    python, env, work, venv = installed
    snippet = work / "readme_snippet.py"
    snippet.write_text(_readme_snippet())
    for _ in range(2):
        out = _run([python, snippet], work, env).stdout
        assert "pair" in out, out
