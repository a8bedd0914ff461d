"""Centred kernel alignment (CKA), batched in torch.

Every CKA variant here is the cosine similarity of two flattened *centred Gram
matrices*: the doubly centred ``HKH`` for the biased HSIC estimator, the U-centred
matrix of Song et al. (2012) for the debiased one, and the per-batch U-centred
matrices laid end to end for minibatch CKA (Nguyen et al., 2021). The HSIC scale
factors (``1/(n-1)**2``, ``1/(n(n-3))``) cancel in the ratio. Turning each
representation into its centred-Gram feature vector once (:func:`cka_features`) lets
many pairs run as one matrix product (:func:`cka_matrix`).

Two RBF bandwidth conventions are offered:

``"paper"``
    ``sigma = sqrt(median of the non-zero squared distances)`` (Goerttler &
    Obermayer's code).
``"kornblith"``
    ``sigma**2 = threshold**2 * median of all n**2 squared distances`` (zero diagonal
    included), as in Kornblith et al. (2019).

In both, ``K = exp(-D**2 / (2 sigma**2))``.
"""
from __future__ import annotations

import numpy as np
import torch

from repscope.analyses.errors import AnalysisError

__all__ = ["KERNELS", "BANDWIDTHS", "cka", "cka_features", "cka_matrix", "hsic", "gram"]

KERNELS = ("linear", "rbf")
BANDWIDTHS = ("paper", "kornblith")


def _as_tensor(x, *, device=None, dtype=torch.float64, name="x") -> torch.Tensor:
    """Convert ``x`` to a float tensor of shape (batch, n, d), checking for NaN."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    t = t.to(device=device, dtype=dtype)
    if t.ndim == 2:
        t = t.unsqueeze(0)
    if t.ndim != 3:
        raise AnalysisError(
            f"{name} has shape {tuple(t.shape)}; expected (n, d) or (batch, n, d) "
            "with n stimuli and d units"
        )
    # One reduction is cheaper than a full isnan pass; NaN propagates through the sum.
    if not torch.isfinite(t.sum()) and torch.isnan(t).any():
        raise AnalysisError(
            f"{name} (shape {tuple(t.shape)}) contains NaN; CKA needs complete "
            "representations (drop missing combinations first)"
        )
    return t


def _check_kernel(kernel: str, bandwidth: str) -> None:
    if kernel not in KERNELS:
        raise AnalysisError(f"Unknown kernel {kernel!r}. Expected one of {sorted(KERNELS)}")
    if bandwidth not in BANDWIDTHS:
        raise AnalysisError(
            f"Unknown RBF bandwidth convention {bandwidth!r}. Expected one of {sorted(BANDWIDTHS)}"
        )


def gram(x, kernel: str = "linear", *, bandwidth: str = "paper", threshold: float = 1.0,
         device=None, dtype=torch.float64) -> torch.Tensor:
    """Gram matrices of a batch of representations.

    Parameters
    ----------
    x : array_like or torch.Tensor
        Shape (n, d) or (batch, n, d): n stimuli, d units.
    kernel : {"linear", "rbf"}
    bandwidth : {"paper", "kornblith"}
        RBF bandwidth convention (see the module docstring).
    threshold : float
        Kornblith's fraction of the median distance (``bandwidth="kornblith"`` only).
    device, dtype
        Where and in what precision to compute.

    Returns
    -------
    torch.Tensor
        Shape (batch, n, n).

    Examples
    --------
    >>> gram([[1.0, 0.0], [0.0, 2.0]]).squeeze(0)
    tensor([[1., 0.],
            [0., 4.]], dtype=torch.float64)
    """
    _check_kernel(kernel, bandwidth)
    t = _as_tensor(x, device=device, dtype=dtype)
    if kernel == "linear":
        return t @ t.transpose(1, 2)
    dots = t @ t.transpose(1, 2)
    norms = torch.diagonal(dots, dim1=1, dim2=2)
    sq = (norms[:, :, None] + norms[:, None, :] - 2 * dots).clamp_min(0)
    sq.diagonal(dim1=1, dim2=2).zero_()
    flat = sq.flatten(1)
    if bandwidth == "paper":
        med = torch.nanquantile(flat.masked_fill(flat == 0, float("nan")), 0.5, dim=1)
        sigma2 = med
    else:
        sigma2 = threshold ** 2 * torch.quantile(flat, 0.5, dim=1)
    if torch.isnan(sigma2).any() or (sigma2 <= 0).any():
        raise AnalysisError(
            "RBF bandwidth is zero: a representation has all stimuli identical "
            f"(constant representation, shape {tuple(t.shape[1:])}); CKA is undefined"
        )
    return torch.exp(-sq / (2 * sigma2[:, None, None]))


def _center(k: torch.Tensor, debiased: bool) -> torch.Tensor:
    """Doubly centred (biased) or U-centred (debiased) Gram matrices, batched."""
    n = k.shape[-1]
    if not debiased:
        return k - k.mean(1, keepdim=True) - k.mean(2, keepdim=True) + k.mean((1, 2), keepdim=True)
    if n < 4:
        raise AnalysisError(
            f"Debiased (U-centred) HSIC needs at least 4 stimuli; got n={n}. "
            "Use debiased=False or more stimuli"
        )
    k = k.clone()
    k.diagonal(dim1=1, dim2=2).zero_()
    row = k.sum(2, keepdim=True) / (n - 2)
    col = k.sum(1, keepdim=True) / (n - 2)
    tot = k.sum((1, 2), keepdim=True) / ((n - 1) * (n - 2))
    u = k - row - col + tot
    u.diagonal(dim1=1, dim2=2).zero_()
    return u


def cka_features(x, kernel: str = "linear", *, debiased: bool = False,
                 batch_size: int | None = None, bandwidth: str = "paper",
                 threshold: float = 1.0, device=None, dtype=torch.float64) -> torch.Tensor:
    """Flattened centred Gram matrices: the vectors whose cosine is CKA.

    Parameters
    ----------
    x : array_like or torch.Tensor
        Shape (n, d) or (batch, n, d).
    kernel, bandwidth, threshold
        See :func:`gram`.
    debiased : bool
        U-centre (unbiased HSIC, needs n >= 4) instead of doubly centre.
    batch_size : int, optional
        Minibatch CKA: split the n stimuli into consecutive batches of this size
        (n must be a multiple of it) and lay their U-centred Grams end to end. Implies
        ``debiased=True``.

    Returns
    -------
    torch.Tensor
        Shape (batch, m).

    Examples
    --------
    >>> cka_features(np.eye(4)).shape
    torch.Size([1, 16])
    """
    t = _as_tensor(x, device=device, dtype=dtype)
    b, n, _ = t.shape
    if batch_size is not None:
        if batch_size < 4 or n % batch_size:
            raise AnalysisError(
                f"Minibatch CKA needs equal batches of at least 4 stimuli; got n={n} "
                f"and batch_size={batch_size} (n must be a multiple of batch_size)"
            )
        nb = n // batch_size
        t = t.reshape(b * nb, batch_size, t.shape[2])
        debiased = True
    else:
        nb = 1
    if kernel == "linear" and t.dtype != torch.float64:
        # Centring the features first leaves HKH and the U-centred Gram unchanged and
        # keeps a low-precision Gram well conditioned; in float64 centring the small
        # n x n Gram is enough and saves a pass over the (n, d) features.
        t = t - t.mean(dim=1, keepdim=True)
    c = _center(gram(t, kernel, bandwidth=bandwidth, threshold=threshold), debiased)
    return c.reshape(b, -1)


def _norms(f: torch.Tensor, debiased: bool, name: str) -> torch.Tensor:
    sq = (f * f).sum(1)
    scale = f.abs().amax(1).clamp_min(torch.finfo(f.dtype).tiny)
    if (sq <= (1e-12 * scale) ** 2).any():
        bad = torch.nonzero(sq <= (1e-12 * scale) ** 2).flatten().tolist()
        raise AnalysisError(
            f"{name}: representation(s) at batch index {bad[:10]} have a zero centred "
            "Gram matrix (constant representation: every stimulus gives the same "
            "response); CKA is undefined"
        )
    return sq.sqrt()


def cka(x, y, kernel: str = "linear", *, debiased: bool = False,
        batch_size: int | None = None, bandwidth: str = "paper", threshold: float = 1.0,
        device=None, dtype=torch.float64) -> torch.Tensor:
    """CKA between paired representations.

    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with biased HSIC
    ``tr(KHLH)/(n-1)**2`` or, with ``debiased=True``, the unbiased estimator of Song
    et al. (2012). Debiased CKA can be slightly negative.

    Parameters
    ----------
    x, y : array_like or torch.Tensor
        Shapes (n, d1) / (n, d2) or (batch, n, d1) / (batch, n, d2): the same n
        stimuli in both.
    kernel, debiased, batch_size, bandwidth, threshold, device, dtype
        See :func:`cka_features`.

    Returns
    -------
    torch.Tensor
        Shape (batch,).

    Raises
    ------
    AnalysisError
        For NaN, constant representations, mismatched n, or n < 4 when debiased.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(50, 8))
    >>> round(float(cka(x, 3 * x)), 12)
    1.0
    >>> q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    >>> round(float(cka(x, x @ q, "rbf")), 6)
    1.0
    """
    opts = dict(kernel=kernel, debiased=debiased, batch_size=batch_size,
                bandwidth=bandwidth, threshold=threshold, device=device, dtype=dtype)
    fx, fy = cka_features(x, **opts), cka_features(y, **opts)
    if fx.shape[1] != fy.shape[1] or (fx.shape[0] != fy.shape[0] and 1 not in (fx.shape[0], fy.shape[0])):
        raise AnalysisError(
            f"x and y must hold the same stimuli and batch: got feature shapes "
            f"{tuple(fx.shape)} and {tuple(fy.shape)}"
        )
    return (fx * fy).sum(1) / (_norms(fx, debiased, "x") * _norms(fy, debiased, "y"))


def cka_matrix(reps, reps_b=None, kernel: str = "linear", **options) -> torch.Tensor:
    """CKA between every pair of representations, as one matrix product.

    Parameters
    ----------
    reps : sequence of array_like or array_like
        R representations of the same n stimuli: a sequence of (n, d_r) arrays (widths
        may differ) or one (R, n, d) array.
    reps_b : sequence of array_like or array_like, optional
        A second set (S representations) of the same form; default ``reps``.
    kernel : {"linear", "rbf"}
    **options
        ``debiased``, ``batch_size``, ``bandwidth``, ``threshold``, ``device``,
        ``dtype``: see :func:`cka_features`.

    Returns
    -------
    torch.Tensor
        Shape (R, S).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> reps = [rng.normal(size=(20, d)) for d in (5, 7, 9)]
    >>> m = cka_matrix(reps)
    >>> m.shape, bool(torch.allclose(m.diagonal(), torch.ones(3, dtype=m.dtype)))
    (torch.Size([3, 3]), True)
    """
    def feats(rs):
        if isinstance(rs, (list, tuple)):
            return torch.cat([cka_features(r, kernel, **options) for r in rs])
        return cka_features(rs, kernel, **options)

    fa = feats(reps)
    fb = fa if reps_b is None else feats(reps_b)
    deb = options.get("debiased", False) or options.get("batch_size") is not None
    na, nb = _norms(fa, deb, "reps"), _norms(fb, deb, "reps_b")
    return (fa @ fb.T) / (na[:, None] * nb[None, :])


def hsic(x, y, kernel: str = "linear", *, debiased: bool = False, **options) -> torch.Tensor:
    """HSIC estimate between paired representations (biased or unbiased).

    Biased: ``tr(KHLH) / (n-1)**2``. Unbiased (Song et al. 2012):
    ``<U(K), U(L)> / (n(n-3))`` with U-centred K, L.

    Examples
    --------
    >>> x = np.arange(12.0).reshape(4, 3)
    >>> float(hsic(x, x)) > 0
    True
    """
    fx = cka_features(x, kernel, debiased=debiased, **options)
    fy = cka_features(y, kernel, debiased=debiased, **options)
    n = int(round(fx.shape[1] ** 0.5))
    scale = n * (n - 3) if debiased else (n - 1) ** 2
    return (fx * fy).sum(1) / scale
