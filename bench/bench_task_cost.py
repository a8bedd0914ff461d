"""What one task costs, for sizing a CPU preset: CPU seconds per meta-training task and
per evaluation task, and their ratios.

Meta-training tasks: 20-way (and 5-way) 1-shot, 5 second-order inner steps, one
meta-step per meta-batch size, the meta-batch sizes interleaved step by step in one
process so that machine load hits them alike; CPU (process) time, which load inflates
far less than wall time. Evaluation tasks: 10 first-order inner steps and the query
accuracy after each (:func:`repscope.training.evaluate.evaluate_tasks`).

Run: ``python bench/bench_task_cost.py [--batches 1,2,4] [--repeats 6] [--data DIR]``.
"""
import argparse
import statistics
import time

import torch

from repscope.training.config import get_preset
from repscope.training.evaluate import evaluate_tasks
from repscope.training.engines import meta_step
from repscope.training.model import build_model
from repscope.training.tasks import task_samplers


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,2,4", help="meta-batch sizes, comma-separated")
    p.add_argument("--repeats", type=int, default=6, help="timed meta-steps per variant")
    p.add_argument("--data", default=None, help="data folder (default $REPSCOPE_DATA)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    batches = [int(b) for b in args.batches.split(",")]
    per_task = {}
    for n_way in (20, 5):
        cfgs = {b: get_preset("medium", n_way=n_way, meta_batch=b, data=args.data) for b in batches}
        sampler = task_samplers(cfgs[batches[0]])["train"]
        models = {}
        for b in batches:
            torch.manual_seed(0)
            m = build_model(cfgs[b])
            models[b] = (m, torch.optim.Adam(m.parameters(), 1e-3))
        cpu = {b: [] for b in batches}
        for rep in range(args.repeats + 1):  # repeat 0 warms up
            for b in batches:
                c = time.process_time()
                meta_step(*models[b], sampler.batch(rep, b), cfgs[b])
                if rep:
                    cpu[b].append(time.process_time() - c)
        for b in batches:
            med = statistics.median(cpu[b])
            print(f"{n_way:2d}-way 1-shot, 5 inner steps, second order, meta-batch {b}: "
                  f"CPU s/meta-step {med:.3f}, per task {med / b:.3f}")
        per_task[n_way] = statistics.median(cpu[batches[-1]]) / batches[-1]
    cfg = get_preset("medium", data=args.data)
    test = task_samplers(cfg)["test"]
    model = build_model(cfg)
    episodes = [test.episode(i) for i in range(21)]
    evaluate_tasks(model, episodes[:1], cfg, 10)  # warm-up
    c = time.process_time()
    evaluate_tasks(model, episodes[1:], cfg, 10)
    ev = (time.process_time() - c) / 20
    print(f"evaluation task, 20-way, 10 inner steps: CPU s {ev:.3f}")
    print(f"ratios: 5-way / 20-way meta-training task {per_task[5] / per_task[20]:.2f}; "
          f"evaluation / 20-way meta-training task {ev / per_task[20]:.2f}")


if __name__ == "__main__":
    main()
