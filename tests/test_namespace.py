"""One import name: ``repscope.*`` works from any folder, whatever that folder holds.

A user's project often has its own ``training.py`` or ``analyses/``: they must not shadow
ours, and the bare names ``probes``/``training``/``analyses`` are not installed.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(args, cwd):
    done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    return done


def test_user_modules_named_like_ours_do_not_shadow_repscope(tmp_path):
    (tmp_path / "training.py").write_text("raise RuntimeError('the user training.py ran')\n")
    (tmp_path / "analyses").mkdir()
    (tmp_path / "analyses" / "__init__.py").write_text("raise RuntimeError('user analyses')\n")
    (tmp_path / "probes.py").write_text("raise RuntimeError('user probes')\n")
    code = ("import repscope, repscope.training.maml, repscope.analyses.pipeline\n"
            "from repscope import Probe\n"
            "print(repscope.training.maml.__file__)\n")
    done = _run(["-c", code], tmp_path)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve() == REPO / "training" / "maml.py"
    for args in (["-m", "repscope", "maml", "--help"], ["-m", "repscope.training.record", "--help"],
                 [str(REPO / "analyses" / "layer_similarity.py"), "--help"]):
        done = _run(args, tmp_path)
        assert done.returncode == 0, (args, done.stderr)
        assert "usage:" in done.stdout


def test_bare_names_are_not_installed(tmp_path):
    done = _run(["-c", "import importlib.util as u; print([u.find_spec(n) is None for n in "
                       "('probes', 'training', 'analyses')])"], tmp_path)
    assert done.stdout.strip() == "[True, True, True]", done.stdout + done.stderr


def test_python_m_repscope_lists_and_refuses(tmp_path):
    done = _run(["-m", "repscope"], tmp_path)
    assert done.returncode == 2 and "layer-similarity" in done.stdout
    done = _run(["-m", "repscope", "nosuch"], tmp_path)
    assert done.returncode == 2 and "unknown command 'nosuch'" in done.stderr


def test_no_module_imports_a_bare_sibling_name():
    offenders = []
    for folder in ("probes", "training", "analyses", "repscope", "tests", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                stripped = line.strip().removeprefix(">>> ")
                if stripped.startswith(("import probes", "import training", "import analyses",
                                        "from probes", "from training", "from analyses")):
                    offenders.append(f"{path.relative_to(REPO)}:{n}: {stripped}")
    assert not offenders, offenders
