"""From activation records to saved results, figures and the findings summary.

:func:`analyse_maml` and :func:`analyse_supervised` compute the figure results of one
run, save them as netCDF (``figXX.nc``) and draw them (``figXX.png``, ``figXX.pdf``)
in an output folder. :func:`redraw` redraws every figure of a folder from its netCDF
files alone, without recomputing anything.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from matplotlib.backend_bases import FigureCanvasBase
from tqdm.auto import tqdm

from . import figure_data as fd
from .dims import STIMULUS, to_cells, unit_dim
from .errors import AnalysisError
from .lazy import features_by_chunk, is_lazy
from .findings import assess, findings_markdown, supervised_depth_order
from .mds import MDS_MODES, mds_embedding
from .measures import get_measure
from .plots import (plot_accuracy, plot_inner_loop_change, plot_meta_change,
           plot_rdm_of_rdms, plot_training_change)
from .plots import plot_seed_spread
from .replication import check_same_layout, pool_findings, replication_markdown, seed_spread
from ..probes import ProbeError, open_run
from .rdms import RDM_METHODS
from .saving import load_netcdf, save_figure, save_netcdf, save_text
from .plateau import gap_pairs
from .task_units import CI_UNITS
from .uncertainty import BANDS

__all__ = ["AnalysisConfig", "analyse_maml", "analyse_supervised", "analyse_seed", "analyse_seeds", "redraw", "summarize",
           "check_record", "record_kind", "is_supervised", "is_miniimagenet"]

FIGURES = ("1a", "1b", "2", "3", "4", "5", "6")
#: Figures over several seeds (:func:`analyse_seeds`): 1a and 1b, one line per seed.
SEED_FIGURES = ("1a_seeds", "1b_seeds")


@dataclass
class AnalysisConfig:
    """Choices of the analysis; stored with every saved result.

    Attributes
    ----------
    measures : tuple of str
        Measures for figures 1a and 1b and the findings (names of
        :data:`repscope.analyses.MEASURES`), and for any figure without its own entry
        in ``figure_measures``.
    primary : str
        Measure of the RDM of RDMs (figures 3, 5, 6) and of the findings.
    rdm_method : str
        First-order RDM for ``rsa``: "correlation" (the paper's 2021 code),
        "euclidean" (the paper's text; rsatoolbox's squared / n units) or "cosine".
    figure_measures : dict of {str: tuple of str}
        Measures of single figures, overriding ``measures``; default figure 2 with
        ``rsa`` and ``cka_rbf``, as the paper's ``mnist.py``.
    figure_rdm_method : dict of {str: str}
        First-order RDM of single figures, overriding ``rdm_method``; default figure 2
        ``euclidean``, as the paper's ``mnist.py``.
    mds_mode : str
        "paper" (min-max scaled rows, as the paper's code) or "precomputed".
    meta_gap : int
        Meta-training steps of F2 (the paper: 1000), tested between saved checkpoints
        exactly this far apart after the plateau, and scaled to the run's length
        (:func:`repscope.analyses.findings.assess`). Figure 1b compares consecutive
        checkpoints.
    fig1b_gap : int or None
        Figure 1b compares consecutive checkpoints (None) or every pair of saved
        checkpoints exactly this many steps apart (for records whose checkpoints are
        not evenly spaced, such as the ``medium`` preset's).
    band : str
        Error band of figures 1a and 1b: "std" (+- 1 std over tasks, the published
        figure) or "sem" (+- 1.96 SEM).
    ci_unit : str
        Independent units of the findings' CIs: "disjoint" (tasks with pairwise
        disjoint characters) or "task" (every task, as if independent).
    fig3_checkpoints, fig3_tasks : int
        Sizes of the figure 3 selection; inner steps ``fig3_inner_steps``.
    seed : int
        Seed of the MDS embedding (the findings' CIs are Student-t intervals: no
        resampling, no seed).
    device : str or None
        Torch device for CKA ("cuda" on a GPU machine).
    formats : tuple of str
        Figure file formats (matplotlib names), default PNG and PDF.

    Every field is checked on construction, so a bad choice fails before anything is
    computed or written, with a message naming the field, its command-line option, the
    value and what is allowed.

    Examples
    --------
    >>> AnalysisConfig(meta_gap=0)
    Traceback (most recent call last):
    ...
    repscope.analyses.errors.AnalysisError: meta_gap (--meta-gap) = 0 is not allowed; expected a whole number >= 1
    """

    measures: tuple = ("rsa", "cka_linear")
    primary: str = "rsa"
    rdm_method: str = "correlation"
    mds_mode: str = "paper"
    figure_measures: dict = dataclasses.field(default_factory=lambda: {"2": ("rsa", "cka_rbf")})
    figure_rdm_method: dict = dataclasses.field(default_factory=lambda: {"2": "euclidean"})
    meta_gap: int = 1000
    fig1b_gap: int | None = None
    band: str = "std"
    ci_unit: str = "disjoint"
    fig3_checkpoints: int = 5
    fig3_tasks: int = 4
    fig3_inner_steps: tuple = (0, 1, 5, 10)
    seed: int = 0
    device: str | None = None
    formats: tuple = ("png", "pdf")

    def __post_init__(self):
        for name in ("measures", "fig3_inner_steps", "formats"):
            if isinstance(getattr(self, name), (str, bytes)):
                _refuse(name, getattr(self, name), "a tuple (e.g. ('rsa',)), not a string")
        self.measures, self.fig3_inner_steps, self.formats = (
            tuple(self.measures), tuple(self.fig3_inner_steps), tuple(self.formats))
        for name in ("measures", "primary"):
            for m in getattr(self, name) if name == "measures" else (self.primary,):
                try:
                    get_measure(m)
                except AnalysisError as err:
                    raise AnalysisError(f"{_option(name)}: {err}") from None
        if not self.measures or len(set(self.measures)) != len(self.measures):
            _refuse("measures", self.measures, "one or more different measure names")
        if self.rdm_method not in RDM_METHODS:
            _refuse("rdm_method", self.rdm_method, f"one of {sorted(RDM_METHODS)}")
        if self.mds_mode not in MDS_MODES:
            _refuse("mds_mode", self.mds_mode, f"one of {sorted(MDS_MODES)}")
        for name in ("meta_gap", "fig3_checkpoints", "fig3_tasks"):
            if not _whole(getattr(self, name), 1):
                _refuse(name, getattr(self, name), "a whole number >= 1")
        if not self.fig3_inner_steps or not all(_whole(s, 0) for s in self.fig3_inner_steps):
            _refuse("fig3_inner_steps", self.fig3_inner_steps, "one or more whole numbers >= 0")
        if not _whole(self.seed, 0):
            _refuse("seed", self.seed, "a whole number >= 0")
        known = FigureCanvasBase.get_supported_filetypes()
        if not self.formats or any(f not in known for f in self.formats):
            _refuse("formats", ",".join(map(str, self.formats)), f"one or more of {sorted(known)}")
        if self.device is not None:
            try:
                dev = torch.device(self.device)
            except (RuntimeError, TypeError):
                _refuse("device", self.device, "a torch device such as 'cpu' or 'cuda'")
            if dev.type == "cuda" and not torch.cuda.is_available():
                _refuse("device", self.device, "'cpu' here: torch finds no CUDA device (none present, or a CPU-only build)")
        self.figure_measures = {str(k): tuple(v) for k, v in dict(self.figure_measures).items()}
        self.figure_rdm_method = {str(k): v for k, v in dict(self.figure_rdm_method).items()}
        bad = sorted(k for k in {*self.figure_measures, *self.figure_rdm_method} if k not in FIGURES)
        if bad:
            _refuse("figure_measures/figure_rdm_method", bad, f"figures among {list(FIGURES)}")
        for fig, names in self.figure_measures.items():
            for m in names:
                try:
                    get_measure(m)
                except AnalysisError as err:
                    raise AnalysisError(f"{_option('figure_measures')} of figure {fig}: {err}") from None
        for fig, method in self.figure_rdm_method.items():
            if method not in RDM_METHODS:
                _refuse("figure_rdm_method", f"{fig}={method}", f"FIG=METHOD with a method among {sorted(RDM_METHODS)}")
        if self.band not in BANDS:
            _refuse("band", self.band, f"one of {list(BANDS)}")
        if self.ci_unit not in CI_UNITS:
            _refuse("ci_unit", self.ci_unit, f"one of {list(CI_UNITS)}")
        if self.fig1b_gap is not None and not _whole(self.fig1b_gap, 1):
            _refuse("fig1b_gap", self.fig1b_gap, "None or a whole number >= 1")

    def options(self, measure: str, figure: str | None = None) -> dict:
        """Options passed to :func:`repscope.analyses.compare` for ``measure`` (in ``figure``)."""
        allowed = get_measure(measure).defaults
        opts = {"rdm_method": self.figure_rdm_method.get(str(figure), self.rdm_method), "device": self.device}
        return {k: v for k, v in opts.items() if k in allowed and v is not None}

    def spec(self, figure: str | None = None) -> dict:
        """``{measure: options}`` of ``figure`` (default: the general ``measures``)."""
        names = self.figure_measures.get(str(figure), self.measures)
        return {m: self.options(m, figure) for m in names}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


RECORD_KINDS = ("maml", "supervised")


def record_kind(ds: xr.Dataset) -> str:
    """The ``kind`` the recorder stored in the record's config: "maml" or "supervised".

    ``repscope.training.record`` writes ``{"kind": "maml", ...}`` and
    ``repscope.training.supervised`` ``{"kind": "supervised", ...}`` into the ``config``
    attribute; the shapes are not a reliable guide (a meta-learning record may hold one
    task and inner step 0 only).

    Examples
    --------
    >>> record_kind(xr.Dataset(attrs={"config": '{"kind": "supervised", "steps": 10}'}))
    'supervised'
    """
    try:
        kind = json.loads(ds.attrs.get("config", "{}")).get("kind")
    except (ValueError, AttributeError):
        kind = None
    if kind not in RECORD_KINDS:
        raise AnalysisError(f"Cannot tell the kind of record: its config attribute has kind {kind!r}. "
                            f"Expected one of {list(RECORD_KINDS)} (written by repscope.training.record "
                            "and repscope.training.supervised); name the run with --maml-run or "
                            "--mnist-run instead")
    return kind


_CLI_FIELDS = {"measures", "primary", "rdm_method", "mds_mode", "meta_gap", "seed", "device",
               "formats", "figure_measures", "figure_rdm_method", "fig1b_gap", "band", "ci_unit"}  # the fields python analyses/layer_similarity.py sets from its options


def _option(field: str) -> str:
    return f"{field} (--{field.replace('_', '-')})" if field in _CLI_FIELDS else field


def _refuse(field: str, value, allowed: str):
    raise AnalysisError(f"{_option(field)} = {value!r} is not allowed; expected {allowed}")


def _whole(value, minimum: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum


def is_supervised(ds: xr.Dataset) -> bool:
    """Whether the record is the supervised control (its stored ``kind``, see :func:`record_kind`).

    Examples
    --------
    >>> is_supervised(xr.Dataset(attrs={"config": '{"kind": "maml", "run": {}}'}))
    False
    """
    return record_kind(ds) == "supervised"


def _find_key(obj, key):
    if isinstance(obj, dict):
        if key in obj:
            yield obj[key]
        for v in obj.values():
            yield from _find_key(v, key)


def is_miniimagenet(ds: xr.Dataset) -> bool:
    """Whether a ``dataset`` entry of the record's config (run config nested) is Mini-ImageNet.

    Examples
    --------
    >>> is_miniimagenet(xr.Dataset(attrs={"config": '{"run": {"dataset": "miniimagenet"}}'}))
    True
    >>> is_miniimagenet(xr.Dataset(attrs={"config": '{"run": {"dataset": "omniglot"}}'}))
    False
    """
    try:
        cfg = json.loads(ds.attrs.get("config", "{}"))
    except ValueError:
        return False
    return any(str(v).lower().replace("-", "").replace("_", "") == "miniimagenet"
               for v in _find_key(cfg, "dataset"))


def _provenance(res, ds: xr.Dataset, cfg: AnalysisConfig, source: str):
    res.attrs.update({"analysis_config": cfg.to_json(), "source": source,
                      "run_config": ds.attrs.get("config", "{}"),
                      "versions": ds.attrs.get("versions", "{}")})
    return res


def check_record(ds: xr.Dataset) -> None:
    """Refuse a record with a NaN or Inf activation in any layer, naming the cells.

    The figures and findings need every (checkpoint, task, inner_step) cell: a missing
    (all-NaN) cell, e.g. from a diverged training run, is an error here, raised before
    anything is computed or written.

    Examples
    --------
    >>> x = np.ones((1, 1, 2, 3, 2))
    >>> x[0, 0, 1] = np.nan
    >>> ds = xr.Dataset({"head": (("checkpoint", "task", "inner_step", "stimulus", "unit_head"), x)},
    ...                 coords={"checkpoint": [500], "task": [0], "inner_step": [0, 1]},
    ...                 attrs={"layers": '["head"]'})
    >>> check_record(ds)
    Traceback (most recent call last):
    ...
    repscope.analyses.errors.AnalysisError: 'head' has non-finite values in 1 cell(s): checkpoint=500, task=0, inner_step=1 (all NaN). ...
    """
    for layer in fd.layer_names(ds):
        da = ds[layer]
        if is_lazy(da):  # a record larger than memory: checked one chunk at a time
            features_by_chunk(_checked, da, (STIMULUS, unit_dim(da)))
        else:
            to_cells(da, allow_missing=False)


def _checked(da: xr.DataArray) -> xr.DataArray:
    """:func:`check_record`'s check of one in-memory chunk; returns one value per cell."""
    to_cells(da, allow_missing=False)
    return da.isel({STIMULUS: 0, unit_dim(da): 0}, drop=True).copy(deep=True)  # not a view of the chunk


def _rdm_figure(ds, cfg, layers, sel):
    rdm = fd.rdm_of_rdms(ds, cfg.primary, selection=sel, layers=layers, **cfg.options(cfg.primary))
    emb = mds_embedding(rdm, cfg.mds_mode, seed=cfg.seed)
    return xr.Dataset({"rdm_of_rdms": rdm, "mds": emb}, attrs={**rdm.attrs, "mds_mode": cfg.mds_mode})


def _save_figure(res: xr.Dataset, figure: str, ds, cfg: AnalysisConfig, out: Path, source: str) -> list[Path]:
    """Label ``res`` as ``figure``, save its values (``figXX.nc``) and its drawing."""
    res.attrs["figure"] = figure
    _provenance(res, ds, cfg, source)
    return [save_netcdf(res, out / f"fig{figure}.nc"), *save_figure(draw(res), out / f"fig{figure}", cfg.formats)]


def analyse_maml(ds: xr.Dataset, cfg: AnalysisConfig, out: Path, source: str = "") -> dict:
    """Figures 1a, 1b, 3 (or 6 for Mini-ImageNet), 4, 5 of one meta-learning record.

    Figure 1b compares consecutive checkpoints (F2 picks its own pairs, exactly
    ``cfg.meta_gap`` steps apart, in :func:`summarize`). Figure 1b needs two
    checkpoints and figure 4 the ``accuracy`` variable; each is left out when the
    record lacks it.

    Returns
    -------
    dict
        ``{"inner": Dataset, "meta": Dataset, "files": [Path, ...]}``.
    """
    out = Path(out)
    check_record(ds)
    layers = fd.layer_names(ds)
    bar = tqdm(total=5, desc=f"analyse {Path(source).name or 'maml'}", unit="figure", leave=False)
    results, files = {}, []

    bar.set_postfix_str("fig1a")
    results["inner"] = fd.inner_loop_change(ds, cfg.spec("1a")).assign_attrs(band=cfg.band)
    files += _save_figure(results["inner"], "1a", ds, cfg, out, source)
    bar.update()

    bar.set_postfix_str("fig1b")
    if ds.sizes["checkpoint"] >= 2:
        pairs = None if cfg.fig1b_gap is None else gap_pairs(ds["checkpoint"].values, cfg.fig1b_gap)
        if pairs == []:
            raise AnalysisError(f"fig1b_gap {cfg.fig1b_gap}: no two saved checkpoints are that far apart; "
                                f"checkpoints: {ds['checkpoint'].values.tolist()}")
        results["meta"] = fd.meta_change(ds, cfg.spec("1b"), lag=1, pairs=pairs,
                                           once_if_identical=True).assign_attrs(band=cfg.band)
        files += _save_figure(results["meta"], "1b", ds, cfg, out, source)
    bar.update()

    bar.set_postfix_str("fig3/5")
    sel = fd.default_selection(ds, cfg.fig3_checkpoints, cfg.fig3_tasks, cfg.fig3_inner_steps)
    body = layers[:-1] if len(layers) > 1 else layers
    files += _save_figure(_rdm_figure(ds, cfg, body, sel), "6" if is_miniimagenet(ds) else "3",
                          ds, cfg, out, source)
    bar.update()
    files += _save_figure(_rdm_figure(ds, cfg, layers[-1:], sel), "5", ds, cfg, out, source)
    bar.update()

    bar.set_postfix_str("fig4")
    if "accuracy" in ds:
        files += _save_figure(fd.accuracy_curves(ds, tasks=sel["task"]), "4", ds, cfg, out, source)
    bar.update()
    bar.close()
    results["files"] = files
    return results


def analyse_supervised(ds: xr.Dataset, cfg: AnalysisConfig, out: Path, source: str = "") -> dict:
    """Figure 2 of the supervised control record."""
    check_record(ds)
    res = fd.training_change(ds, cfg.spec("2"))
    return {"supervised": res, "files": _save_figure(res, "2", ds, cfg, Path(out), source)}


def draw(res: xr.Dataset):
    """Draw a saved result according to its ``figure`` attr."""
    fig = str(res.attrs.get("figure"))
    if fig == "1a":
        return plot_inner_loop_change(res)
    if fig == "1b":
        return plot_meta_change(res)
    if fig == "2":
        return plot_training_change(res)
    if fig in ("3", "5", "6"):
        return plot_rdm_of_rdms(res["rdm_of_rdms"], res["mds"], title=f"Fig. {fig}")
    if fig == "4":
        return plot_accuracy(res)
    if fig in SEED_FIGURES:
        return plot_seed_spread(res)
    raise AnalysisError(f"Unknown figure {fig!r}. Expected one of {[*FIGURES, *SEED_FIGURES]}")


def redraw(folder: Path, formats: tuple = ("png", "pdf")) -> list[Path]:
    """Redraw every ``fig*.nc`` under ``folder`` from the saved values alone.

    Returns the figure files written, one per format (checked like
    :attr:`AnalysisConfig.formats` before anything is drawn).
    """
    formats = AnalysisConfig(formats=formats).formats
    written = []
    for nc in sorted(Path(folder).rglob("fig*.nc")):
        written += save_figure(draw(load_netcdf(nc)), nc.with_suffix(""), formats)
    if not written:
        raise AnalysisError(f"No saved figure results (fig*.nc) under {folder}")
    return written


def summarize(maml: dict[str, dict], supervised: xr.Dataset | None, cfg: AnalysisConfig,
              records: dict[str, xr.Dataset] | None = None) -> str:
    """Markdown findings for each analysed meta-learning run (F1-F3, every measure)."""
    parts = [f"Analysis settings: `{cfg.to_json()}`\n"]
    if not maml and supervised is not None:
        for m in cfg.measures:
            s = supervised_depth_order(supervised[m]) if m in supervised else None
            if s is None:
                continue
            parts.append(f"# Findings: supervised control, {m}\n\nF1 (descriptive, one network): "
                         f"conv layers {', '.join(s['conv'])} ordered by depth at {s['holds']} after step 0.\n")
    for name, res in maml.items():
        for m, result in _assess_run(records[name], res, supervised, cfg).items():
            parts.append(findings_markdown(result, title=f"Findings: {name}, {m}"))
    return "\n".join(parts)


def _assess_run(ds: xr.Dataset, res: dict, supervised: xr.Dataset | None, cfg: AnalysisConfig) -> dict:
    """:func:`repscope.analyses.findings.assess` of one analysed run, per measure of ``cfg``."""
    out = {}
    for m in cfg.measures:
        sup = supervised[m] if supervised is not None and m in supervised else None
        out[m] = assess(ds, m, cfg.options(m), meta_gap=cfg.meta_gap, ci_unit=cfg.ci_unit,
                        inner=res["inner"][m] if m in res["inner"] else None, supervised=sup)
    return out


def _seed_record(what: str, record) -> xr.Dataset:
    """The record of ``what`` ("seed 3", "the supervised control"): a Dataset as given, a folder read."""
    if isinstance(record, xr.Dataset):
        return record
    if not isinstance(record, (str, Path)):
        raise AnalysisError(f"The record of {what} is a {type(record).__name__}; expected a run folder, its "
                            "activations/ folder, or an xarray.Dataset")
    folder = Path(record)
    folder = folder / "activations" if (folder / "activations").is_dir() else folder
    try:
        return open_run(folder)
    except ProbeError as err:
        raise AnalysisError(f"Cannot read the activation record of {what} ({record}): {err}") from None


def analyse_seed(seed: int, record, cfg: AnalysisConfig, out: Path, supervised: xr.Dataset | None = None,
                 source: str | None = None) -> dict:
    """One seed of :func:`analyse_seeds` alone: its figures and ``findings.md`` in ``out/seed_<seed>/``.

    ``analyse_seeds(..., analysed={seed: result})`` pools what this returns without
    analysing the seed again, so seeds can be analysed as their records appear.

    Parameters
    ----------
    seed : int
    record : path or xarray.Dataset
        The seed's run folder (or its ``activations/`` folder) or its opened record.
    cfg : AnalysisConfig
    out : path
        The output folder of :func:`analyse_seeds` (this seed writes into ``seed_<seed>/``).
    supervised : xarray.Dataset, optional
        Figure 2's values of the supervised control (``analyse_supervised(...)["supervised"]``),
        for F1's supervised line.
    source : str, optional
        Where the record came from, for the files' provenance (default: ``record`` when
        it is a path).

    Returns
    -------
    dict
        As :func:`analyse_maml`, with ``findings`` ({measure: assess result}).

    Raises
    ------
    AnalysisError
        An unreadable record, the supervised control's record, or a record holding
        non-finite cells (the message starts "its record is unusable").

    Examples
    --------
    A tiny made-up record (one conv layer and the head, random values), analysed alone
    and then pooled with a second seed without analysing it again:

    >>> import tempfile
    >>> def record(seed):
    ...     x = np.random.default_rng(seed).normal(size=(2, 4, 2, 5, 6))  # checkpoint, task, step, stimulus, unit
    ...     return xr.Dataset({n: (("checkpoint", "task", "inner_step", "stimulus", f"unit_{n}"), x, {"role": "layer"})
    ...                        for n in ("conv1", "head")},
    ...                       coords={"checkpoint": [0, 10], "task": range(4), "inner_step": [0, 1]},
    ...                       attrs={"layers": '["conv1", "head"]',
    ...                              "config": json.dumps({"kind": "maml", "run": {"seed": seed}})})
    >>> cfg, out = AnalysisConfig(measures=("rsa",), formats=("png",)), Path(tempfile.mkdtemp())
    >>> first = analyse_seed(0, record(0), cfg, out)
    >>> sorted(first["findings"]), first["files"][-1].relative_to(out).as_posix()
    (['rsa'], 'seed_0/findings.md')
    >>> res = analyse_seeds({0: record(0), 1: record(1)}, cfg, out, analysed={0: first})
    >>> res["seeds"][0] is first
    True
    """
    ds = _seed_record(f"seed {seed}", record)
    if is_supervised(ds):
        raise AnalysisError(f"records[{seed}] is the supervised control; pass it as mnist=")
    try:
        check_record(ds)
    except AnalysisError as err:
        raise AnalysisError(f"its record is unusable: {err}") from None
    if source is None:
        source = str(record) if not isinstance(record, xr.Dataset) else f"seed {seed}"
    return _analyse_checked_seed(seed, ds, cfg, Path(out), supervised, source)


def _analyse_checked_seed(seed: int, ds: xr.Dataset, cfg: AnalysisConfig, out: Path,
                          supervised: xr.Dataset | None, source: str) -> dict:
    """:func:`analyse_seed` of a record already opened and checked."""
    res = analyse_maml(ds, cfg, out / f"seed_{seed}", source)
    res["findings"] = _assess_run(ds, res, supervised, cfg)
    text = "\n".join(findings_markdown(r, title=f"Findings: seed {seed}, {m}") for m, r in res["findings"].items())
    res["files"].append(save_text(text, out / f"seed_{seed}" / "findings.md"))
    return res


def analyse_seeds(records: dict, cfg: AnalysisConfig, out: Path, *, failed: dict | None = None,
                  mnist=None, analysed: dict | None = None, supervised: dict | None = None) -> dict:
    """One configuration trained with several seeds: each seed's results, verdicts pooled over seeds.

    Every seed's record is analysed as :func:`analyse_maml` and
    :func:`repscope.analyses.findings.assess` analyse one run (its figures and its own
    ``findings.md`` in ``out/seed_<seed>/``); the verdicts are then pooled with the seeds
    as the top resampling unit and judged for replication
    (:func:`repscope.analyses.replication.pool_findings`). ``out/findings.md`` holds,
    per measure, the per-seed table with the pooled verdict and replication beside it;
    ``out/fig1a_seeds`` and ``out/fig1b_seeds`` (netCDF and drawings) show each seed's
    curve and their mean.

    Parameters
    ----------
    records : dict of {int: path or xarray.Dataset}
        Seed -> its meta-learning run folder (or its ``activations/`` folder, read into
        memory) or its opened record. One configuration: the records may differ only
        in the seed and what it draws
        (:func:`repscope.analyses.replication.check_same_layout`).
    cfg : AnalysisConfig
    out : path
        Output folder.
    failed : dict of {int: str}, optional
        Seeds whose training or recording failed, with what failed (e.g. "training
        exited with code 1"). Named in ``findings.md``; the pooled verdicts say they use
        the remaining seeds. A seed whose record holds non-finite cells (a diverged
        run) joins them, with :func:`check_record`'s message.
    mnist : path or xarray.Dataset, optional
        The supervised control's record: figure 2 in ``out/<name>/`` (``out/mnist/`` for
        a Dataset) and F1's supervised line in every seed's findings.
    analysed : dict of {int: dict}, optional
        Seeds already analysed by :func:`analyse_seed` (same ``cfg`` and ``out``, and the
        same supervised values): their results are pooled as they are.
    supervised : dict, optional
        ``analyse_supervised``'s result for ``mnist``, when it was analysed already.

    Returns
    -------
    dict
        ``seeds`` ({seed: {"inner", "meta", "files", "findings": {measure: assess
        result}}}), ``failed`` ({seed: reason}), ``pooled`` ({measure: pool_findings
        result}), ``supervised`` (figure 2's values or None), ``findings`` (the path of
        ``findings.md``) and ``files``.

    Raises
    ------
    AnalysisError
        Before anything is written: a seed that is not a whole number or is given both
        as a record and as failed, no seeds, records of different configurations, an
        unreadable record.

    Examples
    --------
    Three seeds of a tiny made-up record (one conv layer and the head, random values)
    and a fourth whose training failed:

    >>> import tempfile
    >>> def record(seed):
    ...     x = np.random.default_rng(seed).normal(size=(2, 4, 2, 5, 6))  # checkpoint, task, step, stimulus, unit
    ...     return xr.Dataset({n: (("checkpoint", "task", "inner_step", "stimulus", f"unit_{n}"), x, {"role": "layer"})
    ...                        for n in ("conv1", "head")},
    ...                       coords={"checkpoint": [0, 10], "task": range(4), "inner_step": [0, 1]},
    ...                       attrs={"layers": '["conv1", "head"]',
    ...                              "config": json.dumps({"kind": "maml", "run": {"seed": seed}})})
    >>> res = analyse_seeds({s: record(s) for s in (0, 1, 2)}, AnalysisConfig(measures=("rsa",), formats=("png",)),
    ...                     Path(tempfile.mkdtemp()), failed={3: "training exited with code 1"})
    >>> sorted(res["seeds"]), res["failed"]
    ([0, 1, 2], {3: 'training exited with code 1'})
    >>> res["pooled"]["rsa"]["claims"]["f2"]["status"]
    'not testable over seeds (0 of 4 requested seeds could answer; seed 3 failed)'
    >>> print(res["findings"].read_text().splitlines()[2])
    # Findings over seeds: rsa
    """
    failed = dict(failed or {})
    analysed = dict(analysed or {})
    for s in [*records, *failed]:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise AnalysisError(f"seed {s!r} is not allowed; expected a whole number >= 0")
    both = sorted(set(records) & set(failed))
    if both:
        raise AnalysisError(f"seeds {both} are given both as records and as failed; give each seed once")
    if not records:
        raise AnalysisError("No seed records to analyse" + (f"; every seed failed: {failed}" if failed else ""))
    stray = sorted(set(analysed) - set(records))
    if stray:
        raise AnalysisError(f"analysed seeds {stray} have no record; give each analysed seed's record too")
    requested = sorted({int(s) for s in [*records, *failed]})
    failed = {int(s): str(r) for s, r in failed.items()}
    opened = {int(s): _seed_record(f"seed {s}", r) for s, r in sorted(records.items())}
    check_same_layout(opened)
    for s, ds in list(opened.items()):
        if is_supervised(ds):
            raise AnalysisError(f"records[{s}] is the supervised control; pass it as mnist=")
        if s in analysed:
            continue
        try:
            check_record(ds)
        except AnalysisError as err:
            failed[s] = f"its record is unusable: {err}"
            del opened[s]
    if not opened:
        raise AnalysisError(f"No usable seed record; every seed failed: {failed}")

    out = Path(out)
    files, values = [], None
    if supervised is not None:
        values, files = supervised["supervised"], files + supervised["files"]
    elif mnist is not None:
        mnist_ds = _seed_record("the supervised control (mnist)", mnist)
        name = Path(mnist).name if not isinstance(mnist, xr.Dataset) else "mnist"
        sup = analyse_supervised(mnist_ds, cfg, out / name, str(mnist) if not isinstance(mnist, xr.Dataset) else "")
        values, files = sup["supervised"], files + sup["files"]
    seeds = {}
    for s, ds in opened.items():
        seeds[s] = analysed[s] if s in analysed else _analyse_checked_seed(  # checked above
            s, ds, cfg, out, values, str(records[s]) if not isinstance(records[s], xr.Dataset) else f"seed {s}")
        files += seeds[s]["files"]
    pooled = {m: pool_findings({s: r["findings"][m] for s, r in seeds.items()}, failed=failed,
                               requested=requested) for m in cfg.measures}
    for key, fig in (("inner", "1a_seeds"), ("meta", "1b_seeds")):
        per = {s: r[key] for s, r in seeds.items() if key in r}
        if per:
            first = next(iter(opened.values()))
            files += _save_figure(seed_spread(per), fig, first, cfg, out, ", ".join(str(records[s]) for s in per))
    links = {s: f"seed_{s}/findings.md" for s in seeds}
    text = "\n".join([f"Analysis settings: `{cfg.to_json()}`\n"]
                     + [replication_markdown(p, title=f"Findings over seeds: {m}", links=links)
                        for m, p in pooled.items()])
    path = save_text(text, out / "findings.md")
    return {"seeds": seeds, "failed": failed, "pooled": pooled, "supervised": values,
            "findings": path, "files": files + [path]}

