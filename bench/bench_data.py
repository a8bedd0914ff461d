"""Data-layer timings, measured in one run: is the .npz cache worth it, is sampling cheap?

Run: ``python bench/bench_data.py [--data DIR] [--repeats N]``. Prints absolute times and
ratios; nothing is asserted. The cache goes to a temporary folder.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from repscope.training.data import EpisodeSampler, load_lake_runs, load_mnist, load_omniglot
from repscope.training.data.paths import data_root


def _best(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="data folder (default $REPSCOPE_DATA)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    root = data_root(args.data)
    r = args.repeats
    with tempfile.TemporaryDirectory() as cache:
        decode = _best(lambda: load_omniglot(root, download=False, cache=False), r)
        load_omniglot(root, download=False, cache=cache)  # write the cache once
        hit = _best(lambda: load_omniglot(root, download=False, cache=cache), r)
    print(f"omniglot small1+small2 (4840 PNGs): decode {decode:.3f} s, npz cache hit "
          f"{hit:.3f} s, ratio decode/cache = {decode / hit:.1f}x")
    print(f"  per PNG: {decode / 4840 * 1e6:.0f} us; full archives (32460 PNGs) would take "
          f"about {decode / 4840 * 32460:.1f} s to decode")

    chars = load_omniglot(root, download=False, cache=False)
    sampler = EpisodeSampler(chars.images, 20, 1, 1, rotate=True, seed=0)
    n = 200
    t = time.perf_counter()
    for i in range(n):
        sampler.episode(i)
    per_episode = (time.perf_counter() - t) / n
    print(f"episode 20-way 1-shot 1-query + rotation: {per_episode * 1e3:.2f} ms; "
          f"meta-batch of 16: {16 * per_episode * 1e3:.1f} ms = "
          f"{16 * per_episode / 6.4 * 100:.2f} % of a 6.4 s CPU meta-step (bench_maml.py, 1 thread)")
    mini = EpisodeSampler(np.zeros((64, 600, 3, 84, 84), np.float32), 5, 1, 15, seed=0)
    t = time.perf_counter()
    for i in range(50):
        mini.episode(i)
    print(f"episode Mini-ImageNet 5-way 1-shot 15-query: "
          f"{(time.perf_counter() - t) / 50 * 1e3:.2f} ms")

    lake = _best(lambda: load_lake_runs(root, download=False), r)
    mnist = _best(lambda: load_mnist(root, "test", download=False), r)
    print(f"lake all_runs (800 PNGs): {lake:.3f} s; mnist test (10k, md5 checked): "
          f"{mnist:.3f} s")


if __name__ == "__main__":
    main()
