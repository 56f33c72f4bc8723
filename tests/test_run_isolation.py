"""Runs keep to themselves: every run writes its own checkpoint, log and result JSON, even when runs start
in the same second (recbole_psrq/quick_start.py: the run id), and a run in a process leaves torch's thread
count and subnormal handling as it found them."""
import json
import logging
import os
import subprocess
import sys

import pytest

from recbole_psrq import quick_start
from recbole_psrq.errors import ConfigError
from tests.conftest import one_epoch

# RecBole names files by the time to the second; freezing that clock makes "the same second" certain
FROZEN_CLOCK = (
    "import sys, recbole.utils as u, recbole.utils.utils as uu, recbole.utils.logger as ul; "
    "u.get_local_time = uu.get_local_time = ul.get_local_time = lambda: 'Jan-01-2030_00-00-00'; "
    "import run_recbole_psrq; sys.exit(run_recbole_psrq.main(sys.argv[1:]))"
)


def test_run_ids_differ_within_one_second_and_process(monkeypatch):
    import recbole.utils

    monkeypatch.setattr(recbole.utils, "get_local_time", lambda: "Jan-01-2030_00-00-00")
    ids = {quick_start.new_run_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith(f"Jan-01-2030_00-00-00-{os.getpid()}-") for i in ids)


def test_equal_settings_in_the_same_second_log_to_separate_files(workdir, tiny_data_path, monkeypatch):
    import recbole.utils.logger

    monkeypatch.setattr(recbole.utils.logger, "get_local_time", lambda: "Jan-01-2030_00-00-00")
    config = quick_start.build_config("DIN", overrides={"data_path": tiny_data_path})
    files = [quick_start._init_logger(config, quick_start.new_run_id()) for _ in range(2)]
    for handler in list(logging.getLogger().handlers):
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert files[0] != files[1] and all(os.path.isfile(f) for f in files)


def test_a_folder_another_run_makes_between_recboles_check_and_its_mkdir_is_no_error(workdir, tiny_data_path,
                                                                                   monkeypatch):
    """RecBole makes log/, log/<model>/ and saved/ with "if not exists: makedirs": of two runs started
    together in one folder, one can find a folder missing and then made. Here "the other run" makes each
    the moment it is checked; before quick_start made them first, the run died of FileExistsError."""
    real_exists = os.path.exists
    raced = {os.path.normpath(p) for p in ("log", os.path.join("log", "DIN"), "saved")}

    def made_by_another_run_right_after_the_check(path):
        if os.path.normpath(path) in raced and not os.path.isdir(path):
            os.mkdir(path)
            return False
        return real_exists(path)

    monkeypatch.setattr(os.path, "exists", made_by_another_run_right_after_the_check)
    result = quick_start.run("DIN", overrides=one_epoch(tiny_data_path))
    assert os.path.dirname(result["checkpoint"]) == str(workdir / "saved") and os.path.isfile(result["checkpoint"])


def test_a_run_pins_torch_threads_for_itself_and_gives_the_process_its_setting_back(workdir, tiny_data_path,
                                                                                  monkeypatch):
    import torch

    from recbole_psrq.tune.trial import train_and_validate

    create_dataset, during = quick_start.create_dataset, []

    def create_dataset_counting_threads(config):
        during.append(torch.get_num_threads())
        return create_dataset(config)

    monkeypatch.setattr(quick_start, "create_dataset", create_dataset_counting_threads)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        pinned = quick_start.run("DIN", overrides=one_epoch(tiny_data_path, torch_threads=1))
        assert torch.get_num_threads() == 3
        quick_start.run("DIN", overrides=one_epoch(tiny_data_path))  # unset: the process's setting
        train_and_validate("DIN", overrides=one_epoch(tiny_data_path, torch_threads=2))
        quick_start.evaluate_checkpoint(pinned["checkpoint"])  # at the run's count
        assert during == [1, 3, 2, 1] and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_flush_denormal_flushes_subnormals_during_its_run_only(workdir, tiny_data_path, monkeypatch):
    import torch

    subnormal = torch.tensor([1e-39])  # below float32's smallest normal, 1.18e-38
    create_dataset, seen = quick_start.create_dataset, []

    def create_dataset_probing(config):
        seen.append((subnormal * 1.0).item())
        return create_dataset(config)

    monkeypatch.setattr(quick_start, "create_dataset", create_dataset_probing)
    flushed = quick_start.run("DIN", overrides=one_epoch(tiny_data_path, torch_threads=1, flush_denormal=True))
    quick_start.run("DIN", overrides=one_epoch(tiny_data_path, torch_threads=1))
    quick_start.evaluate_checkpoint(flushed["checkpoint"])  # at the run's setting
    assert seen[0] == 0.0 and seen[1] > 0 and seen[2] == 0.0
    assert (subnormal * 1.0).item() > 0  # the process computes subnormals again


def test_flush_denormal_on_several_threads_is_refused_before_the_run(tiny_data_path):
    import torch

    before = torch.get_num_threads()
    config = quick_start.build_config("DIN", overrides=one_epoch(tiny_data_path, torch_threads=2,
                                                                   flush_denormal=True))
    with pytest.raises(ConfigError, match="torch_threads: 1"):
        with quick_start.torch_settings(config):
            pytest.fail("the run started")
    assert torch.get_num_threads() == before and (torch.tensor([1e-39]) * 1.0).item() > 0


@pytest.mark.slow
def test_two_runs_started_together_keep_their_own_files(tiny_data_path, workdir):
    root = quick_start.PROJECT_ROOT
    env = {**os.environ, "PYTHONPATH": root}
    seeds = (1, 2)
    procs = [subprocess.Popen(
        [sys.executable, "-c", FROZEN_CLOCK, "--model=DIN", f"--data_path={tiny_data_path}", "--epochs=1",
         "--train_batch_size=256", "--eval_batch_size=1024", "--torch_threads=1", f"--seed={seed}"],
        cwd=str(workdir), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seed in seeds]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        (path,) = [line.split(" to ", 1)[1] for line in out.splitlines() if line.startswith("results written to ")]
        with open(os.path.join(str(workdir), path)) as f:
            results.append(json.load(f))
    for key in ("checkpoint", "log_file", "run_id"):
        assert results[0][key] != results[1][key], key
    assert len(os.listdir(workdir / "saved")) == 2
    assert [r["seeds"] for r in results] == [{"seed": s, "sid_seed": None} for s in seeds]
    assert results[0]["protocol_checks"] == results[1]["protocol_checks"]  # same data, same test rows
    metrics = [quick_start.format_metrics(r["test_result"]) for r in results]
    assert metrics[0] != metrics[1]  # the seeds trained different models
    for result, expected in zip(results, metrics):  # each checkpoint is its own run's model
        assert "Jan-01-2030_00-00-00" in os.path.basename(result["checkpoint"])
        assert quick_start.format_metrics(quick_start.evaluate_checkpoint(result["checkpoint"])) == expected
