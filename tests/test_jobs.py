"""The job scheduler behind ``--seeds N --jobs K``: priority, prerequisites, failures, and
the recording that spreads over the cores it finds free.

Timing never decides an assertion: jobs that must overlap wait on each other's events.
"""
import threading

import pytest

from repscope import reproduce
from repscope.analyses.errors import AnalysisError
from repscope.jobs import Job, run_jobs

WAIT = 60  # seconds an event may take before the test fails instead of hanging


def _recorder(log):
    def job(key, fail=False):
        def work(width):
            log.append((key, width))
            if fail:
                raise AnalysisError(f"{key} failed")
            return key
        return work
    return job


def test_one_core_runs_the_jobs_in_priority_order_after_their_prerequisites():
    log = []
    job = _recorder(log)
    out = run_jobs([Job("a", job("a")), Job("b", job("b")),
                    Job("rec a", job("rec a"), after=("a",), wide=True),
                    Job("rec b", job("rec b"), after=("b",), wide=True)], cores=1)
    assert log == [("a", 1), ("b", 1), ("rec a", 1), ("rec b", 1)]
    assert all(o.ok for o in out.values()) and list(out) == ["a", "b", "rec a", "rec b"]


def test_the_last_recording_takes_every_free_core_and_an_earlier_one_only_its_own():
    log, started = [], threading.Event()
    job = _recorder(log)

    def train_1(width):  # still training while recording 0 starts
        assert started.wait(WAIT)
        return "train 1"

    def record_0(width):
        log.append(("rec 0", width))
        started.set()
        return "rec 0"

    out = run_jobs([Job("train 0", job("train 0")), Job("train 1", train_1),
                    Job("rec 0", record_0, after=("train 0",), wide=True),
                    Job("rec 1", job("rec 1"), after=("train 1",), wide=True)], cores=2)
    assert ("rec 0", 1) in log and out["rec 0"].width == 1  # train 1 held the other core
    assert out["rec 1"].ok


def test_a_wide_job_that_finds_every_core_free_takes_them_all():
    log = []
    job = _recorder(log)
    run_jobs([Job("train", job("train")), Job("rec", job("rec"), after=("train",), wide=True)], cores=3)
    assert log == [("train", 1), ("rec", 3)]


def test_a_wide_job_leaves_a_core_to_a_job_that_is_ready_beside_it():
    log = []
    job = _recorder(log)
    run_jobs([Job("train", job("train")), Job("rec", job("rec"), after=("train",), wide=True),
              Job("control", job("control"), after=("train",))], cores=2)
    assert ("rec", 1) in log and ("control", 1) in log


def test_a_failed_job_skips_what_needs_it_and_not_the_others():
    log = []
    job = _recorder(log)
    out = run_jobs([Job("train 0", job("train 0", fail=True)), Job("train 1", job("train 1")),
                    Job("rec 0", job("rec 0"), after=("train 0",)),
                    Job("rec 1", job("rec 1"), after=("train 1",))], cores=2)
    assert out["rec 0"].skipped and "train 0 failed" in str(out["rec 0"].error)
    assert not out["train 0"].skipped and out["rec 1"].value == "rec 1"
    assert "rec 0" not in [key for key, _ in log]


def test_jobs_of_one_lane_run_one_at_a_time_and_a_failure_there_skips_nothing_else():
    log, active, most = [], [], []

    def analyse(key, fail=False):
        def work(width):
            active.append(key)
            most.append(len(active))
            threading.Event().wait(0.05)
            active.remove(key)
            log.append(key)
            if fail:
                raise AnalysisError(f"{key} failed")
        return work

    out = run_jobs([Job("a", analyse("a", fail=True), lane="analysis"),
                    Job("b", analyse("b"), lane="analysis"),
                    Job("c", analyse("c"), lane="analysis"),
                    Job("d", analyse("d"), after=("b", "c"))], cores=3)
    assert max(most) == 1  # a, b and c never overlap (d waits for b and c)
    assert log[:3] == ["a", "b", "c"] and not out["a"].ok and out["d"].ok


@pytest.mark.parametrize("jobs, cores, message", [
    ([Job("a", print), Job("a", print)], 1, "job 'a' is given twice"),
    ([Job("b", print, after=("a",)), Job("a", print)], 1, "job 'b' runs after 'a', which is not given before it"),
    ([Job("a", print), Job("b", print, after="a")], 1, "job 'b': after='a'; expected a tuple of keys"),
    ([Job("a", print)], 0, "cores must be >= 1, got 0"),
])
def test_bad_job_lists_are_refused_before_anything_runs(jobs, cores, message):
    with pytest.raises(ValueError, match=message):
        run_jobs(jobs, cores)


def test_the_driver_plans_control_trainings_recordings_then_analyses(tmp_path, monkeypatch):
    """The jobs the driver gives the scheduler: the control first, every training, each
    recording after its training (wide: torchrun ranks when given more than one core),
    each analysis after its record and the control's analysis, one at a time."""
    plans, calls = [], []
    real = reproduce.run_jobs

    def capture(plan, cores):
        plans.append(list(plan))
        return real(plan, 1)  # one core: a fixed order

    monkeypatch.setattr(reproduce, "run_jobs", capture)
    analysed = []
    runs, failed, _ = reproduce.train_seeds(
        "small", tmp_path, (0, 1), 2, run=lambda cmd, what, log: calls.append((what, cmd, log)),
        analyse=lambda name, seed, folder: analysed.append((seed, folder)),
        analyse_control=lambda folder: analysed.append(("control", folder)))
    plan = {job.key: job for job in plans[0]}
    assert [job.key for job in plans[0]] == [
        "mnist", ("train", ("small", 0)), ("train", ("small", 1)), ("record", ("small", 0)),
        ("record", ("small", 1)), "analyse mnist", ("analyse", ("small", 0)), ("analyse", ("small", 1))]
    assert plan[("record", ("small", 1))].after == (("train", ("small", 1)),)
    assert plan[("record", ("small", 1))].wide and not plan[("train", ("small", 1))].wide
    assert plan[("analyse", ("small", 1))].after == (("record", ("small", 1)), "analyse mnist")
    assert {plan[k].lane for k in plan if "analyse" in str(k)} == {"analysis"}
    assert analysed[0][0] == "control" and [s for s, _ in analysed[1:]] == [0, 1]
    assert sorted(runs["small"]) == [0, 1] and failed == {"small": {}}
    assert all(log is not None for _, _, log in calls)  # two jobs: each stage logs to a file
    # a recording given two cores runs as two torchrun ranks
    calls.clear()
    plan[("record", ("small", 1))].work(2)
    (what, wide, _), = calls
    assert what == "record small seed 1 (2 processes)"
    assert wide[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m"]
    assert wide[6:9] == ["repscope.training.record", "--", "--run"]


def test_the_driver_command_for_ranks_records_what_one_process_records(data_root, tmp_path):
    """The torchrun command line the driver builds, run for real: the record equals the
    one-process record of the same run."""
    import xarray as xr

    from repscope.probes import open_run
    from repscope.training.checkpoint import load_run
    from test_seeds import TINY_TRAINING

    stages = {"record": ("--checkpoints", "all", "--tasks", "3", "--inner-steps", "0,1",
                         "--eval-tasks", "4")}
    extra = ["--data", str(data_root)]

    def stage(cmd, what, log=None):
        if "repscope.training.maml" in cmd:
            cmd = cmd + TINY_TRAINING
        return reproduce._stage(cmd, what, log)

    one, two = tmp_path / "one", tmp_path / "two"
    reproduce._train_one("quick", one, extra, stage, seed=0, quiet=True)
    two.mkdir()
    for part in ("config.json", "checkpoints"):
        (two / part).symlink_to(one / part)
    reproduce._record_one("quick", one, stages, extra, stage, seed=0, quiet=True)
    reproduce._record_one("quick", two, stages, extra, stage, seed=0, quiet=True, width=2)
    a, b = open_run(one / "activations"), open_run(two / "activations")
    saved = sorted(load_run(one)[1])
    assert len(saved) >= 3 and a["checkpoint"].values.tolist() == saved
    for ds in (a, b):
        ds.attrs.pop("created", None)
    xr.testing.assert_identical(a, b)
    # every checkpoint recorded: the stage is skipped
    reproduce._record_one("quick", two, stages, extra, lambda *a: pytest.fail("ran again"), seed=0)
