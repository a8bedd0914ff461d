"""Compare layer representations: RSA through rsatoolbox, our own batched CKA, and the
paper's figures and findings.

The public API:

* :func:`compare`, :func:`compare_all`, :data:`MEASURES`, :func:`get_measure`: one
  registry of measures by name and one dispatcher over labelled representations;
* :func:`rdms`, :func:`to_rsatoolbox`, :func:`from_rsatoolbox`,
  :func:`rdm_dissimilarity`: first- and second-order RSA with rsatoolbox;
* :func:`cka`, :func:`cka_matrix`, :func:`hsic`: CKA on arrays, batched in torch;
* :func:`mean_band`, :func:`bootstrap_ci`: error bars over tasks;
* :class:`AnalysisConfig`, :func:`analyse_maml`, :func:`analyse_supervised`,
  :func:`redraw`: the pipeline behind ``python analyses/layer_similarity.py``;
* :class:`AnalysisError`, the one exception class.

Figure computations live in :mod:`repscope.analyses.figure_data`, plots in
:mod:`repscope.analyses.plots`, findings in :mod:`repscope.analyses.findings` (with the
plateau and checkpoint pairs of :mod:`repscope.analyses.plateau` and the independent
tasks of :mod:`repscope.analyses.task_units`); the dimension handling, stimulus
alignment and input checks that every measure shares in :mod:`repscope.analyses.dims`.

Examples
--------
>>> import numpy as np, xarray as xr
>>> x = xr.DataArray(np.random.default_rng(0).normal(size=(6, 4)), dims=("stimulus", "unit_fc"))
>>> round(float(compare(x, 2 * x, "cka_linear")), 6), round(float(compare(x, 2 * x, "rsa")), 6)
(1.0, 0.0)
"""
from .cka import cka, cka_matrix, hsic
from .errors import AnalysisError
from .measures import MEASURES, compare, compare_all, get_measure
from .pipeline import AnalysisConfig, analyse_maml, analyse_supervised, redraw
from .rdms import from_rsatoolbox, rdm_dissimilarity, rdms, to_rsatoolbox
from .uncertainty import bootstrap_ci, mean_band

__all__ = [
    "AnalysisError",
    "MEASURES",
    "get_measure",
    "compare",
    "compare_all",
    "rdms",
    "to_rsatoolbox",
    "from_rsatoolbox",
    "rdm_dissimilarity",
    "cka",
    "cka_matrix",
    "hsic",
    "mean_band",
    "bootstrap_ci",
    "AnalysisConfig",
    "analyse_maml",
    "analyse_supervised",
    "redraw",
]
