"""Overhead of repscope's MAML meta-step over a bare, minimal ``higher`` loop.

Configuration of the paper (Finn et al. 2017, Omniglot 20-way 1-shot): meta-batch 16,
5 inner SGD steps, inner lr 0.1 on the sum of support losses over K, second order,
batch-norm offsets not adapted, Adam 1e-3. Both loops see the same real Omniglot
episodes and start from the same weights; they run interleaved (A, B, A, B, ...) in one
process, so machine load hits both alike. Prints CPU seconds (process time) and wall
seconds per meta-step and the ratio toolkit / bare (target: <= 1.05).

Run: ``python bench/bench_maml.py [--repeats 6] [--threads 1] [--device cpu]``.
"""
import argparse
import statistics
import time

import higher
import torch
import torch.nn.functional as F

from repscope.training.config import get_preset
from repscope.training.meta import episode_tensors, meta_step
from repscope.training.model import build_model
from repscope.training.tasks import task_samplers


def bare_meta_step(model, meta_opt, tasks, lr=0.1, steps=5, k_shot=1):
    """The minimal higher MAML step (higher's examples/maml-omniglot.py, our conventions)."""
    inner_params = [p for n, p in model.named_parameters() if not n.endswith("norm.beta")]
    inner_opt = torch.optim.SGD(inner_params, lr=lr)
    meta_opt.zero_grad()
    for sx, sy, qx, qy in tasks:
        with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (f, diffopt):
            for _ in range(steps):
                diffopt.step(F.cross_entropy(f(sx), sy, reduction="sum") / k_shot)
            (F.cross_entropy(f(qx), qy) / len(tasks)).backward()
    meta_opt.step()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=6, help="timed meta-steps per variant")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data", default=None, help="data folder (default $REPSCOPE_DATA)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = get_preset("omniglot-20way-1shot", archives=("images_background_small1",
                                                      "images_background_small2"),
                     n_train=172, n_val=35, n_test=35, data=args.data, device=args.device)
    sampler = task_samplers(cfg)["train"]
    torch.manual_seed(0)
    toolkit = build_model(cfg).to(device)
    bare = build_model(cfg).to(device)
    bare.load_state_dict(toolkit.state_dict())
    opts = {"toolkit": torch.optim.Adam(toolkit.parameters(), 1e-3),
            "bare": torch.optim.Adam(bare.parameters(), 1e-3)}
    runs = {
        "toolkit": lambda eps: meta_step(toolkit, opts["toolkit"], eps, cfg),
        "bare": lambda eps: bare_meta_step(
            bare, opts["bare"], [episode_tensors(e, device) for e in eps]),
    }
    cpu = {k: [] for k in runs}
    wall = {k: [] for k in runs}
    for rep in range(args.repeats + 1):  # repeat 0 warms up
        eps = sampler.batch(rep, cfg.meta_batch)
        order = ("toolkit", "bare") if rep % 2 else ("bare", "toolkit")
        for name in order:
            _sync(device)
            c, w = time.process_time(), time.perf_counter()
            runs[name](eps)
            _sync(device)
            if rep:
                cpu[name].append(time.process_time() - c)
                wall[name].append(time.perf_counter() - w)
    # same computation: equal weights on CPU; on CUDA, TF32/cuDNN noise in the gradients
    # is amplified by Adam's normalisation, so only report the difference there
    diff = max((a - b).abs().max().item() for a, b in zip(toolkit.parameters(),
                                                           bare.parameters()))
    print(f"max |toolkit - bare| weight difference after {args.repeats + 1} steps: {diff:.2e}")
    if device.type == "cpu":
        assert diff < 1e-4, diff
    print(f"paper configuration: 20-way 1-shot, meta-batch 16, 5 inner steps, second order; "
          f"device {device}, {args.threads} thread(s), {args.repeats} meta-steps each")
    for name in runs:
        print(f"{name:8s} CPU s/meta-step {statistics.median(cpu[name]):.3f} (median), "
              f"wall s/meta-step {statistics.median(wall[name]):.3f}")
    ratio_cpu = statistics.median(cpu["toolkit"]) / statistics.median(cpu["bare"])
    ratio_wall = statistics.median(wall["toolkit"]) / statistics.median(wall["bare"])
    print(f"overhead toolkit/bare: CPU {ratio_cpu:.3f}, wall {ratio_wall:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
