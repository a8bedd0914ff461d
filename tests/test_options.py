"""Every command-line option is checked before anything is written, naming option, value
and what is allowed; ``--threads`` means the same in all three command lines."""
import re

import pytest
import torch

from repscope.training import maml, record, supervised
from repscope.training.config import get_preset
from repscope.training.errors import TrainingError

MAML_BAD = [
    (["--inner-lr", "-1"], r"inner_lr \(--inner-lr\) must be a finite number > 0, got -1.0"),
    (["--meta-lr", "-1"], r"meta_lr \(--meta-lr\) must be a finite number > 0, got -1.0"),
    (["--meta-lr", "nan"], r"meta_lr \(--meta-lr\) must be a finite number > 0, got nan"),
    (["--n-filters", "0"], r"n_filters \(--n-filters\) must be an integer >= 1, got 0"),
    (["--stride", "0"], r"stride \(--stride\) must be an integer >= 1, got 0"),
    (["--in-channels", "3"], r"in_channels \(--in-channels\) must be 1 for dataset 'omniglot'"),
    (["--image-size", "0"], r"image_size \(--image-size\) must be an integer >= 1, got 0"),
    (["--image-size", "32"], r"image_size \(--image-size\) must be 28 for dataset 'omniglot'"),
    (["--threads", "-1"], r"threads \(--threads\) must be an integer >= 0 \(0: torch's "
                          r"default\), got -1"),
    (["--meta-clip", "0"], r"meta_clip \(--meta-clip\) must be a finite number > 0, got 0.0"),
]


@pytest.mark.parametrize("argv, message", MAML_BAD)
def test_maml_refuses_bad_options_before_writing(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert maml.main(["--out", str(out), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(message, err), err
    assert not out.exists()


def test_miniimagenet_image_size_and_pool_must_leave_pixels():
    with pytest.raises(TrainingError, match=r"image_size \(--image-size\) 8 is too small"):
        get_preset("miniimagenet-5way-1shot", image_size=8)
    with pytest.raises(TrainingError, match=r"in_channels \(--in-channels\) must be 3"):
        get_preset("miniimagenet-5way-1shot", in_channels=1)


def test_device_cuda_without_cuda_is_refused_before_writing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert maml.main(["--out", str(tmp_path / "m"), "--device", "cuda"]) == 2
    assert supervised.main(["--out", str(tmp_path / "s"), "--device", "cuda"]) == 2
    assert record.main(["--run", str(tmp_path / "r"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("device (--device) 'cuda' was requested") == 3, err
    assert not any(tmp_path.iterdir())


SUPERVISED_BAD = [
    (["--threads", "-1"], r"threads \(--threads\) must be an integer >= 0"),
    (["--lr", "inf"], r"lr \(--lr\) must be a finite number > 0, got inf"),
]


@pytest.mark.parametrize("argv, message", SUPERVISED_BAD)
def test_supervised_refuses_bad_options_before_writing(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert supervised.main(["--out", str(out), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not out.exists()


RECORD_BAD = [
    (["--threads", "-3"], r"threads \(--threads\) must be an integer >= 0"),
    (["--tasks", "0"], r"tasks \(--tasks\) must be an integer >= 1, got 0"),
    (["--probe-index", "-1"], r"probe_index \(--probe-index\) must be an integer >= 0"),
]


@pytest.mark.parametrize("argv, message", RECORD_BAD)
def test_record_refuses_bad_options_before_writing(tmp_path, capsys, argv, message):
    run = tmp_path / "run"
    run.mkdir()
    assert record.main(["--run", str(run), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not any(run.iterdir())


PARSER_REFUSES = [  # a value outside a declared list is refused by the parser, which lists the allowed ones
    (supervised, ["--reduce", "bogus"], r"argument --reduce: Unknown reduce \(--reduce\) 'bogus'. "
                                        r"Expected one of \['paper', 'none', 'spatial_mean'\] or "
                                        r"comma-separated LAYER=REDUCTION"),
    (supervised, ["--dtype", "int8"], r"argument --dtype: invalid choice: 'int8' \(choose from "
                                      r"'float32', 'float16'\)"),
    (record, ["--layers", "nosuch"], r"argument --layers: invalid choice: 'nosuch' \(choose from "
                                     r"conv1, conv2, conv3, conv4, head\)"),
    (record, ["--engine", "jax"], r"argument --engine: invalid choice: 'jax' \(choose from"),
    (maml, ["--dataset", "cifar"], r"argument --dataset: invalid choice: 'cifar' \(choose from "
                                   r"'omniglot', 'miniimagenet'\)"),
    (maml, ["--device", "tpu"], r"argument --device: invalid choice: 'tpu' \(choose from 'cpu', 'cuda'\)"),
]


@pytest.mark.parametrize("command, argv, message", PARSER_REFUSES)
def test_the_parser_refuses_unknown_choices_with_the_allowed_ones(tmp_path, capsys, command, argv,
                                                                  message):
    flag = "--run" if command is record else "--out"
    with pytest.raises(SystemExit) as exc:
        command.main([flag, str(tmp_path / "run"), *argv])
    assert exc.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not any(tmp_path.iterdir())


def test_record_inner_steps_that_are_not_integers(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        record.main(["--run", str(tmp_path), "--inner-steps", "0,one"])
    assert exc.value.code == 2
    assert "argument --inner-steps: expected comma-separated integers" in capsys.readouterr().err


def test_threads_zero_keeps_torchs_default_in_all_three(tmp_path, data_root):
    """One meaning: 0 keeps torch's thread setting (it used to crash the MAML run)."""
    torch.set_num_threads(1)
    cfg = get_preset("quick", n_way=5, meta_batch=1, steps=1, val_every=0, test_tasks=0,
                     lake_eval=False, progress=False, threads=0, data=str(data_root))
    seen = []
    maml.train(cfg, tmp_path / "run", log=None, on_step=lambda s: seen.append(
        torch.get_num_threads()))
    assert seen == [1] and torch.get_num_threads() == 1
    assert record.RecordConfig(threads=0).threads == 0
    assert supervised.SupervisedConfig(threads=0).threads == 0
    with pytest.raises(TrainingError, match=r"threads \(--threads\)"):
        record.RecordConfig(threads=-3)
    # older config.json files stored None for torch's default
    assert get_preset("quick", threads=None).threads == 0
