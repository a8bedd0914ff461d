"""SVCCA, PWCCA and Procrustes against their reference code, their invariances and bad input.

References (copied into tests/reference/, see each file's header):

* google/svcca ``cca_core.get_cca_similarity`` and ``pwcca.compute_pwcca``. Known bugs
  there, and what we take:
  - ``get_cca_similarity(...)["mean"]`` averages only the leading coefficients whose sum
    reaches ``threshold`` (98 %) of the total; SVCCA here is the mean of all of them,
    ``np.mean(result["cca_coef1"])``, as the svcca tutorials report it.
  - ``robust_cca_similarity`` passes ``threshold`` and ``compute_dirns`` into the
    ``epsilon`` and ``threshold`` positions of ``get_cca_similarity``; not used.
  - ``compute_pwcca`` projects the *first* input's activations in its branch for a second
    input with fewer neurons (an IndexError when the widths differ: google/svcca pull
    request 9); we project the second's, i.e. ``compute_pwcca(b, a)``.
  - ``compute_pwcca`` adds the unit means back and projects uncentred activations; we
    centre, so we equal it on centred activations (and differ on uncentred ones).
  - anatome's PWCCA orthonormalises the CCA coefficient matrix instead of the projected
    activations (anatome issue 30); we follow pwcca.py's ``qr(dirns.T)``.
* netrep ``LinearMetric(alpha=1)`` with its default angular score (centred, zero-padded).
"""
import numpy as np
import pytest
import torch
import xarray as xr
from scipy.stats import ortho_group

from reference import cca_core, pwcca
from reference.netrep_linear import LinearMetric
from repscope.analyses import AnalysisError, compare, compare_all
from repscope.analyses.cca import max_dims
from repscope.analyses.procrustes import procrustes

torch.set_num_threads(1)
TOL = 1e-6


def _da(x, unit="unit_a"):
    return xr.DataArray(x, dims=("stimulus", unit))


def _value(x, y, measure, **opts):
    return float(compare(_da(x), _da(y, "unit_b"), measure, **opts))


def _related(rng, n, da, db, noise=1.0):
    """Two representations sharing a few latent directions, with unit means."""
    z = rng.normal(size=(n, 6))
    x = z @ rng.normal(size=(6, da)) + noise * rng.normal(size=(n, da)) + rng.normal(size=da)
    y = np.tanh(z @ rng.normal(size=(6, db))) + noise * rng.normal(size=(n, db)) + 3
    return x, y


def _svd_step(x, k):
    """The svcca tutorials' SVD step: the top-k principal component scores, (k, n)."""
    acts = (x - x.mean(0)).T
    _, s, v = np.linalg.svd(acts, full_matrices=False)
    return np.dot(s[:k] * np.eye(k), v[:k])


def _kept(x, variance, n):
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    share = np.cumsum(s ** 2) / np.sum(s ** 2)
    return min(int(np.searchsorted(share, variance - 1e-12) + 1), max_dims(n))


@pytest.fixture(scope="module")
def wide_n():
    return _related(np.random.default_rng(0), 200, 30, 40)


# ---- reference equality -------------------------------------------------------------

def test_cca_without_reduction_equals_get_cca_similarity(wide_n):
    x, y = wide_n
    ref = cca_core.get_cca_similarity(x.T, y.T, epsilon=0.0, verbose=False)
    assert _value(x, y, "svcca", variance=None) == pytest.approx(np.mean(ref["cca_coef1"]), abs=TOL)
    # the reference's "mean" stops at 98 % of the coefficient sum: another number
    assert abs(ref["mean"][0] - np.mean(ref["cca_coef1"])) > 1e-3


@pytest.mark.parametrize("n,d", [(200, 30), (20, 64)])
def test_svcca_equals_the_tutorials_svd_step_then_get_cca_similarity(n, d):
    x, y = _related(np.random.default_rng(1), n, d, d + 7)
    for k in (3, 8):
        ref = cca_core.get_cca_similarity(_svd_step(x, k), _svd_step(y, k), epsilon=0.0, verbose=False)
        assert _value(x, y, "svcca", dims=k) == pytest.approx(np.mean(ref["cca_coef1"]), abs=TOL)
    ka, kb = _kept(x, 0.99, n), _kept(y, 0.99, n)
    ref = cca_core.get_cca_similarity(_svd_step(x, ka), _svd_step(y, kb), epsilon=0.0, verbose=False)
    assert _value(x, y, "svcca") == pytest.approx(np.mean(ref["cca_coef1"]), abs=TOL)


def test_pwcca_equals_compute_pwcca_on_centred_units(wide_n):
    x, y = wide_n
    xc, yc = x - x.mean(0), y - y.mean(0)
    ref = pwcca.compute_pwcca(xc.T, yc.T)[0]  # first input has fewer units: its branch
    assert _value(x, y, "pwcca", variance=None) == pytest.approx(ref, abs=TOL)
    # second input narrower: pwcca.py's branch is broken (IndexError), so the reference
    # is computed with the narrower one first; the value weights the narrower one
    assert _value(y, x, "pwcca", variance=None) == pytest.approx(ref, abs=TOL)
    with pytest.raises(IndexError):
        pwcca.compute_pwcca(yc.T, xc.T)
    # equal widths: the first input is weighted
    same = pwcca.compute_pwcca(xc.T, yc[:, :30].T)[0]
    assert _value(x, y[:, :30], "pwcca", variance=None) == pytest.approx(same, abs=TOL)
    # pwcca.py on uncentred activations differs from its own value on centred ones
    assert abs(pwcca.compute_pwcca(x.T, y.T)[0] - ref) > 1e-4


@pytest.mark.parametrize("n,d", [(200, 30), (20, 64)])
def test_pwcca_after_the_svd_step_equals_compute_pwcca_on_the_scores(n, d):
    x, y = _related(np.random.default_rng(2), n, d, d + 7)
    ka, kb = _kept(x, 0.99, n), _kept(y, 0.99, n)
    sa, sb = _svd_step(x, ka), _svd_step(y, kb)
    ref = pwcca.compute_pwcca(sa, sb)[0] if ka <= kb else pwcca.compute_pwcca(sb, sa)[0]
    assert _value(x, y, "pwcca") == pytest.approx(ref, abs=TOL)
    ref5 = pwcca.compute_pwcca(_svd_step(x, 5), _svd_step(y, 5))[0]
    assert _value(x, y, "pwcca", dims=5) == pytest.approx(ref5, abs=TOL)


@pytest.mark.parametrize("n,da,db", [(200, 30, 40), (20, 64, 100), (20, 64, 64)])
def test_procrustes_equals_netrep_linear_metric_alpha_1(n, da, db):
    x, y = _related(np.random.default_rng(3), n, da, db)
    ref = LinearMetric(alpha=1.0).fit_score(x, y)
    assert _value(x, y, "procrustes") == pytest.approx(ref, abs=TOL)
    assert float(procrustes(x, y)) == pytest.approx(ref, abs=TOL)


# ---- invariances ------------------------------------------------------------------

MEASURES3 = ("svcca", "pwcca", "procrustes")


@pytest.mark.parametrize("n,d", [(40, 12), (20, 64)])
@pytest.mark.parametrize("measure", MEASURES3)
def test_rotation_scaling_and_unit_permutation_change_nothing(n, d, measure):
    rng = np.random.default_rng(4)
    x, y = _related(rng, n, d, d + 3)
    ref = _value(x, y, measure)
    rot = ortho_group.rvs(d, random_state=5)
    assert _value(3.7 * x @ rot, y, measure) == pytest.approx(ref, abs=1e-8)
    assert _value(x, 0.2 * y[:, rng.permutation(d + 3)], measure) == pytest.approx(ref, abs=1e-8)


def test_cca_without_reduction_is_unchanged_by_any_invertible_map_procrustes_is_not(wide_n):
    x, y = wide_n
    m = np.random.default_rng(6).normal(size=(30, 30)) + 3 * np.eye(30)
    assert np.linalg.cond(m) < 1e3
    assert _value(x @ m, y, "svcca", variance=None) == pytest.approx(_value(x, y, "svcca", variance=None), abs=1e-8)
    assert abs(_value(x @ m, y, "procrustes") - _value(x, y, "procrustes")) > 1e-2


def test_what_is_not_invariant_is_documented(wide_n):
    """Kornblith et al. (2019), Table 1: PWCCA on the units changes under rotation, and an
    SVD step that keeps a share of the variance changes under a general linear map."""
    x, y = wide_n
    rot = ortho_group.rvs(30, random_state=7)
    assert abs(_value(x @ rot, y, "pwcca", variance=None) - _value(x, y, "pwcca", variance=None)) > 1e-4
    stretch = np.diag(np.linspace(0.05, 5, 30))
    assert abs(_value(x @ stretch, y, "svcca", variance=0.9) - _value(x, y, "svcca", variance=0.9)) > 1e-3


def test_procrustes_obeys_the_triangle_inequality():
    rng = np.random.default_rng(8)
    base = rng.normal(size=(20, 10))
    reps = [base @ rng.normal(size=(10, 16)) * s + rng.normal(size=(20, 16)) * s2
            for s, s2 in zip(rng.uniform(0.1, 3, 14), rng.uniform(0, 3, 14))]
    stack = xr.DataArray(np.stack(reps), dims=("rep", "stimulus", "unit_a"))
    dist = compare_all(stack, "procrustes").values
    tri = dist[:, None, :] - dist[:, :, None] - dist[None, :, :]  # d(i,k) - d(i,j) - d(j,k)
    assert tri.max() <= 1e-10 and dist.max() <= np.pi / 2 and dist.min() >= 0
    assert np.allclose(dist, dist.T, atol=1e-12)


@pytest.mark.parametrize("n,d", [(40, 12), (20, 64)])
def test_identical_inputs_give_1_or_0(n, d):
    x = np.random.default_rng(9).normal(size=(n, d))
    assert _value(x, x, "svcca") == pytest.approx(1.0, abs=1e-12)
    assert _value(x, x, "pwcca") == pytest.approx(1.0, abs=1e-12)
    assert _value(x, x, "procrustes") == pytest.approx(0.0, abs=1e-12)


def test_unrelated_wide_representations_are_not_called_similar():
    """n <= d: plain CCA would say 1; the reduction keeps the value at chance level."""
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(20, 64)), rng.normal(size=(20, 100))
    assert _value(x, y, "svcca") < 0.8 and _value(x, y, "pwcca") < 0.8
    assert _value(x, y, "svcca", dims=3) < 0.6


def test_compare_all_matches_compare_including_the_asymmetric_pwcca():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(3, 25, 40)) * np.array([1.0, 2.0, 0.5])[:, None, None]
    x[1] += np.maximum(x[0], 0)
    stack = xr.DataArray(x, dims=("variant", "stimulus", "unit_a"), coords={"variant": [0, 1, 2]})
    for m in MEASURES3:
        mat = compare_all(stack, m).values
        for i in range(3):
            for j in range(3):
                assert mat[i, j] == pytest.approx(float(compare(stack.isel(variant=i), stack.isel(variant=j), m)),
                                                  abs=1e-12)


# ---- bad input ----------------------------------------------------------------------

@pytest.mark.parametrize("measure", MEASURES3)
def test_too_few_stimuli_are_refused(measure):
    x = np.random.default_rng(12).normal(size=(2, 5))
    with pytest.raises(AnalysisError, match=rf"{measure} needs at least 3 stimuli; got n=2"):
        _value(x, x, measure)


@pytest.mark.parametrize("measure", ("svcca", "pwcca"))
def test_n_at_most_d_without_reduction_is_refused_with_what_to_pass(measure):
    x = np.random.default_rng(13).normal(size=(20, 64))
    with pytest.raises(AnalysisError, match=rf"{measure} without reduction .* n=20 stimuli and d=64 units.*"
                                            r"pass variance=0.99 or dims=k with k <= 9"):
        _value(x, x, measure, variance=None)
    with pytest.raises(AnalysisError, match=rf"{measure}: dims=12 is not allowed on n=20 stimuli.* 9"):
        _value(x, x, measure, dims=12)
    with pytest.raises(AnalysisError, match="variance=1.5"):
        _value(x, x, measure, variance=1.5)


def test_rank_deficient_units_without_reduction_are_refused():
    x = np.random.default_rng(14).normal(size=(40, 6))
    x[:, 5] = x[:, 0] + x[:, 1]
    with pytest.raises(AnalysisError, match="rank 5 < d=6"):
        _value(x, x, "pwcca", variance=None)
    with pytest.raises(AnalysisError, match="dims=6 but .* rank 5"):
        _value(x, x, "svcca", dims=6)


@pytest.mark.parametrize("measure", MEASURES3)
def test_nan_inf_and_constant_representations_are_refused(measure):
    x = np.random.default_rng(15).normal(size=(20, 8))
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(AnalysisError, match=r"non-finite values .*\(partly NaN\)"):
        _value(bad, x, measure)
    bad[3, 2] = np.inf
    with pytest.raises(AnalysisError, match=r"non-finite values .*\(Inf\)"):
        _value(x, bad, measure)
    with pytest.raises(AnalysisError, match="constant representation"):
        _value(np.ones((20, 8)), x, measure)
