"""Speed of our similarity code against plain numpy per-pair loops (the paper's way).

Run: ``python bench/bench_similarity.py [--device cuda] [--reps 80] [--quick]``

Side by side in one run, on the same arrays:

1. the linear-CKA matrix over R representations of 20 x 12544 (goal: >= 30x faster
   than the per-pair numpy loop);
2. the RSA matrix (correlation RDMs, 1 - Spearman) over the same R (goal: >= 2.5x);
3. one linear CKA at n=2000, d=3136 against the machine's GEMM rate, measured here
   with ``torch.matmul`` (goal: within 2x of the time of the two n x d x n GEMMs that
   CKA needs).

Prints times, ratios and the largest difference between the implementations.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import xarray as xr
from scipy.stats import spearmanr

from repscope.analyses import cka, cka_matrix, compare_all


# --- the paper's formulas, plain numpy, one pair at a time -------------------------
def _np_gram_linear(x):
    return x @ x.T


def _np_center(k):
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return h @ k @ h


def _np_cka(x, y):
    kc, lc = _np_center(_np_gram_linear(x)), _np_center(_np_gram_linear(y))
    hsic_xy = np.sum(kc * lc)
    return hsic_xy / np.sqrt(np.sum(kc * kc) * np.sum(lc * lc))


def _np_rdm(x):
    return (1 - np.corrcoef(x))[np.triu_indices(len(x), 1)]


def numpy_cka_matrix(reps):
    r = len(reps)
    out = np.empty((r, r))
    for i in range(r):
        for j in range(r):
            out[i, j] = _np_cka(reps[i], reps[j])
    return out


def numpy_rsa_matrix(reps):
    r = len(reps)
    out = np.empty((r, r))
    for i in range(r):
        for j in range(r):
            out[i, j] = 1 - spearmanr(_np_rdm(reps[i]), _np_rdm(reps[j])).statistic
    return out


# -------------------------------------------------------------------------------------
def _time(fn, repeat=1, sync=None):
    best = float("inf")
    for _ in range(repeat):
        if sync:
            sync()
        t0 = time.perf_counter()
        out = fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--reps", type=int, default=80)
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    args = p.parse_args(argv)
    dev, dtype = torch.device(args.device), getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    print(f"device {dev}, dtype {args.dtype}, torch threads {torch.get_num_threads()}")

    rng = np.random.default_rng(0)
    reps = rng.normal(size=(args.reps, 20, 12544))

    t_np, ref = _time(lambda: numpy_cka_matrix(reps))
    x = torch.as_tensor(reps, device=dev)
    cka_matrix(x[:2], device=dev, dtype=dtype)  # warm-up
    t_ours, got = _time(lambda: cka_matrix(x, device=dev, dtype=dtype), repeat=3, sync=sync)
    print(f"[1] linear-CKA matrix {args.reps} x 20 x 12544: numpy per pair {t_np:.3f} s, "
          f"ours {t_ours:.4f} s, speed-up {t_np / t_ours:.1f}x (goal >= 30x); "
          f"max |diff| {np.abs(got.cpu().numpy() - ref).max():.2e}")

    t_np, ref = _time(lambda: numpy_rsa_matrix(reps))
    da = xr.DataArray(reps, dims=("rep", "stimulus", "unit_x"), coords={"rep": np.arange(args.reps)})
    t_ours, got = _time(lambda: compare_all(da, "rsa", rdm_method="correlation"), repeat=3)
    print(f"[2] RSA matrix (correlation RDMs, 1 - Spearman) {args.reps} x 20 x 12544: numpy per pair "
          f"{t_np:.3f} s, ours (rsatoolbox) {t_ours:.4f} s, speed-up {t_np / t_ours:.1f}x (goal >= 2.5x); "
          f"max |diff| {np.abs(got.values - ref).max():.2e}")

    n, d = 2000, 3136
    a = torch.as_tensor(rng.normal(size=(n, d)), device=dev, dtype=dtype)
    b = torch.as_tensor(rng.normal(size=(n, d)), device=dev, dtype=dtype)
    torch.matmul(a, a.T)
    t_gemm, _ = _time(lambda: torch.matmul(a, b.T), repeat=5, sync=sync)
    rate = 2 * n * n * d / t_gemm
    cka(a, b, device=dev, dtype=dtype)
    t_cka, val = _time(lambda: cka(a, b, device=dev, dtype=dtype), repeat=5, sync=sync)
    floor = 2 * t_gemm  # the two n x d x n Gram products
    an, bn = a.cpu().numpy(), b.cpu().numpy()
    t_np1, ref1 = _time(lambda: _np_cka(an, bn))
    print(f"[3] one linear CKA n={n}, d={d}: GEMM {rate / 1e9:.1f} GFLOP/s ({t_gemm * 1e3:.1f} ms per "
          f"n x d x n product); ours {t_cka * 1e3:.1f} ms = {t_cka / floor:.2f}x the two-GEMM time "
          f"(goal <= 2x); numpy paper formula {t_np1 * 1e3:.0f} ms ({t_np1 / t_cka:.1f}x slower); "
          f"|diff| {abs(float(val) - ref1):.1e}")


if __name__ == "__main__":
    main()
