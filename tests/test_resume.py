"""Resumable training (recbole_psrq/resume.py): a run killed after a validation and started again computes
exactly what the uninterrupted run computes; a state from other settings or an unreadable one is refused."""
import glob
import os
import re

import pytest

from recbole_psrq import quick_start, resume
from recbole_psrq.errors import ConfigError
from recbole_psrq.tune import trial as tune_trial

from conftest import same_metrics

# dropout, shuffling and negative sampling on: every random generator the resumed run must restore is drawn from
SETTINGS = {
    "DIN": {"dropout_prob": 0.3},
    # BPR with a sampled negative per row: the sampler draws from NumPy's generator
    "SASRec": {"hidden_dropout_prob": 0.3, "attn_dropout_prob": 0.3, "loss_type": "BPR",
               "train_neg_sample_args": "{'distribution': 'uniform', 'sample_num': 1}"},
}


class Killed(Exception):
    """Stands for the process being killed right after a state was saved."""


def _settings(data_path, model, **extra):
    return {"data_path": data_path, "epochs": 4, "stopping_step": 10, "train_batch_size": 256,
            "eval_batch_size": 1024, **SETTINGS[model], **extra}


def _kill_after_saving(monkeypatch, epoch):
    save = resume._save

    def save_then_die(path, trainer, train_data, valid_data, run_signature, saved_epoch, *rest):
        save(path, trainer, train_data, valid_data, run_signature, saved_epoch, *rest)
        if saved_epoch == epoch:
            raise Killed()
    monkeypatch.setattr(resume, "_save", save_then_die)


def _same_run(a, b):
    assert same_metrics(a["test_result"], b["test_result"])
    assert same_metrics(a["best_valid_result"], b["best_valid_result"])
    assert a["best_valid_score"] == b["best_valid_score"]


def _log(result):
    with open(result["log_file"]) as f:
        return f.read()


def _epochs(result):
    """{epoch: train loss} and {epoch: validation score} as the run logged them: the best epoch may be an
    early one, so equal test metrics alone would not show that the later epochs were trained alike."""
    log = _log(result)
    losses = dict(re.findall(r"epoch (\d+) training \[time: [\d.]+s, train loss: ([\d.]+)\]", log))
    scores = dict(re.findall(r"epoch (\d+) evaluating \[time: [\d.]+s, valid_score: ([\d.]+)\]", log))
    return losses, scores


@pytest.mark.parametrize("model", ["DIN", "SASRec"])
def test_a_killed_run_resumes_to_exactly_the_uninterrupted_result(model, tiny_data_path, workdir, monkeypatch):
    uninterrupted = quick_start.run(model, overrides=_settings(tiny_data_path, model))
    state = str(workdir / "resume.pth")
    with monkeypatch.context() as patch:
        _kill_after_saving(patch, epoch=1)
        with pytest.raises(Killed):
            quick_start.run(model, overrides=_settings(tiny_data_path, model, resume_file=state))
    assert os.path.isfile(state)
    resumed = quick_start.run(model, overrides=_settings(tiny_data_path, model, resume_file=state))
    _same_run(resumed, uninterrupted)
    losses, scores = _epochs(uninterrupted)
    assert _epochs(resumed) == ({e: losses[e] for e in "23"}, {e: scores[e] for e in "23"})
    log = _log(resumed)
    assert f"resumed from {state}: epochs 0-1 were trained before (2 validations); next epoch 2" in log
    assert "epoch 1 training" not in log and "epoch 2 training" in log and "epoch 3 training" in log
    assert not os.path.exists(state)  # a finished run leaves no state behind
    assert uninterrupted["resumed"] is None
    assert resumed["resumed"]["from_epoch"] == 2 and resumed["resumed"]["earlier_seconds"] > 0
    assert not glob.glob(str(workdir / "saved" / "*.tmp"))


def test_saving_states_changes_nothing_in_an_uninterrupted_run(tiny_data_path, workdir):
    plain = quick_start.run("DIN", overrides=_settings(tiny_data_path, "DIN"))
    saving = quick_start.run("DIN", overrides=_settings(tiny_data_path, "DIN", resume_file="state.pth"))
    _same_run(saving, plain)
    assert "resumed from" not in _log(saving)


def test_a_run_killed_after_early_stopping_goes_straight_to_test(tiny_data_path, workdir, monkeypatch):
    settings = _settings(tiny_data_path, "DIN", epochs=40, stopping_step=1, learning_rate=0.01)
    uninterrupted = quick_start.run("DIN", overrides=settings)
    _, scores = _epochs(uninterrupted)
    last = max(int(e) for e in scores)
    best = max(scores, key=lambda e: (float(scores[e]), -int(e)))
    assert last < 39 and int(best) == last - 2  # stopped early, on the second validation without progress
    with monkeypatch.context() as patch:
        _kill_after_saving(patch, epoch=last)  # training is over, the test was not reached
        with pytest.raises(Killed):
            quick_start.run("DIN", overrides={**settings, "resume_file": "state.pth"})
    resumed = quick_start.run("DIN", overrides={**settings, "resume_file": "state.pth"})
    _same_run(resumed, uninterrupted)
    log = _log(resumed)
    assert "training had already stopped" in log and " training [time" not in log
    # the best weights are the first process's (epoch best), not the last epoch's
    assert resumed["checkpoint"] != uninterrupted["checkpoint"] and os.path.isfile(resumed["checkpoint"])


def test_a_state_of_other_settings_is_refused_by_name(tiny_data_path, workdir, monkeypatch):
    with monkeypatch.context() as patch:
        _kill_after_saving(patch, epoch=0)
        with pytest.raises(Killed):
            quick_start.run("DIN", overrides=_settings(tiny_data_path, "DIN", resume_file="state.pth"))
    with pytest.raises(ConfigError) as error:
        quick_start.run("DIN", overrides=_settings(tiny_data_path, "DIN", resume_file="state.pth",
                                                   learning_rate=0.01))
    message = str(error.value)
    assert message.startswith("state.pth holds the training state of a run with other settings "
                              "(learning_rate: 0.002 there, 0.01 here)")
    assert "Delete it to start this run over" in message
    assert os.path.isfile("state.pth")  # refused, not overwritten


def test_an_unreadable_state_is_refused_with_its_path(tiny_data_path, workdir):
    (workdir / "state.pth").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match=r"^The training state state.pth cannot be read \(.*\)\. Delete it"):
        quick_start.run("DIN", overrides=_settings(tiny_data_path, "DIN", resume_file="state.pth"))


def test_resume_file_is_refused_under_ddp(tiny_data_path, workdir):
    with pytest.raises(ConfigError, match="resume_file is not supported in distributed"):
        quick_start.run("DIN", overrides=_settings(tiny_data_path, "DIN", resume_file="state.pth"),
                        distributed={"nproc": 2, "world_size": 2, "ip": "127.0.0.1", "port": 29555,
                                     "group_offset": 0, "local_rank": 0})


def test_a_killed_tuning_trial_resumes_with_its_whole_curve(tiny_data_path, workdir, monkeypatch):
    """The pruner's callback sees the saved validations again, so the curve (and every pruning decision,
    which depends on it) is the uninterrupted trial's."""
    asked = []

    def should_stop(epoch, score):
        asked.append((epoch, score))
        return False

    uninterrupted = tune_trial.train_and_validate("DIN", overrides=_settings(tiny_data_path, "DIN"),
                                                  should_stop=should_stop)
    first_run = list(asked)
    asked.clear()
    with monkeypatch.context() as patch:
        _kill_after_saving(patch, epoch=1)
        with pytest.raises(Killed):
            tune_trial.train_and_validate("DIN", overrides=_settings(tiny_data_path, "DIN", resume_file="t.pth"),
                                          should_stop=should_stop)
    asked.clear()
    resumed = tune_trial.train_and_validate("DIN", overrides=_settings(tiny_data_path, "DIN", resume_file="t.pth"),
                                            should_stop=should_stop)
    assert resumed["valid_curve"] == uninterrupted["valid_curve"] and len(resumed["valid_curve"]) == 4
    assert asked == first_run  # replayed 0-1, then trained 2-3
    assert resumed["resumed"]["from_epoch"] == 2 and uninterrupted["resumed"] is None
    assert resumed["best_valid_score"] == uninterrupted["best_valid_score"]
    assert not os.path.exists("t.pth")


def test_the_benchmark_gives_every_run_and_trial_a_state_in_its_own_folder():
    from recbole_psrq.benchmark.runner import run_task
    from recbole_psrq.benchmark.suites import Experiment

    _, task = run_task(Experiment("T2", "DIN", "DIN"), "converge", 3, "synthetic_music", "out", {})
    assert "--resume_file=resume.pth" in task.argv and task.workdir.endswith("seed3.work")


def test_a_resumed_runs_record_counts_the_training_time_of_its_earlier_processes():
    from recbole_psrq.benchmark.runner import make_record, run_task
    from recbole_psrq.benchmark.suites import Experiment
    from recbole_psrq.tune.study import _trial_record

    experiment = Experiment("T2", "DIN", "DIN")
    _, task = run_task(experiment, "converge", 3, "synthetic_music", "out", {})
    resumed = {"from_epoch": 7, "earlier_seconds": 120.5}
    result = {"test_result": {"auc": 0.7}, "best_valid_result": {"auc": 0.71}, "log_file": "run.log"}
    record = make_record(experiment, "converge", 3, task, {"wall": 30.0, "result": {**result, "resumed": resumed}})
    assert record["wall_seconds"] == 150.5 and record["resumed"] == resumed
    assert make_record(experiment, "converge", 3, task, {"wall": 30.0, "result": result})["wall_seconds"] == 30.0

    trial = {"state": "complete", "valid_curve": [[0, 0.7]], "best_valid_score": 0.7,
             "best_valid_result": {"auc": 0.7}, "valid_metric": "auc", "log_file": None, "resumed": resumed}
    spec = {"overrides": {"learning_rate": 0.001}}
    recorded = _trial_record(0, {}, spec, task, {"ok": True, "wall": 30.0, "result": trial})
    assert recorded["wall_seconds"] == 150.5 and recorded["resumed"] == resumed


def test_the_suite_log_shows_a_resumed_runs_whole_time(tmp_path):
    from recbole_psrq.benchmark.runner import run_all
    from recbole_psrq.benchmark.suites import Experiment

    result = {"test_result": {"auc": 0.7}, "best_valid_result": {"auc": 0.71}, "log_file": "run.log",
              "resumed": {"from_epoch": 7, "earlier_seconds": 120.0}}

    class Finished:
        def map(self, tasks):
            return [(task, {"ok": True, "wall": 30.0, "result": result}) for task in tasks]

    lines = []
    records, failed = run_all([(Experiment("T2", "DIN", "DIN"), "converge", 3)], "synthetic_music",
                              str(tmp_path), {}, lines.append, Finished())
    assert not failed and [r["wall_seconds"] for r in records.values()] == [150.0]
    assert [line for line in lines if line.startswith("done")][0].split(": ")[0].endswith(" in 150s")
