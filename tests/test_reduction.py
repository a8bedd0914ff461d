"""Per-layer reductions of recorded maps (the paper records conv4 after its spatial mean),
the analysis tasks' classes in the record, and the evaluation protocol options."""
import json

import numpy as np
import pytest

from repscope import probes
from repscope.training.config import get_preset
from repscope.training.errors import TrainingError
from repscope.training.maml import train
from repscope.training.record import RecordConfig, record_run
from repscope.training.record import main as record_main
from repscope.training.reduce_option import parse_reduce
from repscope.training.supervised import SupervisedConfig
from repscope.training.tasks import task_samplers

LAYERS = ["conv1", "conv2", "conv3", "conv4", "head"]


def test_parse_reduce_accepts_names_and_entries_and_rejects_the_rest():
    assert parse_reduce("none", LAYERS) == dict.fromkeys(LAYERS, "none")
    assert parse_reduce("paper", LAYERS)["conv4"] == "spatial_mean"
    assert parse_reduce("paper", ["conv1", "head"]) == {"conv1": "none", "head": "none"}
    got = parse_reduce("conv3=spatial_mean, conv4=spatial_mean", LAYERS)
    assert [k for k, v in got.items() if v == "spatial_mean"] == ["conv3", "conv4"]
    for bad, msg in (("mean", r"Unknown reduce \(--reduce\) 'mean'. Expected one of \['paper'"),
                     ("conv3=none,conv4=max", "entry 'conv4=max'"),
                     ("conv9=spatial_mean", "names layer 'conv9'")):
        with pytest.raises(TrainingError, match=msg):
            parse_reduce(bad, LAYERS)
    with pytest.raises(TrainingError, match="conv4=bogus"):
        RecordConfig(reduce="conv4=bogus")
    with pytest.raises(TrainingError, match="conv4=bogus"):
        SupervisedConfig(reduce="conv4=bogus")


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("maml") / "run"
    config = get_preset("quick", n_way=5, meta_batch=1, steps=1, val_every=0, test_tasks=0,
                        lake_eval=False, progress=False, data=str(data_root))
    train(config, out, log=None)
    return out


def test_default_recording_is_the_papers(run):
    rec = RecordConfig(tasks=9, inner_steps=(0, 1), eval_tasks=3, progress=False)
    ds = probes.open_run(record_run(run, rec, log=None))
    assert ds.sizes["unit_conv4"] == 64 and ds["conv4"].attrs["reduction"] == "spatial_mean"
    assert ds.sizes["unit_conv3"] == 64 * 4 * 4 and ds["conv3"].attrs["reduction"] == "none"
    classes = json.loads(ds.attrs["task_classes"])  # 35 held-out classes, 5-way, fixed order
    assert classes[0] == classes[7] == [0, 1, 2, 3, 4] and classes[8] == [5, 6, 7, 8, 9]
    assert ds["eval_accuracy"].attrs["inner_steps"] == 5  # the paper's figure 4


def test_cli_reduce_error_writes_nothing(run, tmp_path, capsys):
    out = tmp_path / "acts"
    with pytest.raises(SystemExit) as exc:  # refused by the parser
        record_main(["--run", str(run), "--out", str(out), "--reduce", "conv4=avg", "--no-progress"])
    assert exc.value.code == 2 and "conv4=avg" in capsys.readouterr().err and not out.exists()


def test_rotate_eval_rotates_held_out_tasks_only_when_asked(data_root):
    plain = task_samplers(get_preset("quick", data=str(data_root)))
    rotated = task_samplers(get_preset("quick", data=str(data_root), rotate_eval=True))
    for split in ("val", "test"):
        a, b = plain[split].episode(0), rotated[split].episode(0)
        assert np.array_equal(a.support_y, b.support_y)
        assert not np.array_equal(a.support_x, b.support_x)  # some class turned by 90-270 degrees
    assert get_preset("omniglot-20way-1shot").rotate_eval
    assert get_preset("miniimagenet-5way-1shot").n_query_eval == 1  # cbfinn/maml's test protocol


def test_findings_on_a_real_recorded_run_use_disjoint_tasks(tmp_path, data_root):
    """The user path on real data: train, record (paper defaults), analyse, read findings.md."""
    from repscope.analyses import layer_similarity

    run = tmp_path / "tiny"
    train(get_preset("quick", n_way=5, meta_batch=1, steps=4, checkpoint_every=2, val_every=0,
                     test_tasks=0, lake_eval=False, progress=False, data=str(data_root)), run, log=None)
    record_run(run, RecordConfig(tasks=9, inner_steps=(0, 1, 10), eval_tasks=4, progress=False), log=None)
    out = tmp_path / "results"
    assert layer_similarity.main(["--maml-run", str(run), "--results", str(out), "--measures", "rsa",
                                  "--formats", "png"]) == 0
    text = (out / "findings.md").read_text()
    # 35 held-out characters, 5-way: tasks 0-6 are disjoint, 7 and 8 reuse characters of 0 and 1
    assert "7 of 9 analysed tasks whose characters are pairwise disjoint (tasks [0, 1, 2, 3, 4, 5, 6]" in text
    assert "meta-trained with 1 inner steps" in text and "inner step 1." in text
    assert "| 4 | " in text  # F1 row of the last checkpoint, with its CI
    assert "F2 (exact, gap 1000 steps): **not testable with this run**" in text
    assert "too noisy to locate a plateau" in text  # 4 evaluation tasks cannot tell
