"""``--seeds``: several seeds trained in parallel processes, each analysed alone and pooled."""
import json

import pytest

from repscope import reproduce
from test_analyses_data import make_supervised, write_run

# A few real meta-steps per seed: enough for a record, fast enough for a test.
TINY_TRAINING = ["--steps", "20", "--checkpoint-every", "10", "--val-every", "10",
                 "--val-tasks", "4", "--test-tasks", "8", "--no-lake-eval"]


@pytest.fixture(scope="module")
def seeded(data_root, tmp_path_factory):
    """``--preset quick --seeds 0,1,2 --jobs 2`` on real data, seed 2's training failing."""
    root = tmp_path_factory.mktemp("seeds")
    runs, results = root / "runs", root / "results"
    write_run(make_supervised(data_root, steps=(0, 5, 10, 15), n_stimuli=20),
              runs / "mnist" / "activations")
    (runs / "mnist" / "summary.json").write_text("{}")  # a finished control: skipped
    real, log = reproduce._stage, []

    def stage(cmd, what, log_path=None):
        log.append((what, log_path))
        if "repscope.training.maml" in cmd:
            cmd = cmd + TINY_TRAINING + (["--n-way", "nonsense"] if "seed 2" in what else [])
        if "repscope.training.record" in cmd:
            cmd = cmd + ["--eval-tasks", "10", "--tasks", "4"]
        return real(cmd, what, log_path)

    mp = pytest.MonkeyPatch()
    mp.setattr(reproduce, "_stage", stage)
    try:
        rc = reproduce.main(["--preset", "quick", "--seeds", "0,1,2", "--jobs", "2", "--runs-dir",
                             str(runs), "--results", str(results), "--measures", "rsa",
                             "--formats", "png", "--data", str(data_root)])
    finally:
        mp.undo()
    return rc, runs, results, log


def test_each_seed_is_trained_in_its_own_folder_with_its_seed(seeded):
    rc, runs, _, log = seeded
    assert rc == 0
    for seed in (0, 1):
        config = json.loads((runs / "quick" / f"seed_{seed}" / "config.json").read_text())
        assert config["seed"] == seed
        assert list((runs / "quick" / f"seed_{seed}" / "activations").glob("checkpoint_*.nc"))
    # two jobs at once: each stage's output went to its run's log file, not the terminal
    assert all(path is not None for _, path in log)
    assert (runs / "quick" / "seed_0.log").is_file()
    assert not any("MNIST" in what for what, _ in log)  # the finished control was skipped


def test_findings_hold_each_seed_and_the_pooled_verdict(seeded):
    _, _, results, _ = seeded
    for seed in (0, 1):
        assert (results / "quick" / f"seed_{seed}" / "findings.md").is_file()
        assert (results / "quick" / f"seed_{seed}" / "fig1a.png").is_file()
    pooled = (results / "quick" / "findings.md").read_text()
    assert "Findings over seeds: rsa" in pooled
    assert "seed 2" in pooled and "failed" in pooled  # the failed seed is named
    top = (results / "findings.md").read_text()
    assert "quick: 2 of 3 seeds" in top
    assert (results / "quick" / "fig1a_seeds.png").is_file()


def test_a_failed_seed_names_its_command_and_log(seeded):
    _, runs, results, _ = seeded
    pooled = (results / "quick" / "findings.md").read_text()
    assert "train quick seed 2 failed with exit code 2" in pooled
    assert "--n-way" in (runs / "quick" / "seed_2.log").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0"], "--seeds '0' is not allowed; expected a count N >= 1"),
    (["--seeds", "-2"], "--seeds '-2' is not allowed"),
    (["--seeds", "1,1"], "--seeds '1,1' names seed 1 twice"),
    (["--seeds", "0,-1"], "--seeds '0,-1' holds a negative seed"),
    (["--seeds", "two"], "--seeds 'two' is not a number"),
    (["--seeds", "2", "--jobs", "3"], "--jobs 3 is more than the 2 seeds to train; expected 1 to 2"),
    (["--seeds", "2", "--jobs", "0"], "--jobs 0 is not allowed; expected 1 to 2"),
    (["--jobs", "2"], "--jobs 2 is more than the 1 seeds to train"),
])
def test_bad_seed_options_are_refused_before_anything_is_written(tmp_path, capsys, argv, message):
    rc = reproduce.main(argv + ["--runs-dir", str(tmp_path / "runs"), "--results",
                                str(tmp_path / "results")])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def test_seeds_do_not_apply_to_named_runs(data_root, tmp_path, capsys):
    write_run(make_supervised(data_root, steps=(0, 5), n_stimuli=20), tmp_path / "mnist" / "activations")
    rc = reproduce.main(["--mnist-run", str(tmp_path / "mnist"), "--seeds", "2", "--results",
                         str(tmp_path / "results")])
    assert rc == 2
    assert "--seeds '2' trains the preset's seeds" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_the_plateau_preset_trains_three_seeds_by_default():
    assert reproduce.parse_seeds(None, reproduce.REPRODUCTIONS["omniglot-5way-cpu"]["seeds"]) == (0, 1, 2)
    assert reproduce.LayerSimilarityOptions().preset == "small"


def test_one_seed_trains_the_control_beside_it_on_a_second_core(tmp_path):
    calls = []
    runs, mnist = reproduce.train_and_record("small", tmp_path, beside=True,
                                             run=lambda cmd, what, log=None: calls.append((what, log)))
    assert runs == [tmp_path / "small"] and mnist == tmp_path / "mnist"
    assert ("train the supervised MNIST control", tmp_path / "mnist.log") in calls
    assert ("train small", None) in calls and ("record small", None) in calls
