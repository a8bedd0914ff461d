"""RSA against references: scipy pdist RDMs and 1 - scipy Spearman, on real MNIST images."""
import numpy as np
import pytest
import xarray as xr
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr

from repscope.analyses import AnalysisError, from_rsatoolbox, rdm_dissimilarity, rdms, to_rsatoolbox
from repscope.analyses.rdms import rdm_matrix
from test_analyses_data import make_record, mnist


@pytest.fixture(scope="module")
def record(data_root):
    return make_record(data_root, checkpoints=(0, 1000), n_tasks=3, inner_steps=(0, 1, 5))


def _reference(x, method):
    if method == "euclidean":  # rsatoolbox: squared distance / n units
        return pdist(x, "sqeuclidean") / x.shape[1]
    return pdist(x, method)


@pytest.mark.parametrize("method", ["euclidean", "correlation", "cosine"])
def test_rdms_equal_scipy_pdist_on_every_combination(record, method):
    layer = record["encoder.conv2"]
    r = rdms(layer, method)
    assert r.dims == ("checkpoint", "task", "inner_step", "pair")
    for c in layer["checkpoint"].values:
        for t in layer["task"].values:
            for s in layer["inner_step"].values:
                x = layer.sel(checkpoint=c, task=t, inner_step=s).values
                np.testing.assert_allclose(r.sel(checkpoint=c, task=t, inner_step=s), _reference(x, method),
                                           rtol=1e-10, atol=1e-12)


def test_rdms_of_pixels_equal_scipy(data_root):
    x, labels = mnist(data_root, 30)
    da = xr.DataArray(x, dims=("stimulus", "unit_pixels"),
                      coords={"stimulus": np.arange(30), "label": ("stimulus", labels)})
    r = rdms(da, "euclidean")
    np.testing.assert_allclose(r, pdist(x, "sqeuclidean") / 784, rtol=1e-10)
    i, j = np.triu_indices(30, 1)
    np.testing.assert_array_equal(r["label_i"], labels[i])
    np.testing.assert_array_equal(r["label_j"], labels[j])


def test_second_order_equals_one_minus_scipy_spearman():
    rng = np.random.default_rng(0)
    a = xr.DataArray(rng.normal(size=(5, 12, 7)), dims=("task", "stimulus", "unit_a"))
    b = xr.DataArray(rng.normal(size=(5, 12, 9)), dims=("task", "stimulus", "unit_b"))
    ra, rb = rdms(a, "euclidean"), rdms(b, "euclidean")
    got = rdm_dissimilarity(ra, rb)
    want = [1 - spearmanr(ra[k], rb[k]).statistic for k in range(5)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    m = rdm_matrix(xr.concat([ra.assign_coords(task=np.arange(5)), rb.assign_coords(task=np.arange(5, 10))], "task"))
    va = np.concatenate([ra.values, rb.values])
    want_m = 1 - spearmanr(va.T).statistic
    np.testing.assert_allclose(m, want_m, atol=1e-12)


def test_second_order_broadcasts_step0_against_tasks(record):
    r = rdms(record["head"])
    d = rdm_dissimilarity(r.sel(inner_step=0).isel(task=0, drop=True), r.sel(inner_step=5))
    assert d.dims == ("checkpoint", "task")
    ref = 1 - spearmanr(r.sel(inner_step=0, checkpoint=1000, task=0),
                        r.sel(inner_step=5, checkpoint=1000, task=2)).statistic
    assert float(d.sel(checkpoint=1000, task=2)) == pytest.approx(ref, abs=1e-12)


def test_rsatoolbox_export_round_trips_descriptors(record):
    r = rdms(record["encoder.conv1"], "correlation")
    obj = to_rsatoolbox(r)
    assert obj.n_rdm == 2 * 3 * 3 and obj.n_cond == record.sizes["stimulus"]
    assert obj.rdm_descriptors["checkpoint"][:4] == [0, 0, 0, 0]
    assert obj.rdm_descriptors["inner_step"][:3] == [0, 1, 5]
    np.testing.assert_array_equal(obj.pattern_descriptors["label"], record["label"].values)
    np.testing.assert_array_equal(obj.pattern_descriptors["image_id"], record["image_id"].values)
    back = from_rsatoolbox(obj, ["checkpoint", "task", "inner_step"])
    xr.testing.assert_allclose(back.drop_vars([c for c in back.coords if c.endswith(("_i", "_j"))]),
                               r.drop_vars([c for c in r.coords if c.endswith(("_i", "_j"))]))
    for c in ("label_i", "label_j", "image_id_i", "stimulus_j"):
        np.testing.assert_array_equal(back[c], r[c])


def test_missing_combinations_give_nan_and_partial_nan_is_an_error(record):
    layer = record["head"].copy()
    layer[0, 1, 2] = np.nan
    r = rdms(layer)
    assert np.isnan(r[0, 1, 2]).all() and not np.isnan(r[0, 1, 1]).any()
    layer[0, 0, 0, 3, 0] = np.nan
    with pytest.raises(AnalysisError, match=r"'head' .* checkpoint=0, task=0, inner_step=0 \(partly NaN\)"):
        rdms(layer)


def test_unknown_method_and_mismatched_inputs_raise(record):
    with pytest.raises(AnalysisError, match=r"Unknown RDM method 'manhattan'. Expected one of"):
        rdms(record["head"], "manhattan")
    r = rdms(record["head"])
    with pytest.raises(AnalysisError, match="identical"):
        rdm_dissimilarity(r.sel(checkpoint=[0]), r.sel(checkpoint=[1000]))


def test_exported_rdms_work_with_rsatoolbox_selection_and_comparison(record):
    import rsatoolbox

    r = rdms(record["encoder.conv2"], "euclidean")
    obj = to_rsatoolbox(r)
    task1 = obj.subset("task", 1)
    assert task1.n_rdm == 2 * 3 and set(task1.rdm_descriptors["task"]) == {1}
    sims = rsatoolbox.rdm.compare(task1, task1, method="spearman")
    ours = rdm_matrix(r.sel(task=[1]))
    np.testing.assert_allclose(1 - sims, ours.values, atol=1e-12)
    obj.sort_by(label="alpha")  # in place; the pattern descriptors travel with the RDMs
    assert list(obj.pattern_descriptors["label"]) == sorted(record["label"].values.tolist())
