"""Bad input to the measures: stimulus order and identity, non-finite values, too few
stimuli, constant representations. Each is aligned or refused with a clear error, never
answered with a number that cannot be stood behind (issues 10 and 13)."""
import numpy as np
import pytest
import xarray as xr

from repscope.analyses import AnalysisError, MEASURES, cka, cka_matrix, compare, rdm_dissimilarity, rdms
from repscope.analyses.pipeline import AnalysisConfig, analyse_maml, analyse_supervised
from test_analyses_data import make_record, make_supervised, mnist

OPTS = {"cka_linear_minibatch": {"batch_size": 8}}


@pytest.fixture(scope="module")
def pair(data_root):
    """Pixels and a random ReLU layer of 24 MNIST test images, labelled like a record."""
    x, labels = mnist(data_root, 24)
    rng = np.random.default_rng(3)
    h = np.maximum(x @ rng.normal(size=(784, 32)) / 28, 0)
    coords = {"stimulus": np.arange(24), "label": ("stimulus", labels),
              "image_id": ("stimulus", np.array([f"mnist/t10k/{i}" for i in range(24)], dtype=object))}
    return (xr.DataArray(x, dims=("stimulus", "unit_pixels"), coords=coords),
            xr.DataArray(h, dims=("stimulus", "unit_fc"), coords=coords))


@pytest.mark.parametrize("measure", sorted(MEASURES))
def test_a_permuted_but_labelled_input_gives_the_aligned_value(pair, measure):
    a, b = pair
    perm = np.random.default_rng(0).permutation(24)
    aligned = float(compare(a, b, measure, **OPTS.get(measure, {})))
    assert float(compare(a, b.isel(stimulus=perm), measure, **OPTS.get(measure, {}))) == pytest.approx(
        aligned, abs=1e-10)
    assert float(compare(a.isel(stimulus=perm), b, measure, **OPTS.get(measure, {}))) == pytest.approx(
        aligned, abs=1e-10)
    # the check has teeth: by position the permuted input gives another value
    assert abs(float(compare(a, b.drop_vars(["stimulus", "label", "image_id"]).isel(stimulus=perm)
                             .assign_coords(stimulus=np.arange(24)), measure, **OPTS.get(measure, {})))
               - aligned) > 1e-3


def test_permuted_rdms_are_aligned_before_the_second_order_comparison(pair):
    a, b = pair
    perm = np.random.default_rng(1).permutation(24)
    ra, rb = rdms(a), rdms(b)
    ref = float(rdm_dissimilarity(ra, rb))
    assert float(rdm_dissimilarity(ra, rdms(b.isel(stimulus=perm)))) == pytest.approx(ref, abs=1e-12)


def test_different_stimuli_are_refused(pair):
    a, b = pair
    shifted = b.assign_coords(stimulus=b["stimulus"].values + 100)
    with pytest.raises(AnalysisError, match=r"24 'stimulus' id\(s\) only in the first input .* only in the second"):
        compare(a, shifted, "cka_linear")
    with pytest.raises(AnalysisError, match="only in the first"):
        compare(a, b.isel(stimulus=slice(0, 20)), "rsa")
    with pytest.raises(AnalysisError, match="only in the first"):
        rdm_dissimilarity(rdms(a), rdms(shifted))
    other_images = b.assign_coords(image_id=("stimulus", b["image_id"].values[::-1]))
    with pytest.raises(AnalysisError, match="stimulus 0 has image_id 'mnist/t10k/0' in the first input but "
                                            "'mnist/t10k/23' in the second"):
        compare(a, other_images, "rsa")
    with pytest.raises(AnalysisError, match="only the first input has a 'stimulus' coordinate"):
        compare(a, b.drop_vars(["stimulus", "label", "image_id"]), "rsa")
    with pytest.raises(AnalysisError, match="repeats 'stimulus' ids"):
        compare(a, b.assign_coords(stimulus=np.r_[0, np.arange(23)]), "rsa")


@pytest.mark.parametrize("measure", ["rsa", "cka_linear", "cka_rbf_debiased"])
def test_inf_activations_are_an_error_naming_the_cells(pair, measure):
    a, b = pair
    x = xr.concat([b, b], xr.DataArray([0, 100], dims="checkpoint", name="checkpoint")).rename("encoder.conv2")
    x = x.copy()
    x[1, 3, 0] = np.inf
    with pytest.raises(AnalysisError, match=r"'encoder.conv2' has non-finite values in 1 cell\(s\): "
                                            r"checkpoint=100 \(Inf\)"):
        compare(x, a, measure)


def test_array_cka_refuses_inf_and_nan():
    x = np.random.default_rng(0).normal(size=(10, 4))
    bad = x.copy()
    bad[3, 1] = np.inf
    with pytest.raises(AnalysisError, match=r"batch index 0 \(Inf\)"):
        cka(bad, x)
    with pytest.raises(AnalysisError, match=r"batch index 1 \(partly NaN\)"):
        cka_matrix(np.stack([x, np.where(bad == np.inf, np.nan, bad)]))


@pytest.mark.parametrize("measure,minimum", [("rsa", 3), ("cka_linear", 3), ("cka_rbf", 3),
                                             ("cka_linear_debiased", 4), ("cka_rbf_debiased", 4)])
def test_too_few_stimuli_are_refused_with_the_minimum(pair, measure, minimum):
    a, b = pair
    for n in range(1, minimum):
        with pytest.raises(AnalysisError, match=f"{measure} needs at least {minimum} stimuli; got n={n}"):
            compare(a.isel(stimulus=slice(0, n)), b.isel(stimulus=slice(0, n)), measure)
    assert np.isfinite(float(compare(a.isel(stimulus=slice(0, minimum)), b.isel(stimulus=slice(0, minimum)),
                                     measure)))


def test_array_functions_refuse_too_few_stimuli():
    x = np.random.default_rng(0).normal(size=(2, 5))
    with pytest.raises(AnalysisError, match="CKA needs at least 3 stimuli; got n=2"):
        cka(x, x[:, :3])
    with pytest.raises(AnalysisError, match="An RDM needs at least 2 stimuli; got n=1"):
        rdms(xr.DataArray(x[:1], dims=("stimulus", "unit_fc")))
    with pytest.raises(AnalysisError, match="1 - Spearman between RDMs needs at least 3 stimuli; got n=2"):
        r = rdms(xr.DataArray(x, dims=("stimulus", "unit_fc")))
        rdm_dissimilarity(r, r)


@pytest.mark.parametrize("value", [0.1, 3.7, 1e5])
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_a_constant_representation_gives_one_error_everywhere(pair, kernel, value):
    """cka(), cka_matrix() and compare() share one normalisation, tolerance and error.

    These values are not powers of two: the centred Gram (and the RBF distances) of a
    constant representation are rounding noise, not exactly zero, and must still be
    refused.
    """
    _, b = pair
    const = xr.full_like(b, value)
    measure = f"cka_{kernel}"
    msgs = []
    for call in (lambda: cka(const.values, b.values, kernel), lambda: cka_matrix([b.values, const.values], kernel=kernel),
                 lambda: compare(const, b, measure), lambda: compare(b, const, measure)):
        with pytest.raises(AnalysisError, match="Constant representation") as err:
            call()
        msgs.append(str(err.value).split(": ", 1)[-1] if "on " in str(err.value) else str(err.value))
    assert len({m.split("every stimulus")[1] for m in msgs}) == 1


def test_a_diverged_record_is_refused_before_anything_is_written(data_root, tmp_path):
    ds = make_record(data_root, checkpoints=(0, 1000, 2000), n_tasks=2, inner_steps=(0, 1), n_stimuli=10)
    for layer in ("encoder.conv1", "encoder.conv2", "head"):
        ds[layer][2] = np.nan  # training diverged before checkpoint 2000: all-NaN activations
    with pytest.raises(AnalysisError, match=r"'encoder.conv1' has non-finite values in 4 cell\(s\): "
                                            r"checkpoint=2000, task=0, inner_step=0 \(all NaN\)"):
        analyse_maml(ds, AnalysisConfig(measures=("rsa",), formats=("png",)), tmp_path / "out")
    ds["head"][0, 1, 1, 3, 2] = np.nan
    with pytest.raises(AnalysisError, match=r"checkpoint=0, task=1, inner_step=1 \(partly NaN\)"):
        analyse_maml(ds.isel(checkpoint=[0, 1]), AnalysisConfig(measures=("rsa",), formats=("png",)),
                     tmp_path / "out")
    sup = make_supervised(data_root, steps=(0, 5), n_stimuli=10)
    sup["head"][1, 0, 0, 0, 0] = np.inf
    with pytest.raises(AnalysisError, match=r"checkpoint=5, task=0, inner_step=0 \(Inf\)"):
        analyse_supervised(sup, AnalysisConfig(measures=("rsa",), formats=("png",)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_bootstrap_too_small_for_its_ci_is_refused():
    from repscope.analyses import bootstrap_ci

    da = xr.DataArray(np.arange(10.0), dims="task")
    for n_boot in (0, 1, 39, 2.5):
        with pytest.raises(AnalysisError, match="at least 40 resamples"):
            bootstrap_ci(da, n_boot=n_boot)
    ci = bootstrap_ci(da, n_boot=40)
    assert float(ci["lower"]) < float(ci["upper"])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_constant_arrays_are_refused_whatever_the_rounding_of_their_distances(kernel, dtype):
    import torch

    y = np.random.default_rng(0).normal(size=(20, 8))
    for value in (0.1, 3.7, 1e5):
        with pytest.raises(AnalysisError, match="Constant representation"):
            cka(np.full((20, 8), value), y, kernel, dtype=getattr(torch, dtype))
    # a large offset with small, real variation is not constant
    x = 1 + 1e-3 * np.random.default_rng(1).normal(size=(20, 8))
    assert float(cka(x, y, kernel, dtype=getattr(torch, dtype))) == pytest.approx(float(cka(x, y, kernel)), abs=1e-4)
