"""Centred kernel alignment (CKA), batched in torch.

Every CKA variant here is the cosine similarity of two flattened *centred Gram
matrices*: the doubly centred ``HKH`` for the biased HSIC estimator, the U-centred
matrix of Song et al. (2012) for the debiased one, and the per-batch U-centred
matrices laid end to end for minibatch CKA (Nguyen et al., 2021). The HSIC scale
factors (``1/(n-1)**2``, ``1/(n(n-3))``) cancel in the ratio. Turning each
representation into its centred-Gram feature vector once (:func:`cka_features`) lets
many pairs run as one matrix product (:func:`cka_matrix`); :func:`feature_cosine` is
the one final normalisation that every CKA value of :mod:`repscope.analyses` goes
through.

The array functions here compare stimuli by position; the labelled
:func:`repscope.analyses.compare` aligns them on their ``stimulus`` coordinate first.
Non-finite values, too few stimuli (biased CKA needs ``n >= 3``: with two stimuli every
centred Gram is the same up to scale, so CKA is always 1; debiased needs ``n >= 4``) and
constant representations (a zero centred Gram matrix, up to rounding) are errors.

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

from .dims import check_finite, require_stimuli
from .errors import AnalysisError

__all__ = ["KERNELS", "BANDWIDTHS", "MIN_STIMULI", "cka", "cka_features", "cka_matrix",
           "feature_cosine", "hsic", "gram"]

KERNELS = ("linear", "rbf")
BANDWIDTHS = ("paper", "kornblith")
MIN_STIMULI = {False: 3, True: 4}  # biased, debiased (U-centred) HSIC


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
    if not torch.isfinite(t.sum()):  # a cheap filter; the check names the cells
        check_finite(t.cpu().numpy(), name, lambda k: f"batch index {k}", allow_missing=False)
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
    # Distances do not change when the stimulus mean is subtracted; it keeps the Gram
    # formula |a|^2 + |b|^2 - 2 a.b from cancelling a large common offset.
    c = t - t.mean(dim=1, keepdim=True)
    dots = c @ c.transpose(1, 2)
    norms = torch.diagonal(dots, dim1=1, dim2=2)
    sq = (norms[:, :, None] + norms[:, None, :] - 2 * dots).clamp_min(0)
    sq.diagonal(dim1=1, dim2=2).zero_()
    # identical stimuli: distance 0 exactly, not the GEMM's rounding
    sq = sq.masked_fill((t == t[:, :1]).all(2).all(1)[:, None, None], 0)
    flat = sq.flatten(1)
    if bandwidth == "paper":
        sigma2 = torch.nanquantile(flat.masked_fill(flat == 0, float("nan")), 0.5, dim=1)
    else:
        sigma2 = threshold ** 2 * torch.quantile(flat, 0.5, dim=1)
    # All stimuli identical: every distance is zero and K is all ones whatever sigma is;
    # the centred Gram is then zero, which cka_features refuses as a constant representation.
    sigma2 = torch.where((flat == 0).all(1), torch.ones_like(sigma2), sigma2)
    if (torch.isnan(sigma2) | (sigma2 <= 0)).any():
        raise AnalysisError(
            f"RBF bandwidth is zero (bandwidth={bandwidth!r}, threshold={threshold}): most "
            f"stimuli of a representation (shape {tuple(t.shape[1:])}) are identical. "
            "Use bandwidth='paper' or a larger threshold"
        )
    return torch.exp(-sq / (2 * sigma2[:, None, None]))


def _center(k: torch.Tensor, debiased: bool) -> torch.Tensor:
    """Doubly centred (biased) or U-centred (debiased) Gram matrices, batched."""
    n = k.shape[-1]
    if not debiased:
        return k - k.mean(1, keepdim=True) - k.mean(2, keepdim=True) + k.mean((1, 2), keepdim=True)
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
    nb = 1
    if batch_size is None:
        require_stimuli(n, MIN_STIMULI[debiased], "Debiased (U-centred) CKA" if debiased else "CKA")
    else:
        if batch_size < MIN_STIMULI[True] or n % batch_size:
            raise AnalysisError(
                f"Minibatch CKA needs equal batches of at least {MIN_STIMULI[True]} stimuli; got n={n} "
                f"and batch_size={batch_size} (n must be a multiple of batch_size)"
            )
        nb = n // batch_size
        t = t.reshape(b * nb, batch_size, t.shape[2])
        debiased = True
    # trace of the uncentred Gram: the scale that rounding in the centring is relative to
    trace = (t * t).sum((1, 2)) if kernel == "linear" else torch.full(t.shape[:1], t.shape[1], dtype=t.dtype)
    rounding = torch.finfo(t.dtype).eps
    if kernel == "linear" and t.dtype != torch.float64:
        # Centring the features first leaves HKH and the U-centred Gram unchanged and
        # keeps a low-precision Gram well conditioned; in float64 centring the small
        # n x n Gram is enough and saves a pass over the (n, d) features. Rounding then
        # enters the Gram squared (eps * |x| per feature).
        t = t - t.mean(dim=1, keepdim=True)
        rounding = rounding ** 2
    c = _center(gram(t, kernel, bandwidth=bandwidth, threshold=threshold), debiased).reshape(b, -1)
    _refuse_constant(c, trace.to(c.device).reshape(b, nb).sum(1), t.shape[1], rounding)
    return c


def _refuse_constant(c: torch.Tensor, trace: torch.Tensor, n: int, rounding: float) -> None:
    """The one tolerance: a centred Gram within rounding (``n * rounding`` of the
    uncentred Gram's trace) of zero is zero: a constant representation."""
    zero = c.norm(dim=1) <= n * rounding * trace
    if zero.any():
        raise AnalysisError(
            f"Constant representation at batch index {torch.nonzero(zero).flatten().tolist()[:10]}: "
            "every stimulus gives the same response (up to rounding), so the centred Gram "
            "matrix is zero and CKA is undefined"
        )


def feature_cosine(fa, fb=None, *, pairwise: bool = True) -> torch.Tensor:
    """CKA from centred-Gram feature vectors: their cosine, the one final normalisation.

    Parameters
    ----------
    fa, fb : torch.Tensor or array_like
        Shapes (R, m) and (S, m), rows from :func:`cka_features` (which refuses
        constant representations, so no norm is zero); ``fb`` defaults to ``fa``.
    pairwise : bool
        Row ``r`` of ``fa`` with row ``r`` of ``fb`` (shape (R,), a single row
        broadcasts), or every row with every row (shape (R, S)).

    Examples
    --------
    >>> f = cka_features(np.random.default_rng(0).normal(size=(2, 6, 3)))
    >>> feature_cosine(f).round(decimals=12).tolist(), feature_cosine(f, pairwise=False).shape
    ([1.0, 1.0], torch.Size([2, 2]))
    """
    fa = torch.as_tensor(fa)
    fb = fa if fb is None else torch.as_tensor(fb, device=fa.device)
    na, nb = fa.norm(dim=1), fb.norm(dim=1)
    if pairwise:
        return (fa * fb).sum(1) / (na * nb)
    return (fa @ fb.T) / (na[:, None] * nb[None, :])


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
        For NaN or Inf, constant representations, mismatched n, or fewer than
        :data:`MIN_STIMULI` stimuli (3, or 4 when debiased).

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
    return feature_cosine(fx, fy)


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
    return feature_cosine(fa, None if reps_b is None else feats(reps_b), pairwise=False)


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
