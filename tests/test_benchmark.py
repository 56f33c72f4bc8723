import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import stats

from recbole_psrq.benchmark.cli import main
from recbole_psrq.benchmark.runner import run_key, run_path
from recbole_psrq.benchmark.suites import PAPER_SUITE, SUITES
from recbole_psrq.quick_start import PROJECT_ROOT


def _fake_record(model, seed, auc, overrides=None):
    return {"model": model, "overrides": overrides or {}, "budget": "one_epoch", "seed": seed,
            "wall_seconds": 10.0, "test_result": {"auc": auc, "logloss": 0.6},
            "best_valid_result": {"auc": auc}, "command": "x", "log_file": "x"}


def test_report_has_mean_std_and_paired_ttest_against_the_baseline(tmp_path):
    din = [0.70, 0.71, 0.69]
    deepfm = [0.72, 0.74, 0.715]
    for seed in range(3):
        for exp, values in ((SUITES["smoke"][0], din), (SUITES["smoke"][1], deepfm)):
            path = run_path(str(tmp_path), "one_epoch", exp, seed, "synthetic_music")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                json.dump(_fake_record(exp.model, seed, values[seed]), f)
    code = main(["--suite", "smoke", "--seeds", "3", "--budgets", "one_epoch",
                 "--out", str(tmp_path), "--report-only"])
    assert code == 0
    md = (tmp_path / "results.md").read_text()
    p = stats.ttest_rel(deepfm, din).pvalue
    assert f"{np.mean(deepfm):.4f} ± {np.std(deepfm, ddof=1):.4f} (p={p:.3g})" in md
    assert f"**DIN** (baseline) | 3 | {np.mean(din):.4f} ± {np.std(din, ddof=1):.4f}" in md
    assert "Git commit:" in md and "recbole 1.2.1" in md
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 6
    assert "\\begin{tabular}" in (tmp_path / "results.tex").read_text()
    assert (tmp_path / "metrics_T2.png").stat().st_size > 0


def test_seed_list_reports_only_those_seeds(tmp_path):
    for seed, auc in ((0, 0.70), (2, 0.72)):
        for exp in SUITES["smoke"]:
            path = run_path(str(tmp_path), "one_epoch", exp, seed, "synthetic_music")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                json.dump(_fake_record(exp.model, seed, auc), f)
    assert main(["--suite", "smoke", "--seeds", "0,2", "--budgets", "one_epoch",
                 "--out", str(tmp_path), "--report-only"]) == 0
    md = (tmp_path / "results.md").read_text()
    assert "Seeds: [0, 2]" in md and "**DIN** (baseline) | 2 | 0.7100 ± 0.0141" in md
    with pytest.raises(SystemExit):
        main(["--suite", "smoke", "--seeds", "0,x", "--out", str(tmp_path), "--report-only"])


def test_a_changed_protocol_file_gives_new_runs(tmp_path, monkeypatch):
    from recbole_psrq import quick_start

    din = SUITES["smoke"][0]
    before = run_path("o", "one_epoch", din, 0, "synthetic_music")
    protocol = tmp_path / "ctr.yaml"
    protocol.write_text("metrics: [AUC]\n")
    original = quick_start.config_file_list
    monkeypatch.setattr(quick_start, "config_file_list",
                        lambda *a, **k: [str(protocol) if p.endswith("ctr.yaml") else p
                                         for p in original(*a, **k)])
    assert run_path("o", "one_epoch", din, 0, "synthetic_music") != before


def test_shared_runs_are_keyed_once():
    t2_din = next(e for e in PAPER_SUITE if e.table == "T2" and e.name == "DIN")
    t3_din = next(e for e in PAPER_SUITE if e.table == "T3" and e.name == "DIN")
    psrq = next(e for e in PAPER_SUITE if e.name == "DIN+PSRQ")
    assert run_key(t2_din) == run_key(t3_din)
    assert run_key(psrq) != run_key(t2_din)


def test_importing_the_package_imports_neither_recbole_nor_torch():
    code = ("import sys, recbole_psrq.benchmark; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('recbole', 'torch')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": PROJECT_ROOT}, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_suite_resumes_after_being_killed(tiny_data_path, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "recbole_psrq.benchmark", "--suite", "smoke", "--seeds", "1",
               "--budgets", "one_epoch", "--out", str(out), f"--data_path={tiny_data_path}",
               "--train_batch_size=256"]
    env = {**os.environ, "PYTHONPATH": PROJECT_ROOT}
    proc = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    din, deepfm = (run_path(str(out), "one_epoch", e, 0, "synthetic_music") for e in SUITES["smoke"])
    deadline = time.time() + 240
    while not os.path.exists(din) and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-suite: the DeepFM run is in progress
    proc.wait()
    assert os.path.exists(din) and not os.path.exists(deepfm)
    din_record = open(din).read()

    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "skip   one_epoch  DIN" in done.stdout and "run    one_epoch  DeepFM" in done.stdout
    assert "run    one_epoch  DIN" not in done.stdout
    assert open(din).read() == din_record  # the finished run was not redone
    md = (out / "results.md").read_text()
    assert "| **DIN** (baseline) | 1 |" in md and "| DeepFM | 1 |" in md
