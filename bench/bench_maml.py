"""The MAML meta-step per engine, side by side in one process, and a 600-task evaluation.

Variants, all on the same real Omniglot episodes from the same weights, run interleaved
(A, B, C, A, B, C, ...) so machine load hits them alike:

``bare``
    the minimal ``higher`` loop (higher's examples/maml-omniglot.py, our conventions);
``higher``
    repscope's ``higher`` engine (the reference); ``higher / bare`` is its overhead
    (target <= 1.05);
``batched``
    repscope's batched engine (grouped convolutions, all tasks at once; on CUDA replayed
    from a CUDA graph); ``higher / batched`` is its speed-up (CPU goal >= 1.3);
``batched-eager`` (CUDA only)
    the batched engine without graph capture.

``--config paper`` is Finn et al.'s Omniglot 20-way 1-shot step (meta-batch 16, 5 inner
steps, second order); ``--config quick`` the quick preset's step. Prints CPU seconds
(process time) and wall seconds per meta-step, the ratios, the largest weight
difference between engines, and (``--eval-tasks``) the time of an evaluation of that
many held-out tasks per engine. ``--profile`` adds a torch.profiler table of one
batched meta-step.

Run: ``python bench/bench_maml.py [--config paper] [--repeats 6] [--threads 1] [--device cpu]
[--eval-tasks 600] [--profile] [--synthetic]`` (``--synthetic``: random episodes of the
same shapes, for machines without the data folder).
"""
import argparse
import statistics
import time
from types import SimpleNamespace

import higher
import torch
import torch.nn.functional as F

from repscope.training.config import get_preset
from repscope.training.engines import cuda_graph, get_engine, meta_step
from repscope.training.engines.tensors import episode_tensors
from repscope.training.model import build_model
from repscope.training.tasks import task_samplers

SMALL = dict(archives=("images_background_small1", "images_background_small2"),
             n_train=172, n_val=35, n_test=35)


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


class _Synthetic:
    """Random episodes of a configuration's shapes (timing does not depend on pixels)."""

    def __init__(self, cfg, seed):
        self.cfg, self.seed = cfg, seed

    def episode(self, i):
        cfg = self.cfg
        g = torch.Generator().manual_seed(self.seed * 100003 + i)
        shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
        ns, nq = cfg.n_way * cfg.k_shot, cfg.n_way * cfg.n_query
        return SimpleNamespace(support_x=torch.rand(ns, *shape, generator=g),
                               support_y=torch.arange(ns) % cfg.n_way,
                               query_x=torch.rand(nq, *shape, generator=g),
                               query_y=torch.arange(nq) % cfg.n_way)

    def batch(self, step, size):
        return [self.episode(step * size + i) for i in range(size)]


def _samplers(cfg, synthetic):
    if synthetic:
        return {"train": _Synthetic(cfg, 0), "test": _Synthetic(cfg, 1)}
    return task_samplers(cfg)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _config(name, args):
    if name == "paper":
        return get_preset("omniglot-20way-1shot", data=args.data, device=args.device, **SMALL)
    return get_preset("quick", data=args.data, device=args.device)


def _profile(model, opt, eps, cfg, device):
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        cuda_graph.ENABLED = False  # the eager batched step
        try:
            meta_step(model, opt, eps, cfg, engine="batched")
        finally:
            cuda_graph.ENABLED = True
        _sync(device)
    keys = ["self_device_time_total", "self_cuda_time_total"] if device.type == "cuda" else \
        ["self_cpu_time_total"]
    for key in keys:  # torch renamed the CUDA column to "device" in 2.4
        try:
            print(prof.key_averages().table(sort_by=key, row_limit=18))
            return
        except (AttributeError, KeyError, ValueError, RuntimeError):
            continue


def _evaluation_time(model, cfg, engine, n_tasks, synthetic):
    episodes = [_samplers(cfg, synthetic)["test"].episode(i) for i in range(n_tasks)]
    _sync(next(model.parameters()).device)
    c, w = time.process_time(), time.perf_counter()
    acc = get_engine(engine).evaluate(model, episodes, cfg, cfg.inner_steps_eval)
    _sync(next(model.parameters()).device)
    return time.process_time() - c, time.perf_counter() - w, acc[:, -1].mean()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=["paper", "quick"], default="paper")
    p.add_argument("--repeats", type=int, default=6, help="timed meta-steps per variant")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data", default=None, help="data folder (default $REPSCOPE_DATA)")
    p.add_argument("--eval-tasks", type=int, default=0,
                   help="also time an evaluation of this many test tasks per engine")
    p.add_argument("--no-bare", action="store_true", help="skip the bare higher loop")
    p.add_argument("--profile", action="store_true", help="profile one batched meta-step")
    p.add_argument("--synthetic", action="store_true",
                   help="random episodes of the same shapes (no data folder needed)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = _config(args.config, args)
    sampler = _samplers(cfg, args.synthetic)["train"]
    torch.manual_seed(0)
    nets = {"higher": build_model(cfg).to(device)}
    names = (["bare"] if not args.no_bare and args.config == "paper" else []) + \
        ["higher", "batched"] + (["batched-eager"] if device.type == "cuda" else [])
    for name in names[1:] + names[:1]:
        nets.setdefault(name, build_model(cfg).to(device)).load_state_dict(
            nets["higher"].state_dict())
    opts = {k: torch.optim.Adam(net.parameters(), cfg.meta_lr) for k, net in nets.items()}

    def eager(eps):
        cuda_graph.ENABLED = False
        try:
            meta_step(nets["batched-eager"], opts["batched-eager"], eps, cfg, engine="batched")
        finally:
            cuda_graph.ENABLED = True

    runs = {
        "bare": lambda eps: bare_meta_step(
            nets["bare"], opts["bare"], [episode_tensors(e, device) for e in eps],
            lr=cfg.inner_lr, steps=cfg.inner_steps, k_shot=cfg.k_shot),
        "higher": lambda eps: meta_step(nets["higher"], opts["higher"], eps, cfg, engine="higher"),
        "batched": lambda eps: meta_step(nets["batched"], opts["batched"], eps, cfg, engine="batched"),
        "batched-eager": eager,
    }
    cpu = {k: [] for k in names}
    wall = {k: [] for k in names}
    for rep in range(args.repeats + 1):  # repeat 0 warms up (and captures the CUDA graph)
        eps = sampler.batch(rep, cfg.meta_batch)
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            _sync(device)
            c, w = time.process_time(), time.perf_counter()
            runs[name](eps)
            _sync(device)
            if rep:
                cpu[name].append(time.process_time() - c)
                wall[name].append(time.perf_counter() - w)
    print(f"{args.config} configuration: {cfg.n_way}-way {cfg.k_shot}-shot, meta-batch "
          f"{cfg.meta_batch}, {cfg.inner_steps} inner steps, "
          f"{'first' if cfg.first_order else 'second'} order; device {device}, "
          f"{args.threads} thread(s), {args.repeats} meta-steps each")
    ref = nets["higher"]
    for name in names:
        diff = max((a - b).abs().max().item() for (n, a), b in
                   zip(ref.named_parameters(), nets[name].parameters())
                   if not n.endswith("conv.bias"))  # conv biases: see tests/test_engines.py
        print(f"{name:14s} CPU s/meta-step {statistics.median(cpu[name]):.4f} (median), "
              f"wall s/meta-step {statistics.median(wall[name]):.4f}; max weight difference "
              f"to higher after {args.repeats + 1} steps {diff:.1e}")
    med = {k: (statistics.median(cpu[k]), statistics.median(wall[k])) for k in names}
    if "bare" in med:
        print(f"overhead higher/bare: CPU {med['higher'][0] / med['bare'][0]:.3f}, "
              f"wall {med['higher'][1] / med['bare'][1]:.3f} (target <= 1.05)")
    for name in names:
        if name.startswith("batched"):
            print(f"speed-up higher/{name}: CPU {med['higher'][0] / med[name][0]:.2f}x, "
                  f"wall {med['higher'][1] / med[name][1]:.2f}x")
    if args.config == "paper":
        which = 0 if device.type == "cpu" else 1  # CPU time on a CPU (load-proof), else wall
        print(f"paper run (60000 steps) at these rates ({['CPU', 'wall'][which]} time): " +
              ", ".join(f"{k} {med[k][which] * 60000 / 3600:.1f} h" for k in names))
    if args.eval_tasks:
        for engine in ("higher", "batched"):
            c, w, acc = _evaluation_time(nets[engine], cfg, engine, args.eval_tasks,
                                         args.synthetic)
            print(f"evaluation of {args.eval_tasks} tasks ({cfg.inner_steps_eval} inner steps), "
                  f"{engine}: CPU {c:.2f} s, wall {w:.2f} s (mean accuracy {acc:.3f})")
    if args.profile:
        _profile(nets["batched"], opts["batched"], sampler.batch(0, cfg.meta_batch), cfg, device)


if __name__ == "__main__":
    main()
