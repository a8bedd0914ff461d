"""One consistent command line: every command's options come from its settings dataclass
through ``repscope.training.cli``, in argument groups, with declared choices, defaults
shown one way (as resolved for the chosen preset), ``--show-config``, and the absolute
path of what was written on the last line."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version

import pytest

import repscope
from repscope import feature_reuse, reproduce
from repscope.training import cli, maml, record, supervised

PARSERS = {  # command: (parser, the groups it shows)
    "maml": (lambda: maml._parser("quick"), ["preset", "data and tasks", "model", "inner loop",
                                             "outer loop", "evaluation", "checkpoints", "runtime"]),
    "record": (record._parser, ["run and data", "analysis tasks", "inner loop", "recording",
                                "runtime"]),
    "supervised": (supervised._parser, ["data", "training", "recording", "output", "runtime"]),
    "layer-similarity": (reproduce._parser, ["what to analyse", "measures", "findings", "output",
                                             "runtime"]),
    "feature-reuse": (feature_reuse._parser, ["what to analyse", "analysis", "output"]),
}


def _help(parser) -> str:
    return parser.format_help()


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_command_shows_its_options_in_groups(name):
    build, titles = PARSERS[name]
    parser = build()
    groups = [g.title for g in parser._action_groups if g._group_actions]
    assert groups == ["options", *titles]
    text = _help(parser)
    assert "--show-config" in text
    # one way of showing defaults: "(default: VALUE)" as typed, never "None" or twice
    assert "(default: None)" not in text and "default: CPU" not in text
    for option in re.split(r"\n  (?=-)", text):
        assert option.count("(default:") <= 1, option
    # help speaks to users: no source file, no internal wording
    body = text.replace(parser.prog, "")
    assert not re.search(r"[\w/]+\.py\b", body), re.search(r"[\w/]+\.py\b", body)
    assert "this machine" not in body and "shared/data" not in body


def test_maml_help_shows_the_defaults_of_the_chosen_preset(capsys):
    for preset, steps in (("quick", 750), ("medium", 2400), ("omniglot-20way-1shot", 60000)):
        with pytest.raises(SystemExit) as exc:
            maml.main(["--preset", preset, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert re.search(rf"--steps N\s+Meta-training steps\. \(default: {steps}\)", text), preset
        assert f"preset {preset!r}" in " ".join(text.split())


def test_show_config_prints_the_resolved_configuration_without_writing(tmp_path, capsys):
    assert maml.main(["--preset", "medium", "--meta-lr", "0.01", "--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["preset"], shown["steps"], shown["meta_lr"], shown["engine"]) == (
        "medium", 2400, 0.01, "batched")
    assert supervised.main(["--steps", "7", "--show-config"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 7
    assert record.main(["--run", str(tmp_path / "run"), "--inner-steps", "0,3",
                        "--show-config"]) == 0
    assert json.loads(capsys.readouterr().out)["inner_steps"] == [0, 3]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("command, argv, message", [
    (maml, ["--n-way", "0"], "n_way (--n-way) must be an integer >= 1, got 0"),
    (supervised, ["--lr", "-1"], "lr (--lr) must be a finite number > 0"),
    (record, ["--run", "r", "--tasks", "0"], "tasks (--tasks) must be an integer >= 1"),
])
def test_show_config_with_an_invalid_option_reports_the_error(capsys, command, argv, message):
    assert command.main([*argv, "--show-config"]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_the_required_options_are_still_required_without_show_config(capsys):
    for command in (maml, supervised, record):
        with pytest.raises(SystemExit) as exc:
            command.main([])
        assert exc.value.code == 2
        assert "the following arguments are required: --" in capsys.readouterr().err


def test_the_helper_refuses_a_setting_left_out_or_undocumented():
    @dataclass
    class S:
        a: int = cli.setting(1, "A.")
        b: int = 2

    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        cli.build_parser("demo", "Demo.", S, {"g": ["a"]})
    with pytest.raises(ValueError, match="'b' has no help text"):
        cli.build_parser("demo", "Demo.", S, {"g": ["a", "b"]})


def test_repscope_version_and_help(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "repscope", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    done = run("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"repscope {version('repscope')}"
    done = run("--help")
    assert done.returncode == 0
    for name, command in repscope.COMMANDS.items():
        assert "\n" not in command.summary and len(command.summary) <= 72
        assert re.search(rf"^  {re.escape(name)} +{re.escape(command.summary)}$", done.stdout,
                         re.MULTILINE), done.stdout


def test_every_command_ends_with_the_absolute_path_it_wrote(tmp_path, data_root, capsys,
                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert maml.main(["--out", "run", "--n-way", "5", "--meta-batch", "1", "--steps", "1",
                      "--val-every", "0", "--test-tasks", "0", "--no-lake-eval", "--no-progress",
                      "--data", str(data_root)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"run folder written to {tmp_path / 'run'}"
    assert record.main(["--run", "run", "--out", "acts", "--tasks", "1", "--eval-tasks", "0",
                        "--checkpoints", "1", "--inner-steps", "0", "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"activation records written to {tmp_path / 'acts'}")
    assert supervised.main(["--out", "mnist", "--mnist", "offline", "--steps", "2",
                            "--n-probe", "10", "--no-progress", "--data", str(data_root)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"run folder written to {tmp_path / 'mnist'}")
