"""A short MAML run on real Omniglot characters improves held-out accuracy."""
import json

import numpy as np

from repscope.training.checkpoint import load_meta_parameters, load_run
from repscope.training.config import get_preset
from repscope.training.evaluate import evaluate_tasks
from repscope.training.maml import train
from repscope.training.model import build_model
from repscope.training.tasks import task_samplers



def test_short_run_on_real_omniglot_improves_heldout_accuracy(tmp_path, data_root):
    cfg = get_preset("quick", n_way=5, meta_batch=4, inner_steps=1, inner_steps_eval=3,
                     n_query_eval=5, meta_lr=3e-3, steps=40, val_every=40, val_tasks=10,
                     test_tasks=10, lake_eval=True, checkpoint_every=40, progress=False,
                     data=str(data_root))
    result = train(cfg, tmp_path / "run", log=None)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in lines if r["kind"] == "val"] == [0, 40]
    assert [r["step"] for r in lines if r["kind"] == "train"] == list(range(1, 41))
    assert "20-way" in result["lake"]["skipped"]  # a 5-way network is not run on Lake's tasks

    # paired comparison on the same 40 held-out (validation-split) tasks
    config, ckpts = load_run(tmp_path / "run")
    val = task_samplers(config)["val"]
    tasks = [val.episode(i) for i in range(40)]
    acc = {}
    for step in (0, 40):
        model = load_meta_parameters(build_model(config), ckpts[step])
        acc[step] = evaluate_tasks(model, tasks, config)[:, -1]
    diff = acc[40] - acc[0]
    assert diff.mean() > 3 * diff.std(ddof=1) / np.sqrt(len(diff)), (acc[0].mean(), acc[40].mean())
    assert acc[40].mean() > 0.5  # chance is 0.2
