"""Canonical correlation analysis (CCA) measures: SVCCA and PWCCA, batched in torch.

Both measures reduce each representation (stimulus x unit) once to an orthonormal basis
of the subspace they compare (:func:`cca_features`), then compare pairs of bases: the
canonical correlations of two representations are the singular values of ``Qa.T @ Qb``
(``Qa``, ``Qb`` orthonormal bases of the centred column spaces).

The reduction, and why it is needed
-----------------------------------
CCA finds, in two subspaces of the ``n - 1``-dimensional space of centred responses
over ``n`` stimuli, the pairs of directions that correlate best. Two subspaces of
dimensions ``ka`` and ``kb`` always share at least ``ka + kb - (n - 1)`` directions, so
that many canonical correlations are 1 whatever the data. With 20 stimuli and 64-1600
units every layer spans the whole space, and plain CCA says 1 for any two layers. So
each representation is first reduced by SVD (after centring each unit) to its leading
principal components:

``variance`` (default 0.99)
    keep the fewest components whose share of the variance reaches ``variance``,
    and at most ``(n - 1) // 2`` of them, so that ``ka + kb <= n - 1`` and no canonical
    correlation is 1 by construction (the cap is what decides on few stimuli: note the
    kept count when you quote a value);
``dims`` (default None)
    keep exactly this many leading components instead (at most ``(n - 1) // 2`` and at
    most the representation's rank, else an error);
``variance=None`` and ``dims=None``
    no reduction: the units themselves (plain CCA / Morcos et al.'s PWCCA on the
    units), allowed only for a full-rank representation with ``d <= (n - 1) // 2``
    units; otherwise an error naming the measure, ``n``, ``d`` and what to pass.

What the values mean, and where they follow the authors' code
-------------------------------------------------------------
``svcca``
    The mean of all ``min(ka, kb)`` canonical correlations, as
    ``np.mean(get_cca_similarity(...)["cca_coef1"])`` in google/svcca's tutorials after
    their SVD step. (Its ``"mean"`` entry averages only the leading coefficients whose
    sum reaches 98 % of the total, a different number; we do not take it.)
``pwcca``
    The projection-weighted mean of Morcos et al. (2018), computed as google/svcca's
    ``pwcca.compute_pwcca`` does: on the representation with fewer kept dims (the first
    on a tie), the directions ``X u`` (``u`` the left singular vectors of
    ``Sxx^-1/2 Sxy Syy^-1/2``) are orthonormalised (QR) and each canonical correlation
    is weighted by the summed absolute projection of that representation's units
    (principal components after a reduction) on its direction. Unlike pwcca.py we
    centre the units before projecting (pwcca.py adds the unit means back and projects
    the raw activations, so its value changes when a constant is added to a unit), and
    when the second representation has fewer dims we project the second's units
    (pwcca.py's branch projects the first's: an IndexError or a wrong value, google/svcca
    pull request 9). PWCCA is not symmetric, and, on the units themselves
    (``variance=None``), not invariant to rotations of the units; after a reduction the
    "units" are principal components and it is.

Both are similarities in [0, 1]; 1 for identical inputs. CCA values are unchanged by
any invertible linear map of the units when nothing is reduced; the SVD step keeps
them unchanged by rotations, permutations and isotropic scaling of the units only.
"""
from __future__ import annotations

import numpy as np
import torch

from .cka import _as_tensor
from .dims import require_stimuli
from .errors import AnalysisError

__all__ = ["MIN_STIMULI", "max_dims", "feature_width", "cca_features", "kept_dims", "svcca_pairs", "pwcca_pairs",
           "pairs_matrix", "canonical_correlations"]

MIN_STIMULI = 3  # (n - 1) // 2 >= 1 kept dim


def max_dims(n: int) -> int:
    """The most dims a representation of ``n`` stimuli keeps: ``(n - 1) // 2``.

    Examples
    --------
    >>> max_dims(20)
    9
    """
    return (n - 1) // 2


def feature_width(n: int) -> int:
    """Length of one feature vector: the basis (n x h) then the units' coordinates (h x h).

    Examples
    --------
    >>> feature_width(20)  # h = 9: 20 * 9 + 9 * 9
    261
    """
    h = max_dims(n)
    return n * h + h * h


def _chosen_dims(s: torch.Tensor, rank: torch.Tensor, variance, dims, n: int, d: int, what: str) -> torch.Tensor:
    """The number of components each representation keeps (see the module docstring)."""
    h = max_dims(n)
    if dims is not None:
        if not isinstance(dims, (int, np.integer)) or isinstance(dims, bool) or not 1 <= dims <= h:
            raise AnalysisError(
                f"{what}: dims={dims!r} is not allowed on n={n} stimuli: pass an integer from 1 to "
                f"(n - 1) // 2 = {h} (two subspaces of more than that share directions whatever the data)")
        low = torch.nonzero(rank < dims).flatten().tolist()
        if low:
            raise AnalysisError(
                f"{what}: dims={dims} but the representation at batch index {low[:10]} has rank "
                f"{int(rank[low[0]])} (n={n}, d={d}); pass a smaller dims or variance=0.99")
        return torch.full_like(rank, dims)
    if variance is None:
        if d > h:
            raise AnalysisError(
                f"{what} without reduction (variance=None, dims=None) on n={n} stimuli and d={d} units: "
                f"CCA on d > (n - 1) // 2 = {h} units is degenerate (two such subspaces share at least "
                f"d_a + d_b - (n - 1) directions, so canonical correlations near 1 reflect only n <= d); "
                f"pass variance=0.99 or dims=k with k <= {h} (SVD first), or use more stimuli")
        low = torch.nonzero(rank < d).flatten().tolist()
        if low:
            raise AnalysisError(
                f"{what} without reduction needs full-rank units; the representation at batch index "
                f"{low[:10]} has rank {int(rank[low[0]])} < d={d} (constant or duplicate units); "
                f"pass variance=0.99 or dims=k with k <= {min(h, int(rank[low[0]]))}")
        return torch.full_like(rank, d)
    if not isinstance(variance, (float, int)) or isinstance(variance, bool) or not 0 < variance <= 1:
        raise AnalysisError(f"{what}: variance={variance!r}; expected a share in (0, 1] or None")
    share = torch.cumsum(s ** 2, dim=1) / (s ** 2).sum(1, keepdim=True)
    need = (share < variance - 1e-12).sum(1) + 1  # fewest leading components reaching the share
    return torch.minimum(torch.minimum(need, rank), torch.full_like(need, h))


def cca_features(x, *, variance: float | None = 0.99, dims: int | None = None, device=None,
                 dtype=torch.float64, what: str = "CCA") -> torch.Tensor:
    """Per-representation CCA features: a zero-padded orthonormal basis and coordinates.

    Parameters
    ----------
    x : array_like or torch.Tensor
        Shape (n, d) or (batch, n, d): n stimuli, d units.
    variance, dims
        The reduction (see the module docstring).
    what : str
        The measure's name, for error messages.

    Returns
    -------
    torch.Tensor
        Shape (batch, n * h + h * h) with ``h = (n - 1) // 2``: the basis ``Q`` (n x h,
        the first ``k`` columns orthonormal, the rest zero) and ``R`` (h x h, the ``k``
        kept units or components in that basis: ``Q @ R`` is the reduced, centred
        representation).

    Examples
    --------
    >>> f = cca_features(np.random.default_rng(0).normal(size=(7, 30)))
    >>> f.shape, kept_dims(f, 7).tolist()
    (torch.Size([1, 30]), [3])
    """
    t = _as_tensor(x, device=device, dtype=dtype, name=what)
    b, n, d = t.shape
    require_stimuli(n, MIN_STIMULI, what)
    h = max_dims(n)
    t = t - t.mean(1, keepdim=True)
    u, s, vh = torch.linalg.svd(t, full_matrices=False)
    tol = s[:, :1] * max(n, d) * torch.finfo(t.dtype).eps
    rank = (s > tol).sum(1)
    if (rank == 0).any():
        raise AnalysisError(
            f"{what}: constant representation at batch index {torch.nonzero(rank == 0).flatten().tolist()[:10]}: "
            "every stimulus gives the same response, so there is no subspace to compare")
    k = _chosen_dims(s, rank, variance, dims, n, d, what)
    q = torch.zeros(b, n, h, dtype=t.dtype, device=t.device)
    r = torch.zeros(b, h, h, dtype=t.dtype, device=t.device)
    raw = variance is None and dims is None
    for i in range(b):  # k differs per representation; the SVD above was batched
        ki = int(k[i])
        q[i, :, :ki] = u[i, :, :ki]
        # units themselves: Q^T X = S V^T; principal components: diag(S)
        r[i, :ki, :ki] = s[i, :ki, None] * vh[i, :ki, :] if raw else torch.diag(s[i, :ki])
    return torch.cat([q.reshape(b, -1), r.reshape(b, -1)], 1)


def _split(f: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    h = max_dims(n)
    q = f[:, :n * h].reshape(-1, n, h)
    r = f[:, n * h:].reshape(-1, h, h)
    return q, r, (q.norm(dim=1) > 0.5).sum(1)


def kept_dims(f, n: int) -> torch.Tensor:
    """How many dims each feature vector of :func:`cca_features` kept.

    Examples
    --------
    >>> kept_dims(cca_features(np.random.default_rng(0).normal(size=(21, 4)), variance=None), 21).tolist()
    [4]
    """
    return _split(torch.as_tensor(f), n)[2]


def stimuli_of_width(m: int) -> int:
    """The number of stimuli n of a feature vector of length ``m`` (see :func:`feature_width`)."""
    n = int(round((m * 4) ** 0.5)) + 2
    while n > 2 and feature_width(n) > m:
        n -= 1
    if feature_width(n) != m:
        raise AnalysisError(f"{m} is not the length of a CCA feature vector")
    return n


def canonical_correlations(fa, fb) -> torch.Tensor:
    """Canonical correlations of paired feature vectors, zero-padded: shape (pairs, h).

    The first ``min(ka, kb)`` entries of each row are the canonical correlations in
    decreasing order; the rest are zero.

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(11, 3))
    >>> f = cca_features(x, variance=None)
    >>> canonical_correlations(f, f).round(decimals=12).tolist()
    [[1.0, 1.0, 1.0, 0.0, 0.0]]
    """
    fa = torch.as_tensor(fa)
    fb = torch.as_tensor(fb, device=fa.device, dtype=fa.dtype)
    n = stimuli_of_width(fa.shape[1])
    qa, _, _ = _split(fa, n)
    qb, _, _ = _split(fb, n)
    return torch.linalg.svdvals(qa.transpose(1, 2) @ qb).clamp(max=1.0)


def svcca_pairs(fa, fb) -> torch.Tensor:
    """SVCCA of paired feature vectors: the mean of the ``min(ka, kb)`` canonical correlations.

    Examples
    --------
    >>> f = cca_features(np.random.default_rng(0).normal(size=(2, 9, 5)))
    >>> svcca_pairs(f, f).round(decimals=12).tolist()
    [1.0, 1.0]
    """
    fa = torch.as_tensor(fa)
    n = stimuli_of_width(fa.shape[1])
    k = torch.minimum(_split(fa, n)[2], _split(torch.as_tensor(fb, device=fa.device), n)[2])
    return canonical_correlations(fa, fb).sum(1) / k


def _pwcca_group(nx: torch.Tensor, ny: torch.Tensor) -> torch.Tensor:
    """PWCCA of a batch with the same kept dims (kx <= ky), as google/svcca's compute_pwcca.

    ``nx`` (B, n, kx) and ``ny`` (B, n, ky) are centred units (or components).
    """
    sxx, syy, sxy = nx.transpose(1, 2) @ nx, ny.transpose(1, 2) @ ny, nx.transpose(1, 2) @ ny

    def inv_sqrt(c):
        w, v = torch.linalg.eigh(c)
        return (v / w.sqrt()[:, None, :]) @ v.transpose(1, 2)
    u, rho, _ = torch.linalg.svd(inv_sqrt(sxx) @ sxy @ inv_sqrt(syy))
    p, _ = torch.linalg.qr(nx @ u)  # pwcca.py: np.linalg.qr(dirns.T), dirns = u.T @ centred acts
    weights = (p.transpose(1, 2) @ nx).abs().sum(2)
    weights = weights / weights.sum(1, keepdim=True)
    return (weights * rho.clamp(max=1.0)).sum(1)


def pwcca_pairs(fa, fb) -> torch.Tensor:
    """PWCCA of paired feature vectors, weighted on the side with fewer kept dims.

    Examples
    --------
    >>> f = cca_features(np.random.default_rng(0).normal(size=(2, 9, 5)))
    >>> pwcca_pairs(f, f).round(decimals=12).tolist()
    [1.0, 1.0]
    """
    fa = torch.as_tensor(fa)
    fb = torch.as_tensor(fb, device=fa.device, dtype=fa.dtype)
    n = stimuli_of_width(fa.shape[1])
    qa, ra, ka = _split(fa, n)
    qb, rb, kb = _split(fb, n)
    first = ka <= kb
    kx, ky = torch.where(first, ka, kb), torch.where(first, kb, ka)
    out = torch.empty(len(fa), dtype=fa.dtype, device=fa.device)
    units = {True: (qa, ra, qb, rb), False: (qb, rb, qa, ra)}
    for x_first in (True, False):
        qx, rx, qy, ry = units[x_first]
        for kxi, kyi in {(int(i), int(j)) for i, j in zip(kx[first == x_first], ky[first == x_first])}:
            sel = torch.nonzero((first == x_first) & (kx == kxi) & (ky == kyi)).flatten()
            nx = qx[sel, :, :kxi] @ rx[sel, :kxi, :kxi]
            ny = qy[sel, :, :kyi] @ ry[sel, :kyi, :kyi]
            out[sel] = _pwcca_group(nx, ny)
    return out


def pairs_matrix(pair_fn, f, *, chunk_pairs: int = 4096) -> torch.Tensor:
    """Every feature vector with every other: ``pair_fn`` over all ordered pairs, in chunks.

    Returns
    -------
    torch.Tensor
        Shape (c, c): entry ``[i, j]`` is ``pair_fn(f[i], f[j])``.

    Examples
    --------
    >>> f = cca_features(np.random.default_rng(0).normal(size=(3, 9, 5)))
    >>> pairs_matrix(svcca_pairs, f).shape
    torch.Size([3, 3])
    """
    f = torch.as_tensor(f)
    c = len(f)
    i, j = torch.meshgrid(torch.arange(c), torch.arange(c), indexing="ij")
    i, j = i.flatten(), j.flatten()
    out = torch.empty(c * c, dtype=f.dtype, device=f.device)
    for s in range(0, c * c, chunk_pairs):
        out[s:s + chunk_pairs] = pair_fn(f[i[s:s + chunk_pairs]], f[j[s:s + chunk_pairs]])
    return out.reshape(c, c)
