"""CKA against the textbook HSIC formula, its invariances and the debiased estimator."""
import numpy as np
import pytest
import torch
import xarray as xr
from scipy.stats import ortho_group

from repscope.analyses import AnalysisError, cka, cka_matrix, compare, hsic
from test_analyses_data import mnist


def _hsic_textbook(k, l):
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def _cka_textbook(k, l):
    return _hsic_textbook(k, l) / np.sqrt(_hsic_textbook(k, k) * _hsic_textbook(l, l))


def _rbf_textbook(x, sigma2):
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-sq / (2 * sigma2))


def _sq(x):
    return ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)


@pytest.fixture(scope="module")
def reps(data_root):
    """Real images and two fixed random ReLU layers of them."""
    x, _ = mnist(data_root, 60)
    rng = np.random.default_rng(0)
    h1 = np.maximum(x @ rng.normal(size=(784, 40)) / 28, 0)
    h2 = np.maximum(h1 @ rng.normal(size=(40, 16)) / 6, 0)
    return x, h1, h2


def test_linear_cka_equals_textbook_hsic_and_feature_space_formula(reps):
    x, h1, _ = reps
    got = float(cka(x, h1))
    assert got == pytest.approx(_cka_textbook(x @ x.T, h1 @ h1.T), rel=1e-10)
    xc, yc = x - x.mean(0), h1 - h1.mean(0)
    feat = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert got == pytest.approx(feat, rel=1e-10)
    assert float(hsic(x, h1)) == pytest.approx(_hsic_textbook(x @ x.T, h1 @ h1.T), rel=1e-10)


def test_rbf_bandwidth_conventions_match_their_formulas(reps):
    x, h1, _ = reps
    sx, sy = _sq(x), _sq(h1)
    paper = _cka_textbook(_rbf_textbook(x, np.median(sx[sx > 0])), _rbf_textbook(h1, np.median(sy[sy > 0])))
    assert float(cka(x, h1, "rbf")) == pytest.approx(paper, rel=1e-8)
    t = 0.5  # Kornblith: threshold**2 * median over all n**2 entries (zero diagonal included)
    korn = _cka_textbook(_rbf_textbook(x, t ** 2 * np.median(sx)), _rbf_textbook(h1, t ** 2 * np.median(sy)))
    assert float(cka(x, h1, "rbf", bandwidth="kornblith", threshold=t)) == pytest.approx(korn, rel=1e-8)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True])
def test_identity_orthogonal_and_isotropic_scaling_invariance(reps, kernel, debiased):
    _, h1, h2 = reps
    q = ortho_group.rvs(h1.shape[1], random_state=1)
    kw = dict(kernel=kernel, debiased=debiased)
    assert float(cka(h1, h1, **kw)) == pytest.approx(1.0, abs=1e-12)
    base = float(cka(h1, h2, **kw))
    assert float(cka(h1 @ q * 3.7, h2, **kw)) == pytest.approx(base, rel=1e-9)
    assert float(cka(h1, h2 * 0.01, **kw)) == pytest.approx(base, rel=1e-9)
    assert 0 < base < 1


def test_debiased_estimator_is_unbiased_under_independence():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 12, 5))  # 400 draws of n=12 independent X, Y
    y = rng.normal(size=(400, 12, 5))
    biased = hsic(x, y, debiased=False).numpy()
    unbiased = hsic(x, y, debiased=True).numpy()
    sem = unbiased.std() / np.sqrt(len(unbiased))
    assert abs(unbiased.mean()) < 3 * sem
    assert biased.mean() > 10 * biased.std() / np.sqrt(len(biased))  # biased: clearly > 0
    # the unbiased estimator equals Song et al.'s (2012) closed form
    k, l = x[0] @ x[0].T, y[0] @ y[0].T
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one, n = np.ones(12), 12
    song = (np.trace(k @ l) + one @ k @ one * (one @ l @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))
    assert unbiased[0] == pytest.approx(song, rel=1e-10)


def test_minibatch_cka_sums_unbiased_hsic_over_batches(reps):
    _, h1, h2 = reps
    parts = [(hsic(h1[s:s + 20], h2[s:s + 20], debiased=True), hsic(h1[s:s + 20], h1[s:s + 20], debiased=True),
              hsic(h2[s:s + 20], h2[s:s + 20], debiased=True)) for s in range(0, 60, 20)]
    xy, xx, yy = (sum(float(p[i]) for p in parts) for i in range(3))
    assert float(cka(h1, h2, batch_size=20)) == pytest.approx(xy / np.sqrt(xx * yy), rel=1e-10)
    with pytest.raises(AnalysisError, match="multiple of batch_size"):
        cka(h1, h2, batch_size=7)


def test_cka_matrix_equals_pairwise_cka(reps):
    x, h1, h2 = reps
    m = cka_matrix([x, h1, h2])
    for i, a in enumerate([x, h1, h2]):
        for j, b in enumerate([x, h1, h2]):
            assert float(m[i, j]) == pytest.approx(float(cka(a, b)), rel=1e-10)
    stacked = torch.as_tensor(np.stack([h1[:, :16], h2]))
    assert cka_matrix(stacked, kernel="rbf", debiased=True).shape == (2, 2)


def test_clear_errors(reps):
    x, h1, _ = reps
    with pytest.raises(AnalysisError, match="at least 4 stimuli; got n=3"):
        cka(x[:3], h1[:3], debiased=True)
    bad = h1.copy()
    bad[2, 3] = np.nan
    with pytest.raises(AnalysisError, match="NaN"):
        cka(bad, x)
    with pytest.raises(AnalysisError, match="(?i)constant representation"):
        cka(np.ones((10, 4)), h1[:10])
    with pytest.raises(AnalysisError, match="(?i)constant representation"):
        cka(np.ones((10, 4)), h1[:10], "rbf")
    with pytest.raises(AnalysisError, match="Unknown kernel 'poly'"):
        cka(x, h1, "poly")


def test_labelled_compare_matches_array_cka(reps):
    _, h1, h2 = reps
    a = xr.DataArray(np.stack([h1, 2 * h1]), dims=("checkpoint", "stimulus", "unit_a"),
                     coords={"checkpoint": [0, 100]})
    b = xr.DataArray(h2, dims=("stimulus", "unit_b"))
    out = compare(a, b, "cka_rbf_debiased")
    assert out.dims == ("checkpoint",) and out.attrs["direction"] == "similarity"
    ref = float(cka(h1, h2, "rbf", debiased=True))
    np.testing.assert_allclose(out, [ref, ref], rtol=1e-9)
