"""The measure sanity checks: layer identification, principal-component removal, the CLI."""
import json

import numpy as np
import pytest
import xarray as xr

from repscope.analyses import AnalysisError
from repscope.analyses.measure_checks import layer_identification, pc_removal, tracking
from repscope.analyses.sanity import main


def _nets(k=3, n=40, seed=0):
    """k 'networks' whose layers are distinct fixed maps of shared inputs, seen through
    a different random rotation per network: every sensible measure identifies them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10))
    maps = [np.eye(10), rng.normal(size=(10, 10)) ** 3, rng.normal(size=(10, 10))]
    nets = []
    for _ in range(k):
        h, layers = x, {}
        for i, m in enumerate(maps):
            h = np.tanh(h @ m)
            rot = np.linalg.qr(rng.normal(size=(10, 10)))[0]
            layers[f"l{i}"] = xr.DataArray(h @ rot, dims=("stimulus", f"unit_l{i}"))
        nets.append(layers)
    return nets


def test_layer_identification_counts_every_ordered_pair_and_layer():
    ds = layer_identification(_nets(), ["cka_linear", "procrustes", "svcca"], [40])
    assert int(ds["trials"]) == 3 * 2 * 3
    assert np.isnan(ds["correct"].sel(net=1, other_net=1)).all()
    # rotated copies of the same layers: the rotation-invariant measures find them all
    assert ds["share"].values.tolist() == [[1.0], [1.0], [1.0]]


def test_layer_identification_refuses_mismatched_networks():
    nets = _nets(2)
    del nets[1]["l2"]
    with pytest.raises(AnalysisError, match="Every network must have the layers"):
        layer_identification(nets, ["rsa"], [40])
    with pytest.raises(AnalysisError, match="n_stimuli=\\[50\\] but the records hold 40"):
        layer_identification(_nets(2), ["rsa"], [50])


def test_pc_removal_distances_start_at_zero_and_accuracy_falls():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), 30)
    means = rng.normal(size=(4, 12)) * 3
    x = xr.DataArray(means[y] + rng.normal(size=(120, 12)), dims=("stimulus", "unit_a"))
    ds = pc_removal([x], y, ["cka_linear", "procrustes"], max_removed=4, folds=3)
    assert np.allclose(ds["distance"].sel(removed=0), 0, atol=1e-7)
    acc = ds["accuracy"].sel(net=0).values
    assert acc[0] > 0.9 and acc[-1] < acc[0] - 0.2  # the class means span the top components
    assert (ds["tracking"] > 0.8).all()


def test_tracking_is_nan_for_a_constant_distance():
    ds = xr.Dataset({"distance": (("measure", "net", "removed"), np.zeros((1, 1, 3))),
                     "accuracy": (("net", "removed"), [[0.9, 0.8, 0.7]])}, coords={"measure": ["m"]})
    assert np.isnan(tracking(ds).item())


def test_sanity_cli_writes_tables_netcdf_and_figure(tmp_path):
    """Two tiny seeded networks recorded by the probe, read back by the CLI."""
    import torch
    from torch import nn
    from repscope.probes import Probe, write_checkpoint
    x = torch.as_tensor(np.random.default_rng(0).normal(size=(30, 6)))
    runs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        probe = Probe(net)
        with probe.recording(checkpoint=5, labels=list(np.arange(30) % 3), image_ids=[str(i) for i in range(30)]):
            net(x)
        write_checkpoint(tmp_path / f"seed{seed}" / "activations", probe.to_dataset())
        runs += ["--run", str(tmp_path / f"seed{seed}")]
    out = tmp_path / "res"
    assert main(runs + ["--out", str(out), "--n-stimuli", "10,30", "--layer", "2", "--max-removed", "2",
                        "--measures", "cka_linear,svcca"]) == 0
    for name in ("layer_identification.nc", "pc_removal.nc", "layer_identification.csv", "pc_removal.csv",
                 "measure_checks.md", "measure_checks.png", "measure_checks.pdf"):
        assert (out / name).is_file(), name
    ident = xr.open_dataset(out / "layer_identification.nc")
    assert json.loads(ident.attrs["checkpoints"]) == [5, 5] and ident["share"].shape == (2, 2)
    assert main(runs + ["--out", str(out), "--measures", "cka"]) == 2
