"""Orthogonal Procrustes distance, angular form, batched in torch.

The angle between two representations after the best rotation of one onto the other
(Williams et al., 2021, "Generalized shape metrics on neural representations"; Ding et
al., 2021, "Grounding representation similarity with statistical testing"): with each
unit centred,

    d(X, Y) = arccos( ||X^T Y||_* / (||X||_F ||Y||_F) ),

``||.||_*`` the nuclear norm (sum of singular values). It is a metric on representations
up to rotation and scale: 0 for identical inputs (and for rotated, permuted or
isotropically scaled units), at most pi/2, and it obeys the triangle inequality. Unlike
CCA it changes under a general invertible linear map of the units. It needs no
reduction when units outnumber stimuli. Equal to netrep's
``LinearMetric(alpha=1, center_columns=True, score_method="angular")``, which zero-pads
the narrower representation.

Each representation is turned once into ``(X X^T)^(1/2) / ||X||_F`` (n x n, the
symmetric square root of its centred Gram matrix): ``X^T Y`` and
``(X X^T)^(1/2) (Y Y^T)^(1/2)`` have the same singular values, so the pair step works on
n x n matrices whatever the widths.

The angle is computed as ``2 arcsin(||A R - B||_F / 2)`` from the aligned normalised
difference (the same number), which, unlike ``arccos``, keeps full precision near 0.
"""
from __future__ import annotations

import torch

from .cka import _as_tensor
from .dims import require_stimuli
from .errors import AnalysisError

__all__ = ["MIN_STIMULI", "procrustes_features", "procrustes_pairs", "procrustes"]

MIN_STIMULI = 3  # with two stimuli every centred representation is the same line: always 0


def procrustes_features(x, *, device=None, dtype=torch.float64) -> torch.Tensor:
    """Flattened normalised square roots of the centred Gram matrices, shape (batch, n * n).

    Examples
    --------
    >>> procrustes_features(torch.eye(4)).shape
    torch.Size([1, 16])
    """
    t = _as_tensor(x, device=device, dtype=dtype, name="procrustes")
    b, n, d = t.shape
    require_stimuli(n, MIN_STIMULI, "procrustes")
    scale = t.abs().amax((1, 2))
    t = t - t.mean(1, keepdim=True)
    u, s, _ = torch.linalg.svd(t, full_matrices=False)
    norm = s.norm(dim=1)
    zero = norm <= torch.finfo(t.dtype).eps * (n * d) ** 0.5 * scale  # zero up to rounding
    if zero.any():
        raise AnalysisError(
            f"procrustes: constant representation at batch index {torch.nonzero(zero).flatten().tolist()[:10]}: "
            "every stimulus gives the same response, so the angle is undefined")
    root = (u * (s / norm[:, None])[:, None, :]) @ u.transpose(1, 2)
    return root.reshape(b, n * n)


def procrustes_pairs(fa, fb) -> torch.Tensor:
    """Angular Procrustes distance (radians) of paired feature vectors.

    Examples
    --------
    >>> f = procrustes_features(torch.randn(2, 6, 3, dtype=torch.float64))
    >>> bool((procrustes_pairs(f, f) < 1e-6).all())
    True
    """
    fa = torch.as_tensor(fa)
    fb = torch.as_tensor(fb, device=fa.device, dtype=fa.dtype)
    n = int(round(fa.shape[1] ** 0.5))
    a, b = fa.reshape(-1, n, n), fb.reshape(-1, n, n)
    # From the aligned difference, not arccos of the nuclear norm: the chord
    # ||A R - B|| = sqrt(2 - 2 cos) keeps full precision for nearly equal inputs.
    u, _, vh = torch.linalg.svd(a.transpose(1, 2) @ b)
    chord = (a @ (u @ vh) - b).flatten(1).norm(dim=1)
    return 2 * torch.arcsin((chord / 2).clamp(max=1.0))


def procrustes(x, y, *, device=None, dtype=torch.float64) -> torch.Tensor:
    """Angular Procrustes distance between representations, batched.

    Parameters
    ----------
    x, y : array_like or torch.Tensor
        Shapes (n, d1) / (batch, n, d1) and (n, d2) / (batch, n, d2).

    Examples
    --------
    >>> x = torch.randn(10, 4, dtype=torch.float64)
    >>> rot = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))[0]
    >>> float(procrustes(x, 3 * x @ rot)) < 1e-6, 0 < float(procrustes(x, x ** 2)) <= torch.pi / 2
    (True, True)
    """
    opts = {"device": device, "dtype": dtype}
    return procrustes_pairs(procrustes_features(x, **opts), procrustes_features(y, **opts))
