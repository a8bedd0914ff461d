"""Package discovery for the one import name ``repscope``.

The checkout keeps ``probes/``, ``training/`` and ``analyses/`` at the top level; they
install as ``repscope.probes``, ``repscope.training`` and ``repscope.analyses``
(``package_dir``). Every package below them is found by ``find_packages``, so a new
subfolder with an ``__init__.py`` is part of the wheel without editing a list. Everything
else about the package is declared in ``pyproject.toml``.
"""
from setuptools import find_packages, setup

# import name -> folder in the checkout
ROOTS = {"repscope": "repscope", "repscope.probes": "probes",
         "repscope.training": "training", "repscope.analyses": "analyses"}

packages = []
for name, folder in ROOTS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(where=folder)]

setup(package_dir=ROOTS, packages=packages)
