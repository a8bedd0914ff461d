"""Benchmark: cost of recording 5 layers of conv4 on 1000 Omniglot images, and netCDF speed.

Prints, from one run with interleaved repeats:

* the median ratio (recorded forward) / (plain forward) for full feature maps,
  spatial-mean reduction and float16 storage (goal: <= 1.10x), and the one-off cost
  of ``to_dataset``;
* what recycling the buffers of cleared recordings saves: full maps with fresh
  buffers every recording against the recycled ones (median ratio recycled / fresh);
* netCDF write throughput (MB/s of activations) with and without zlib compression;
* netCDF read throughput of ``open_run`` and the share of it spent on checking each
  file's ``content_sha256`` (the same hash is computed once on writing).

Usage::

    python bench/bench_probe.py [--data DIR] [--repeats 15] [--device cpu|cuda] [--threads N]

Images come straight from ``DIR/omniglot/images_background_small1.zip`` (default
``$REPSCOPE_DATA`` or ``../shared/data``), 28x28 LANCZOS, inverted, like the paper.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from repscope.probes import Probe, open_run, write_checkpoint
from repscope.probes.store import record_hash

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["conv1", "conv2", "conv3", "conv4", "head"]


def load_images(zip_path: Path, n: int) -> tuple[torch.Tensor, list[str]]:
    """The first ``n`` drawings (sorted paths) as a (n, 1, 28, 28) tensor, strokes = 1."""
    with zipfile.ZipFile(zip_path) as archive:
        names = sorted(name for name in archive.namelist() if name.endswith(".png"))[:n]
        images = []
        for name in names:
            with Image.open(io.BytesIO(archive.read(name))) as img:
                small = img.convert("L").resize((28, 28), Image.LANCZOS)
            images.append(1.0 - np.asarray(small, dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(images))[:, None], names


def _block(c_in: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU())


class Conv4(nn.Module):
    """4 x (conv 3x3, 64 filters, stride 2, pad 1 -> BN -> ReLU), spatial mean, linear head."""

    def __init__(self, n_way: int = 20):
        super().__init__()
        self.conv1, self.conv2, self.conv3, self.conv4 = _block(1), _block(64), _block(64), _block(64)
        self.head = nn.Linear(64, n_way)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv4(self.conv3(self.conv2(self.conv1(x)))).mean(dim=(2, 3)))


class _FreshBuffers:
    """A stand-in for the Probe's buffer pool that never reuses memory (the ablation)."""

    def take(self, n, units, dtype, pinned):
        return torch.empty((n, units), dtype=dtype, pin_memory=pinned)

    def recycle(self, arrays, tensors):
        arrays.clear()
        tensors.clear()


def _timed(fn, device: str) -> float:
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_recording(net, x, names, labels, repeats, device):
    variants = {
        "full maps, float32": Probe(net, LAYERS),
        "spatial_mean, float32": Probe(net, LAYERS, reduce="spatial_mean"),
        "full maps, float16": Probe(net, LAYERS, dtype="float16"),
        "full maps, float32, fresh buffers": Probe(net, LAYERS),
    }
    variants["full maps, float32, fresh buffers"]._pool = _FreshBuffers()
    times = {"plain": []} | {k: [] for k in variants}
    assemble = {k: [] for k in variants}

    def plain():
        net(x)

    def recorded(probe, step):
        with probe.recording(checkpoint=step, labels=labels, image_ids=names):
            net(x)

    with torch.no_grad():
        for _ in range(3):                      # warm-up: allocator, kernels, first-call paths
            plain()
            for i, probe in enumerate(variants.values()):
                recorded(probe, -1 - i)
                probe.clear()
        for step in range(repeats):             # interleaved: plain, then each variant
            times["plain"].append(_timed(plain, device))
            for name, probe in variants.items():
                times[name].append(_timed(lambda: recorded(probe, step), device))
                assemble[name].append(_timed(lambda: probe.to_dataset(clear=True), "cpu"))
    plain_med = statistics.median(times["plain"])
    print(f"plain forward: median {plain_med * 1e3:.1f} ms over {repeats} repeats")
    for name in variants:
        ratios = [t / p for t, p in zip(times[name], times["plain"])]
        print(f"record 5 layers ({name}): median {statistics.median(times[name]) * 1e3:.1f} ms, "
              f"median ratio {statistics.median(ratios):.3f}x (goal <= 1.10x); "
              f"to_dataset once {statistics.median(assemble[name]) * 1e3:.1f} ms")
    reuse = [a / b for a, b in zip(times["full maps, float32"], times["full maps, float32, fresh buffers"])]
    print(f"recycled buffers / fresh buffers (full maps, float32): median ratio {statistics.median(reuse):.3f}x")


def bench_write(net, x, names, labels, repeats):
    probe = Probe(net, LAYERS)
    with torch.no_grad(), probe.recording(checkpoint=0, labels=labels, image_ids=names):
        net(x)
    ds = probe.to_dataset(config={"bench": "bench_probe"})
    mb = sum(ds[p].nbytes for p in LAYERS) / 1e6
    with tempfile.TemporaryDirectory(dir=REPO / "bench") as folder:
        for level in (0, 1, 4):
            seconds, size = [], 0
            for i in range(repeats):
                sub = Path(folder) / f"{level}_{i}"
                seconds.append(_timed(lambda: write_checkpoint(
                    sub, ds, compress=level > 0, complevel=max(level, 1)), "cpu"))
                size = sum(f.stat().st_size for f in sub.iterdir())
            med = statistics.median(seconds)
            print(f"netCDF write, zlib {f'level {level}' if level else 'off'}: {mb:.1f} MB of "
                  f"activations in {med * 1e3:.0f} ms = {mb / med:.0f} MB/s; file {size / 1e6:.1f} MB")


def bench_read(net, x, names, labels, repeats):
    probe = Probe(net, LAYERS)
    with torch.no_grad(), probe.recording(checkpoint=0, labels=labels, image_ids=names):
        net(x)
    ds = probe.to_dataset(config={"bench": "bench_probe"})
    mb = sum(ds[p].nbytes for p in LAYERS) / 1e6
    with tempfile.TemporaryDirectory(dir=REPO / "bench") as folder:
        write_checkpoint(folder, ds)
        reads, hashes = [], []
        for _ in range(repeats):                # interleaved: read (with check), hash alone
            reads.append(_timed(lambda: open_run(folder), "cpu"))
            loaded = open_run(folder)
            hashes.append(_timed(lambda: record_hash(loaded), "cpu"))
    read, check = statistics.median(reads), statistics.median(hashes)
    print(f"netCDF read (open_run, hash checked): {mb:.1f} MB in {read * 1e3:.0f} ms = "
          f"{mb / read:.0f} MB/s; the content_sha256 check {check * 1e3:.0f} ms of it "
          f"({100 * check / read:.0f} %)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("REPSCOPE_DATA", str(REPO.parent / "shared" / "data"))
    parser.add_argument("--data", default=default, help="data folder with omniglot/*.zip")
    parser.add_argument("--n", type=int, default=1000, help="number of images")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--write-repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default); 1 is steadier on a busy machine")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    x, names = load_images(Path(args.data) / "omniglot" / "images_background_small1.zip", args.n)
    labels = np.arange(len(names)) % 20
    torch.manual_seed(0)
    net = Conv4().to(args.device)
    x = x.to(args.device)
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
          f"{len(names)} Omniglot images {tuple(x.shape)}")
    bench_recording(net, x, names, labels, args.repeats, args.device)
    bench_write(net, x, names, labels, args.write_repeats)
    bench_read(net, x, names, labels, args.write_repeats)


if __name__ == "__main__":
    main()
