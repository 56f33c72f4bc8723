"""Every run writes its own checkpoint, log and result JSON, even when runs start in the same second
(recbole_psrq/quick_start.py: the run id)."""
import json
import logging
import os
import subprocess
import sys

import pytest

from recbole_psrq import quick_start

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
