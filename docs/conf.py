"""Sphinx configuration of the repscope documentation.

Build (strict, as CI does)::

    REPSCOPE_OFFLINE_DOCS=1 python -m sphinx -W --keep-going -n -b html docs docs/_build/html

``REPSCOPE_OFFLINE_DOCS=1`` turns intersphinx off (no network needed) and, only then,
ignores unresolved references to *external* packages (torch, xarray, numpy, ...).
References to our own ``repscope.*`` names are never ignored.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

# repscope is imported as installed (pip install -e .), by its one import name.

# -- Project -----------------------------------------------------------------------------
project = "repscope"
author = "repscope developers"
copyright = "2026, repscope developers"
try:
    from importlib.metadata import version as _version

    release = _version("repscope")
except Exception:  # not installed: the docs still build from the source tree
    release = "0.1.0"
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "sphinx.ext.autosummary",
    "sphinx_copybutton",
]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "dev/*.md", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []
nitpicky = True
pygments_style = "sphinx"
# Headings in guides are referenced by explicit labels; section numbers stay off.
suppress_warnings: list[str] = []

# -- autodoc and napoleon (numpydoc style) -----------------------------------------------
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
}
autodoc_typehints = "none"          # types are written in the numpydoc sections
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False  # no torch.nn.Module.forward text on our modules
autoclass_content = "class"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = False
napoleon_preprocess_types = True
napoleon_type_aliases = {
    "path": "os.PathLike",
    "path-like": "os.PathLike",
    "PathLike": "os.PathLike",
    "array-like": ":term:`array-like <numpy:array_like>`",
    "array_like": ":term:`array_like <numpy:array_like>`",
    "ndarray": "numpy.ndarray",
    "np.ndarray": "numpy.ndarray",
    "Tensor": "torch.Tensor",
    "torch.tensor": "torch.Tensor",
    "DataArray": "xarray.DataArray",
    "Dataset": "xarray.Dataset",
    "xr.DataArray": "xarray.DataArray",
    "xr.Dataset": "xarray.Dataset",
    "nn.Module": "torch.nn.Module",
    "Figure": "matplotlib.figure.Figure",
    "RDMs": "rsatoolbox.rdm.RDMs",
    # "bool, default False": napoleon would make False a py:obj reference.
    "True": "``True``",
    "False": "``False``",
}

# -- intersphinx: links out where a network exists ---------------------------------------
OFFLINE = os.environ.get("REPSCOPE_OFFLINE_DOCS", "").strip().lower() not in ("", "0", "false", "no")

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "scipy": ("https://docs.scipy.org/doc/scipy/", None),
    "torch": ("https://docs.pytorch.org/docs/stable/", None),
    "xarray": ("https://docs.xarray.dev/en/stable/", None),
    "rsatoolbox": ("https://rsatoolbox.readthedocs.io/en/stable/", None),
    "matplotlib": ("https://matplotlib.org/stable/", None),
    "pooch": ("https://www.fatiando.org/pooch/latest/", None),
}
intersphinx_timeout = 10

# Packages whose names only intersphinx can resolve. Offline, references to them are
# left as plain text instead of failing the nitpicky build. Our own packages are
# deliberately absent: an unresolved repscope.* name is always an error.
EXTERNAL = ("torch", "xarray", "xr", "numpy", "np", "scipy", "rsatoolbox", "matplotlib",
            "higher", "sklearn", "pandas", "PIL", "tqdm", "netCDF4", "argparse", "pathlib",
            "os", "typing", "collections", "contextlib", "dataclasses", "json", "zipfile",
            "warnings", "io", "urllib", "datetime", "random", "pooch", "requests")
_EXTERNAL_RE = r"(%s)(\..+)?" % "|".join(EXTERNAL)

# Plain words that napoleon's type parser may turn into references in any build.
nitpick_ignore_regex = [
    (r"py:class", r"(optional|default.*|callable|sequence|mapping|iterable|"
                  r"path|path-like|array-like|array_like|scalar|file-like|"
                  r"positive|non-negative|1-D|2-D)"),
]
if OFFLINE:
    intersphinx_mapping = {}
    nitpick_ignore_regex += [(r"py:.*", _EXTERNAL_RE)]
    nitpick_ignore_regex += [(r"std:term", r"(numpy:)?array[-_]like")]

# -- Our own names, wherever they are documented ----------------------------------------
# The packages re-export their public API (``repscope.probes.Probe`` is ``repscope.probes.probe.Probe``), so
# a docstring may name an object by any of its import paths (``:func:`open_run``` inside
# ``repscope.probes.store``, ``:class:`DataError``` inside ``repscope.training.data.fetch``). Sphinx knows
# each object under one documented name only; this resolver imports the name the
# docstring used, finds the same Python object among the documented ones and links
# there. A name that is not a documented object of ours stays a nitpicky error.
OWN = ("repscope",)


def _import_path(dotted: str):
    """The object at ``dotted`` (``pkg.mod.name.attr``), or None."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except Exception:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


_DOCUMENTED: dict = {}


def _documented(env) -> dict:
    """``id(python object) -> (documented full name, objtype)`` for this process's build.

    Kept in this module, not on ``env``: object ids mean nothing in a later process that
    reuses a pickled environment.
    """
    objects = env.get_domain("py").objects
    key = (id(env), len(objects))
    if key not in _DOCUMENTED:
        cache = {}
        for name, entry in sorted(objects.items(), key=lambda kv: kv[1].aliased):
            if name.split(".")[0] not in OWN or entry.objtype in ("data", "attribute"):
                continue  # constants share identities (small ints, strings): never guessed
            obj = _import_path(name)
            if obj is not None:
                cache.setdefault(id(obj), (name, entry.objtype))
        _DOCUMENTED.clear()
        _DOCUMENTED[key] = cache
    return _DOCUMENTED[key]


def _resolve_own(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip(".~")
    module, cls = node.get("py:module") or "", node.get("py:class") or ""
    if target.split(".")[0] not in OWN and module.split(".")[0] not in OWN:
        return None
    candidates = [target]
    if module:
        candidates[:0] = [f"{module}.{cls}.{target}" if cls else None, f"{module}.{target}"]
    domain = env.get_domain("py")
    for dotted in filter(None, candidates):
        if dotted.split(".")[0] not in OWN:
            continue
        obj = _import_path(dotted)
        if obj is None:
            continue
        found = _documented(env).get(id(obj))
        if found is None:
            # A constant: documented under the same name in the module it was read from
            # or in the module that defines it.
            short = dotted.rsplit(".", 1)[-1]
            for name, entry in domain.objects.items():
                if (name.rsplit(".", 1)[-1] == short and entry.objtype in ("data", "attribute")
                        and _import_path(name) is obj):
                    found = (name, entry.objtype)
                    break
        if found is not None:
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                                       found[0], node, contnode)
    # A short name the docstring's module does not import (``:class:`MAMLConfig``` in
    # ``repscope.training.checkpoint``): link it when exactly one documented object of the same
    # package has that name.
    if "." not in target:
        package = ".".join(module.split(".")[:2])  # repscope.training, ...
        matches = [name for name, entry in domain.objects.items()
                   if name.startswith(package + ".") and name.rsplit(".", 1)[-1] == target
                   and not entry.aliased]
        if len(matches) == 1:
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                                       matches[0], node, contnode)
    return None


def _skip_constants(app, what, name, obj, skip, options):
    """Leave module constants to the explicit ``autodata`` directives of the API pages.

    Sphinx 9's automodule documents module data only when it has a ``#:`` comment, so a
    constant listed in ``__all__`` could silently vanish (or appear twice once someone
    adds the comment). The API pages list every constant with ``autodata`` instead, and
    ``tests/test_docs.py`` checks that every name in every ``__all__`` is documented.
    """
    if what == "module" and name.isupper() and not callable(obj):
        return True
    return None


def _drop_type_docstrings(app, what, name, obj, options, lines):
    """A constant without a ``#:`` comment would show its type's docstring (``dict``,
    ``tuple``); the API pages describe each constant themselves."""
    type_doc = type(obj).__doc__
    if what in ("data", "attribute") and lines and type_doc:
        if lines[0].strip() == type_doc.strip().splitlines()[0].strip():
            lines.clear()


# -- Summary tables: ``.. public-summary:: MODULE`` becomes an autosummary table ------------
# of the module's public names (its ``__all__``, else the functions and classes it
# defines), so the tables follow the code instead of a hand-written list.
autosummary_generate = False


def _public_names(module_name: str) -> list[str]:
    import importlib
    import inspect

    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, obj in vars(module).items()
                 if not n.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
                 and obj.__module__ == module.__name__]
    return [n for n in names if not isinstance(getattr(module, n), type(module))]


def _summary_tables(app, docname, source):
    import re

    def table(match):
        indent, module = match.group(1), match.group(2)
        names = _public_names(module)
        if not names:
            return ""
        rows = "\n".join(f"{indent}   {n}" for n in names)
        return (f"{indent}.. currentmodule:: {module}\n\n"
                f"{indent}.. autosummary::\n{indent}   :nosignatures:\n\n{rows}\n")

    source[0] = re.sub(r"(?m)^( *)\.\. public-summary:: *(\S+) *$", table, source[0])


def setup(app):
    app.connect("source-read", _summary_tables)
    app.connect("missing-reference", _resolve_own)
    app.connect("autodoc-skip-member", _skip_constants)
    app.connect("autodoc-process-docstring", _drop_type_docstrings)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


# -- HTML --------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"repscope {release}"
html_static_path = ["_static"]
html_theme_options = {
    "logo": {"text": "repscope"},
    "navbar_align": "left",
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"index": [], "gallery": []}

# -- Copy buttons: copy the code without the ``>>> ``, ``... `` and ``$ `` prompts ---------
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
