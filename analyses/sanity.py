"""Measure sanity checks on recorded networks: ``python -m repscope.analyses.sanity``.

Reads the records of K independently seeded networks of one architecture (for instance
the MNIST control network, ``python -m repscope.training.supervised --seed S``; the
script ``bench/bench_measure_sanity.py`` trains them and runs this), and writes:

* ``layer_identification.nc`` / ``.csv``: Kornblith et al.'s (2019) layer
  identification, the share per measure and stimulus count;
* ``pc_removal.nc`` / ``.csv``: Ding et al.'s (2021) top-principal-component removal,
  each measure's distance and a linear probe's accuracy per step;
* ``measure_checks.png`` / ``.pdf`` and ``measure_checks.md`` (the tables).

Example::

    python -m repscope.analyses.sanity --run runs/sanity/seed0 --run runs/sanity/seed1 \\
        --run runs/sanity/seed2 --out results/measure_sanity

Computation: :mod:`repscope.analyses.measure_checks`; figure:
:mod:`repscope.analyses.measure_check_plots`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ..probes import ProbeError, open_run
from .dims import STIMULUS
from .errors import AnalysisError
from .measure_check_plots import plot_measure_checks
from .measure_checks import DEFAULT_MEASURES, layer_identification, pc_removal
from .measures import MEASURES
from .saving import save_figure, save_netcdf, save_text

__all__ = ["main"]

_N_STIMULI = "20,100,500"  # stimulus counts of the layer identification


def _read_network(folder, checkpoint: int | None = None) -> tuple[dict[str, xr.DataArray], np.ndarray, dict]:
    """The layers of one recorded network at one checkpoint (default: its last).

    Returns the layers (name -> ``(stimulus, unit_*)``), the stimulus labels and the
    run's configuration. Records with tasks or inner steps use task 0 and inner step 0.
    """
    folder = Path(folder)
    act = folder / "activations" if (folder / "activations").is_dir() else folder
    try:
        ds = open_run(act, None if checkpoint is None else [checkpoint])
    except ProbeError as err:
        raise AnalysisError(f"Cannot read the record of {folder}: {err}") from None
    ds = ds.isel(checkpoint=-1)
    for dim in ("task", "inner_step"):
        if dim in ds.dims:
            ds = ds.isel({dim: 0})
    layers = json.loads(ds.attrs["layers"])
    out = {name: ds[name].drop_vars([c for c in ds[name].coords if c not in (STIMULUS, "label", "image_id")])
           for name in layers}
    config = json.loads(ds.attrs.get("config", "{}"))
    config["checkpoint"] = int(ds["checkpoint"])
    return out, ds["label"].values, config


def _tables_markdown(ident: xr.Dataset, removal: xr.Dataset) -> str:
    """The two results as markdown tables (share in %, tracking as Spearman rho)."""
    ns = [int(n) for n in ident["n_stimuli"].values]
    lines = ["| measure | " + " | ".join(f"n = {n}" for n in ns) + " | tracking rho |",
             "| --- | " + " | ".join("---" for _ in ns) + " | --- |"]
    for m in ident["measure"].values:
        shares = " | ".join(f"{100 * float(ident['share'].sel(measure=m, n_stimuli=n)):.0f} %" for n in ns)
        rho = float(removal["tracking"].sel(measure=m)) if m in removal["measure"] else np.nan
        lines.append(f"| {m} | {shares} | {rho:.2f} |")
    acc = removal["accuracy"].mean("net")
    lines += ["", "| top PCs removed | " + " | ".join(str(int(r)) for r in removal["removed"].values) + " |",
              "| --- | " + " | ".join("---" for _ in removal["removed"].values) + " |",
              "| probe accuracy | " + " | ".join(f"{100 * float(a):.0f} %" for a in acc.values) + " |"]
    for m in removal["measure"].values:
        d = removal["distance"].sel(measure=m).mean("net")
        lines.append(f"| {m} distance | " + " | ".join(f"{float(v):.2f}" for v in d.values) + " |")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m repscope.analyses.sanity",
        description="Sanity checks of the similarity measures on K independently seeded networks of one "
                    "architecture: Kornblith et al.'s layer identification and Ding et al.'s removal of "
                    "top principal components against a linear probe.")
    p.add_argument("--run", action="append", type=Path, required=True, metavar="DIR",
                   help="A recorded run folder (repeat, at least 2; e.g. runs/sanity/seed0).")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="Results folder (e.g. results/measure_sanity).")
    p.add_argument("--checkpoint", type=int, default=None, metavar="N",
                   help="Checkpoint step to compare (none: the last recorded).")
    p.add_argument("--measures", default=",".join(DEFAULT_MEASURES), metavar="M1,M2",
                   help=f"Comma-separated measures, each with its default options; from "
                        f"{sorted(MEASURES)}. (default: {','.join(DEFAULT_MEASURES)})")
    p.add_argument("--n-stimuli", default=_N_STIMULI, metavar="N,N",
                   help="Comma-separated stimulus counts for layer identification (the first n "
                        f"stimuli). (default: {_N_STIMULI})")
    p.add_argument("--layer", default="conv4", metavar="NAME",
                   help="Layer whose principal components are removed. (default: conv4)")
    p.add_argument("--max-removed", type=int, default=10, metavar="N",
                   help="Remove up to this many top components. (default: 10)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch CPU threads. (default: 1)")
    return p


def main(argv=None) -> int:
    """Run both checks on recorded runs and write the results (see the module docstring).

    Returns the exit status: 0, or 2 after printing what is wrong with the options.

    Examples
    --------
    >>> main(["--run", "runs/a", "--run", "runs/b", "--out", "results/x", "--measures", "cka"])
    2
    """
    args = _parser().parse_args(argv)
    measures = [m.strip() for m in args.measures.split(",") if m.strip()]
    try:
        unknown = [m for m in measures if m not in MEASURES]
        if unknown:
            raise AnalysisError(f"--measures: unknown {unknown}; expected names from {sorted(MEASURES)}")
        n_stimuli = [int(n) for n in args.n_stimuli.split(",")]
        if len(args.run) < 2:
            raise AnalysisError(f"--run: give at least 2 runs; got {len(args.run)}")
        torch.set_num_threads(args.threads)
        nets, labels, configs = zip(*(_read_network(r, args.checkpoint) for r in args.run))
        if args.layer not in nets[0]:
            raise AnalysisError(f"--layer {args.layer!r}: not a recorded layer; expected one of {list(nets[0])}")
        ident = layer_identification(nets, measures, n_stimuli)
        removal = pc_removal([n[args.layer] for n in nets], labels[0], measures, args.max_removed)
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    meta = {"runs": json.dumps([str(r) for r in args.run]), "seeds": json.dumps([c.get("seed") for c in configs]),
            "checkpoints": json.dumps([c["checkpoint"] for c in configs]), "layer": args.layer,
            "config": json.dumps(vars(args), default=str)}
    ident.attrs.update(meta)
    removal.attrs.update(meta)
    out = args.out
    save_netcdf(ident, out / "layer_identification.nc")
    save_netcdf(removal, out / "pc_removal.nc")
    save_text(ident["share"].to_pandas().to_csv(), out / "layer_identification.csv")
    save_text(xr.Dataset({"distance": removal["distance"].mean("net"), "accuracy": removal["accuracy"].mean("net")})
              .to_dataframe().to_csv(), out / "pc_removal.csv")
    table = _tables_markdown(ident, removal)
    save_text(table, out / "measure_checks.md")
    save_figure(plot_measure_checks(ident, removal), out / "measure_checks")
    print(table)
    print(f"[sanity] results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
