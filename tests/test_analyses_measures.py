"""Measure registry, error bars, MDS modes and findings against references."""

import repscope.analyses.measures

import numpy as np
import pytest
import xarray as xr
from scipy.stats import sem
from sklearn.manifold import MDS

from repscope.analyses import AnalysisError, MEASURES, bootstrap_ci, compare, compare_all, get_measure, mean_band
from repscope.analyses.mds import _mds, mds_embedding
from test_analyses_data import mnist


@pytest.fixture(scope="module")
def layers(data_root):
    x, labels = mnist(data_root, 24)
    rng = np.random.default_rng(3)
    h = np.maximum(x @ rng.normal(size=(784, 32)) / 28, 0)
    coords = {"stimulus": np.arange(24), "label": ("stimulus", labels)}
    a = xr.DataArray(x, dims=("stimulus", "unit_pixels"), coords=coords)
    b = xr.DataArray(h, dims=("stimulus", "unit_fc"), coords=coords)
    return a, b


def test_unknown_measure_lists_valid_names_and_close_matches():
    with pytest.raises(AnalysisError) as err:
        get_measure("cka_lin")
    msg = str(err.value)
    assert "Unknown measure 'cka_lin'" in msg and str(sorted(MEASURES)) in msg and "cka_linear" in msg


def test_options_are_checked(layers):
    a, b = layers
    with pytest.raises(AnalysisError, match=r"unknown option\(s\) \['kernel'\]"):
        compare(a, b, "rsa", kernel="rbf")
    with pytest.raises(AnalysisError, match="Unknown RDM method"):
        compare(a, b, "rsa", rdm_method="manhattan")


def test_every_registered_measure_runs_and_has_a_direction(layers):
    a, b = layers
    for name, m in MEASURES.items():
        opts = {"batch_size": 8} if "minibatch" in name else {}
        v = float(compare(a, b, name, **opts))
        same = float(compare(a, a, name, **opts))
        if m.direction == "similarity":
            assert same == pytest.approx(1.0) and v < 1
        else:
            assert same == pytest.approx(0.0, abs=1e-12) and v > 0


def test_compare_all_matches_pairwise_compare(layers):
    a, b = layers
    stack = xr.concat([b, 2 * b + 1, np.sqrt(b)], dim=xr.DataArray([0, 1, 2], dims="variant", name="variant"))
    for name in ("rsa", "cka_rbf"):
        mat = compare_all(stack, name)
        for i in range(3):
            for j in range(3):
                ref = float(compare(stack.isel(variant=i), stack.isel(variant=j), name))
                assert float(mat[i, j]) == pytest.approx(ref, abs=1e-10)


def test_mean_band_is_mean_plus_minus_196_sem():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(3, 10))
    band = mean_band(xr.DataArray(v, dims=("checkpoint", "task")))
    np.testing.assert_allclose(band["sem"], sem(v, axis=1))
    np.testing.assert_allclose(band["upper"] - band["mean"], 1.96 * sem(v, axis=1))


def test_bootstrap_ci_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = bootstrap_ci(xr.DataArray(rng.normal(1, 1, 10), dims="task"))
    large = bootstrap_ci(xr.DataArray(rng.normal(1, 1, 1000), dims="task"))
    assert small["lower"] < 1 < small["upper"] or abs(float(small["mean"]) - 1) > 0.3
    assert float(large["upper"] - large["lower"]) < float(small["upper"] - small["lower"]) / 5
    # 95% percentile CI of the mean of 1000 N(1, 1) draws: about +- 1.96 / sqrt(1000)
    assert float(large["upper"] - large["lower"]) == pytest.approx(2 * 1.96 / np.sqrt(1000), rel=0.15)


@pytest.mark.filterwarnings("ignore:The provided input is a square matrix")
def test_paper_mds_mode_is_mds_on_min_max_scaled_rows():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(10, 3))
    d = np.linalg.norm(pts[:, None] - pts[None], axis=2)
    rdm = xr.DataArray(d, dims=("condition", "condition_b"))
    got = mds_embedding(rdm, "paper").values
    scaled = (d - d.min(0)) / (d.max(0) - d.min(0))
    ref = _mds(False, 0).fit_transform(scaled)
    np.testing.assert_allclose(got, ref)
    assert isinstance(_mds(True, 0), MDS)
    with pytest.raises(AnalysisError, match="Unknown MDS mode"):
        mds_embedding(rdm, "tsne")


def test_large_inputs_are_reduced_a_slice_at_a_time(layers, monkeypatch):
    a, b = layers
    rng = np.random.default_rng(5)
    x = xr.concat([b + rng.normal(0, 0.1, b.shape) for _ in range(7)], "checkpoint").assign_coords(
        checkpoint=np.arange(7) * 100)
    full = {m: compare(x, b, m) for m in ("rsa", "cka_linear")}
    monkeypatch.setattr(repscope.analyses.measures, "_CHUNK_BYTES", 2 * b.size * 8)
    calls = []
    real = repscope.analyses.measures.rdms
    monkeypatch.setattr(repscope.analyses.measures, "rdms", lambda da, m: calls.append(da.sizes) or real(da, m))
    for m, ref in full.items():
        xr.testing.assert_allclose(compare(x, b, m), ref)
    assert len(calls) == 5  # 4 slices of x (2 checkpoints each at most) + b


def test_a_registry_entry_carries_its_behaviour(layers, monkeypatch):
    """A new entry needs no dispatch code: compare and compare_all run what it holds."""
    import dataclasses

    a, b = layers
    rbf = MEASURES["cka_rbf"]
    assert rbf.min_stimuli == 3 and MEASURES["cka_rbf_debiased"].min_stimuli == 4 and rbf.core == "gram_entry"
    entry = dataclasses.replace(rbf, name="cka_rbf_kornblith", defaults={**rbf.defaults, "bandwidth": "kornblith"})
    monkeypatch.setitem(MEASURES, entry.name, entry)
    assert float(compare(a, b, entry.name)) == pytest.approx(float(compare(a, b, "cka_rbf", bandwidth="kornblith")))
    stack = xr.concat([b, 2 * b + 1], dim="variant")
    np.testing.assert_allclose(compare_all(stack, entry.name), compare_all(stack, "cka_rbf", bandwidth="kornblith"))
