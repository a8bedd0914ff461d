"""The main entry on existing runs (hand-made contract records written to netCDF)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from repscope import reproduce
from repscope.analyses import layer_similarity
from repscope.analyses.saving import load_netcdf
from test_analyses_data import make_claims_record, make_record, make_supervised, write_run

SCRIPT = Path(__file__).resolve().parents[1] / "analyses" / "layer_similarity.py"


@pytest.fixture(scope="module")
def runs(data_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    write_run(make_claims_record(data_root), root / "quick" / "activations")
    write_run(make_supervised(data_root, steps=(0, 5, 10, 15), n_stimuli=20), root / "mnist" / "activations")
    return root


def test_main_analyses_existing_runs_and_writes_findings(runs, tmp_path, capsys):
    out = tmp_path / "results"
    rc = layer_similarity.main(["--maml-run", str(runs / "quick"), "--mnist-run", str(runs / "mnist"),
                                "--results", str(out), "--meta-gap", "250"])
    assert rc == 0
    for name in ("fig1a", "fig1b", "fig3", "fig4", "fig5"):
        for ext in ("png", "pdf", "nc"):
            assert (out / "quick" / f"{name}.{ext}").is_file()
    assert (out / "mnist" / "fig2.nc").is_file()
    text = (out / "findings.md").read_text()
    for claim in ("F1", "F2", "F3"):
        assert f"## {claim}" in text
    # numbers with confidence intervals, e.g. "0.6607 [0.5705, 0.7262]"
    assert len(re.findall(r"-?\d+\.\d+(?:e-?\d+)? \[-?\d+\.\d+(?:e-?\d+)?, -?\d+\.\d+(?:e-?\d+)?\]", text)) >= 9
    assert "supervised MNIST control" in text.lower() or "Supervised MNIST control" in text
    assert "F2 (exact, gap 250 steps): **supported**" in text  # the record is built for the claims
    assert "scale-relative: 250/60000 of this run's 3000 steps" in text
    assert not list(out.rglob(".*.tmp-*"))  # atomic writes leave no temporaries
    cfg = load_netcdf(out / "quick" / "fig1a.nc").attrs["analysis_config"]
    assert '"rdm_method": "correlation"' in cfg


def test_run_option_detects_the_kind_of_record(runs, tmp_path):
    out = tmp_path / "r"
    rc = layer_similarity.main(["--run", str(runs / "mnist"), "--run", str(runs / "quick" / "activations"),
                                "--results", str(out), "--measures", "rsa",
                                "--mds-mode", "precomputed", "--formats", "png"])
    assert rc == 0
    assert (out / "mnist" / "fig2.png").is_file() and (out / "activations" / "fig1a.png").is_file()
    assert not (out / "mnist" / "fig2.pdf").exists()


def test_errors_are_reported_not_raised(runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:  # a measure outside the registry: the parser refuses it
        layer_similarity.main(["--maml-run", str(runs / "quick"), "--measures", "rsa,cka",
                               "--results", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --measures: invalid choice: 'cka'" in err and "cka_linear" in err
    assert layer_similarity.main(["--maml-run", str(tmp_path / "nothing"), "--results", str(tmp_path)]) == 2


def test_script_help_runs_from_a_plain_python_call():
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for opt in ("--preset", "--maml-run", "--mnist-run", "--run", "--redraw", "--rdm-method", "--device"):
        assert opt in done.stdout


def test_option_choices_are_the_registries():
    from repscope.analyses.mds import MDS_MODES
    from repscope.analyses.rdms import RDM_METHODS
    from repscope.analyses.task_units import CI_UNITS
    from repscope.analyses.uncertainty import BANDS

    choices = {a.dest: a.choices for a in reproduce._parser()._actions}
    assert set(choices["rdm_method"]) == set(RDM_METHODS)
    assert set(choices["mds_mode"]) == set(MDS_MODES)
    assert set(choices["band"]) == set(BANDS) and set(choices["ci_unit"]) == set(CI_UNITS)


def test_medium_preset_runs_its_own_stages(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(reproduce, "_stage", lambda cmd, what: calls.append(cmd[1:]))
    monkeypatch.delenv("REPSCOPE_DATA", raising=False)
    runs, _ = reproduce.train_and_record("medium", tmp_path)
    assert runs == [tmp_path / "medium"]
    assert calls[0] == ["-m", "repscope.training.maml", "--preset", "medium", "--out", str(tmp_path / "medium")]
    assert calls[1][calls[1].index("--tasks") + 1] == "5"


def test_medium_preset_records_saved_checkpoints_at_the_scaled_gaps():
    """The analysis preset names checkpoints the training preset saves, pairs at 1000/60000
    and 10000/60000 of the run after its middle, and as many tasks as disjoint characters allow."""
    from repscope.analyses.plateau import gap_pairs, scaled_gap
    from repscope.training.config import checkpoint_steps, get_preset

    cfg = get_preset("medium")
    assert (cfg.n_way, cfg.k_shot, cfg.inner_steps, cfg.first_order) == (20, 1, 5, False)
    rec = reproduce.REPRODUCTIONS["medium"]["record"]
    ck = [int(c) for c in rec[rec.index("--checkpoints") + 1].split(",")]
    assert set(ck) <= set(checkpoint_steps(cfg)) and ck[-1] == cfg.steps
    for gap in (scaled_gap(1000, cfg.steps), scaled_gap(10000, cfg.steps)):
        assert len(gap_pairs(ck, gap, start=cfg.steps // 2)) >= 6
    tasks = int(rec[rec.index("--tasks") + 1])
    assert tasks * cfg.n_way <= cfg.n_test  # every analysed task uses its own characters
    assert len(ck) <= 20  # recording cost: ~12 s per checkpoint on one CPU core


def test_per_figure_options_reach_the_analysis(runs, tmp_path, capsys):
    out = tmp_path / "pf"
    rc = layer_similarity.main(["--mnist-run", str(runs / "mnist"), "--results", str(out), "--formats", "png",
                                "--figure-measures", "2=rsa", "--figure-rdm-method", "2=cosine"])
    assert rc == 0
    fig2 = load_netcdf(out / "mnist" / "fig2.nc")
    assert list(fig2.data_vars) == ["rsa"] and "cosine" in fig2["rsa"].attrs["options"]
    assert layer_similarity.main(["--mnist-run", str(runs / "mnist"), "--results", str(out),
                                  "--figure-rdm-method", "2:cosine"]) == 2
    assert "Expected FIG=VALUE" in capsys.readouterr().err


def test_orchestration_runs_only_missing_stages_with_the_contract_command_lines(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(reproduce, "_stage", lambda cmd, what: calls.append(cmd[1:]))
    monkeypatch.setenv("REPSCOPE_DATA", "/data")
    runs, mnist = reproduce.train_and_record("quick", tmp_path)
    assert runs == [tmp_path / "quick"] and mnist == tmp_path / "mnist"
    assert calls[0] == ["-m", "repscope.training.maml", "--preset", "quick", "--out", str(tmp_path / "quick"),
                        "--data", "/data"]
    assert calls[1][:4] == ["-m", "repscope.training.record", "--run", str(tmp_path / "quick")]
    assert "--inner-steps" in calls[1] and calls[1][-2:] == ["--data", "/data"]
    assert calls[2] == ["-m", "repscope.training.supervised", "--out", str(tmp_path / "mnist"), "--data", "/data"]
    # interrupted training resumes; finished stages are skipped
    ck = tmp_path / "quick" / "checkpoints"
    ck.mkdir(parents=True)
    (tmp_path / "quick" / "config.json").write_text('{"steps": 1000}')
    (ck / "step_00000500.pt").write_bytes(b"")
    activations = tmp_path / "quick" / "activations"
    activations.mkdir()
    (activations / "checkpoint_00000500.nc").write_bytes(b"")
    (tmp_path / "mnist" / "activations").mkdir(parents=True)
    (tmp_path / "mnist" / "activations" / "checkpoint_00000000.nc").write_bytes(b"")
    (tmp_path / "mnist" / "summary.json").write_text("{}")
    calls.clear()
    reproduce.train_and_record("quick", tmp_path)
    assert calls == [["-m", "repscope.training.maml", "--preset", "quick", "--out", str(tmp_path / "quick"),
                      "--resume", "--data", "/data"]]
    # training done, a checkpoint not yet recorded: the recording resumes
    (ck / "step_00001000.pt").write_bytes(b"")
    calls.clear()
    reproduce.train_and_record("quick", tmp_path)
    assert [c[:2] for c in calls] == [["-m", "repscope.training.record"]]
    (activations / "checkpoint_00001000.nc").write_bytes(b"")
    calls.clear()
    reproduce.train_and_record("quick", tmp_path)
    assert calls == []


def test_no_module_in_analyses_shadows_another_top_level_module():
    """Run as a script, analyses/ is sys.path[0]: its files must not hide stdlib or installed modules."""
    import pkgutil

    folder = SCRIPT.parent
    ours = {p.stem for p in folder.glob("*.py")} - {"__init__"}
    elsewhere = {m.name for m in pkgutil.iter_modules()
                 if Path(getattr(m.module_finder, "path", "")) != folder}
    assert not ours & (set(sys.stdlib_module_names) | elsewhere)


def test_a_maml_record_with_one_task_and_inner_step_0_is_analysed_as_maml(data_root, tmp_path):
    """The kind comes from the recorder's ``kind``, not from the shape (issue 10)."""
    from repscope.analyses.pipeline import is_supervised

    one = make_record(data_root, checkpoints=(0, 1000), n_tasks=1, inner_steps=(0,), n_stimuli=12)
    assert not is_supervised(one)
    assert is_supervised(make_supervised(data_root, steps=(0, 5), n_stimuli=12))
    write_run(one, tmp_path / "one" / "activations")
    out = tmp_path / "r"
    rc = layer_similarity.main(["--run", str(tmp_path / "one"), "--results", str(out), "--measures", "rsa",
                                "--formats", "png"])
    assert rc == 0
    assert (out / "one" / "fig1a.nc").is_file() and not (out / "one" / "fig2.nc").exists()


def test_a_record_without_a_kind_is_refused_with_the_fix(data_root, tmp_path, capsys):
    ds = make_record(data_root, checkpoints=(0, 1000), n_tasks=1, inner_steps=(0,), n_stimuli=12)
    ds.attrs["config"] = "{}"
    write_run(ds, tmp_path / "old" / "activations")
    rc = layer_similarity.main(["--run", str(tmp_path / "old"), "--results", str(tmp_path / "r")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "kind None" in err and "--maml-run" in err


@pytest.mark.parametrize("argv,named", [
    (["--formats", "bogus"], "formats (--formats) = 'bogus' is not allowed; expected one or more of"),
    (["--formats", ""], "formats (--formats) = '' is not allowed"),
    (["--measures", "rsa,rsa"], "measures (--measures) = ('rsa', 'rsa')"),
    (["--meta-gap", "0"], "meta_gap (--meta-gap) = 0 is not allowed; expected a whole number >= 1"),
    (["--seed", "-1"], "seed (--seed) = -1"),
    (["--mnist-run", "nowhere"], "--mnist-run nowhere: no activation record there"),
])
def test_bad_options_are_refused_before_anything_is_computed_or_written(runs, tmp_path, capsys, monkeypatch,
                                                                         argv, named):
    from repscope.analyses import pipeline

    def forbidden(*a, **k):
        raise AssertionError("the analysis ran before the options were checked")

    monkeypatch.setattr(pipeline, "analyse_maml", forbidden)
    monkeypatch.setattr(pipeline, "analyse_supervised", forbidden)
    monkeypatch.setattr(reproduce, "_stage", forbidden)
    out = tmp_path / "results"
    rc = layer_similarity.main(["--maml-run", str(runs / "quick"), "--results", str(out)] + argv)
    assert rc == 2
    assert named in capsys.readouterr().err
    assert not out.exists()


def test_the_paper_preset_finds_miniimagenet_where_the_loader_looks(tmp_path, monkeypatch):
    """No data folder named: Mini-ImageNet is read from the download cache under
    $XDG_CACHE_HOME, as training reads it, and trained only when it is there."""
    calls = []
    monkeypatch.setattr(reproduce, "_stage", lambda cmd, what: calls.append(cmd[1:]))
    for name in ("REPSCOPE_DATA", "REPSCOPE_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    trained = lambda: [c[c.index("--preset") + 1] for c in calls if "--preset" in c]  # noqa: E731
    reproduce.train_and_record("paper", tmp_path / "runs")
    assert trained() == ["omniglot-20way-1shot"]
    folder = tmp_path / "xdg" / "repscope" / "data" / "miniimagenet"
    (folder / "images").mkdir(parents=True)
    (folder / "train.csv").write_text("filename,label\n")
    calls.clear()
    runs, _ = reproduce.train_and_record("paper", tmp_path / "runs")
    assert trained() == ["omniglot-20way-1shot", "miniimagenet-5way-1shot"]
    assert runs[-1] == tmp_path / "runs" / "miniimagenet-5way-1shot"


def test_medium_steps_come_from_the_training_preset(monkeypatch):
    from repscope.training.config import get_preset

    cfg = get_preset("medium")
    rec = reproduce.REPRODUCTIONS["medium"]["record"]
    ck = [int(c) for c in rec[rec.index("--checkpoints") + 1].split(",")]
    assert ck[-1] == cfg.steps and cfg.steps - cfg.checkpoint_every in ck
    assert reproduce.REPRODUCTIONS["medium"]["analysis"]["fig1b_gap"] == 5 * cfg.checkpoint_every


def test_show_config_prints_the_resolved_configuration_and_stops(tmp_path, capsys, monkeypatch):
    import json

    monkeypatch.setattr(reproduce, "_stage", lambda *a: pytest.fail("--show-config trained"))
    assert reproduce.main(["--preset", "medium", "--runs-dir", str(tmp_path / "runs"),
                           "--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["options"]["preset"] == "medium" and shown["analysis"]["fig1b_gap"] == 200
    assert not (tmp_path / "runs").exists()
    assert reproduce.main(["--meta-gap", "0", "--show-config"]) == 2  # the error, not a config
    captured = capsys.readouterr()
    assert "meta_gap (--meta-gap) = 0" in captured.err and captured.out == ""


def test_the_last_line_names_the_absolute_results_folder(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert reproduce.main(["--mnist-run", str(runs / "mnist"), "--results", "res", "--formats", "png",
                          ]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"figures, their values and findings.md written to {tmp_path / 'res'}"
