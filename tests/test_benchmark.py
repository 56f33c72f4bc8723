import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import stats

from recbole_psrq.benchmark import runner
from recbole_psrq.benchmark.cli import main
from recbole_psrq.benchmark.runner import run_key, run_path
from recbole_psrq.benchmark.suites import PAPER_SUITE, SUITES
from recbole_psrq.quick_start import PROJECT_ROOT

CLEAN = {"commit": "0" * 40, "dirty": []}


@pytest.fixture(autouse=True)
def clean_tree(monkeypatch):
    """Report tests aggregate as if from a clean commit; the refusal tests plant a dirty state."""
    monkeypatch.setattr(runner, "git_state", lambda: dict(CLEAN))
    monkeypatch.setattr("recbole_psrq.benchmark.cli.git_state", lambda: dict(CLEAN))


def _fake_record(model, seed, auc, overrides=None, digest="d" * 64, git=CLEAN, extra=None):
    return {"model": model, "overrides": overrides or {}, "budget": "one_epoch", "seed": seed,
            "wall_seconds": 10.0, "test_result": {"auc": auc, "logloss": 0.6, **(extra or {})},
            "best_valid_result": {"auc": auc}, "protocol": {"test_rows": 9, "test_digest": digest},
            "git": git, "command": "x", "log_file": "x"}


def _write(tmp_path, experiment, seed, record):
    path = run_path(str(tmp_path), "one_epoch", experiment, seed, "synthetic_music")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f)


def _report(tmp_path, *flags):
    return main(["--suite", "smoke", "--seeds", "2", "--budgets", "one_epoch", "--out", str(tmp_path),
                 "--report-only", *flags])


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
               "--train_batch_size=256", "--allow-dirty"]  # resuming is tested here, not the clean-tree rule
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


def test_runs_scored_on_different_test_rows_are_refused_in_one_table(tmp_path, capsys):
    din, deepfm = SUITES["smoke"]
    for seed in range(2):
        _write(tmp_path, din, seed, _fake_record("DIN", seed, 0.7))
        digest = "d" * 63 + "e" if seed else "d" * 64
        _write(tmp_path, deepfm, seed, _fake_record("DeepFM", seed, 0.7, digest=digest))
    assert _report(tmp_path) == 2
    out = capsys.readouterr().out
    assert "different test rows" in out and "DIN seed 0" in out and "DeepFM seed 1" in out
    assert not (tmp_path / "results.md").exists()


def test_a_ctr_run_without_a_test_digest_is_refused(tmp_path, capsys):
    din, deepfm = SUITES["smoke"]
    for seed in range(2):
        _write(tmp_path, din, seed, _fake_record("DIN", seed, 0.7))
        record = _fake_record("DeepFM", seed, 0.7)
        record["protocol"] = None
        _write(tmp_path, deepfm, seed, record)
    assert _report(tmp_path) == 2
    assert "DeepFM (budget one_epoch, seed 0) has no test-row digest" in capsys.readouterr().out


def test_a_report_from_uncommitted_changes_is_refused_unless_allowed(tmp_path, monkeypatch, capsys):
    din, deepfm = SUITES["smoke"]
    dirty_run = {"commit": "a" * 40, "dirty": ["recbole_psrq/model/mcca.py"]}
    for seed in range(2):
        _write(tmp_path, din, seed, _fake_record("DIN", seed, 0.7))
        _write(tmp_path, deepfm, seed, _fake_record("DeepFM", seed, 0.7, git=dirty_run if seed else CLEAN))
    assert _report(tmp_path) == 2
    out = capsys.readouterr().out
    assert "not from a clean commit" in out and "DeepFM seed 1: run at aaaaaaaaaa with uncommitted changes " \
        "(recbole_psrq/model/mcca.py)" in out
    assert not (tmp_path / "results.md").exists()

    monkeypatch.setattr("recbole_psrq.benchmark.cli.git_state",
                        lambda: {"commit": "b" * 40, "dirty": ["README.md"]})
    assert _report(tmp_path, "--allow-dirty") == 0
    md = (tmp_path / "results.md").read_text()
    assert "## Not from a clean commit (aggregated with `--allow-dirty`)" in md
    assert "- uncommitted change in the working tree: README.md" in md
    assert f"Git commit: {'b' * 40} (with uncommitted changes)" in md


def test_cold_bucket_sizes_are_reported_and_empty_buckets_have_no_auc(tmp_path):
    din, deepfm = SUITES["smoke"]
    buckets = {"coldauc": 0.6, "coldauc_rows": 4337.0, "coldauc_share": 0.475,
               "coldauc_unseen": float("nan"), "coldauc_unseen_rows": 0.0, "coldauc_unseen_share": 0.0}
    for seed in range(2):
        for exp in (din, deepfm):
            _write(tmp_path, exp, seed, _fake_record(exp.model, seed, 0.7 + seed / 100, extra=buckets))
    assert _report(tmp_path) == 0
    md = (tmp_path / "results.md").read_text()
    assert "Cold buckets on these test rows: `coldauc` 4,337 rows (47.5%), `coldauc_unseen` 0 rows (0.0%)" in md
    assert "coldauc_unseen |" not in md and "| auc | coldauc | logloss |" in md
    assert "nan" not in md.lower().replace("nan.", "")


def test_every_ctr_table_has_both_floors():
    for table in ("T2", "T3", "T4"):
        models = {e.model for e in PAPER_SUITE if e.table == table}
        assert {"PopularityFloor", "ContentFloor"} <= models, table
    assert {e.model for e in SUITES["mcca"] if e.model.endswith("Floor")} == {"PopularityFloor", "ContentFloor"}
    dien = next(e for e in PAPER_SUITE if e.model == "DIEN")
    assert "history_min_length" not in dien.overrides  # DIEN is scored on the same rows as DIN


def test_a_changed_code_file_gives_new_runs(tmp_path, monkeypatch):
    din = SUITES["smoke"][0]
    code = tmp_path / "model.py"
    code.write_text("SCALE = 1\n")
    monkeypatch.setattr(runner, "run_code_files", lambda: [str(code)])
    before = run_path("o", "one_epoch", din, 0, "synthetic_music")
    code.write_text("SCALE = 2\n")
    assert run_path("o", "one_epoch", din, 0, "synthetic_music") != before


def test_the_code_fingerprint_covers_the_package_but_not_the_report_writers():
    files = {os.path.relpath(f, PROJECT_ROOT) for f in runner.run_code_files()}
    assert {"run_recbole_psrq.py", "recbole_psrq/model/mcca.py", "recbole_psrq/data/dataset.py",
            "recbole_psrq/quick_start.py", "recbole_psrq/quantization/residual.py"} <= files
    assert not any(f.startswith("recbole_psrq/benchmark/") for f in files)


def test_each_run_gets_its_own_folder_and_the_seed_drives_the_sid_seed(tmp_path, monkeypatch):
    calls = []

    def fake_run(command, cwd, **kwargs):
        calls.append((command, cwd))
        os.makedirs(os.path.join(cwd, "log"), exist_ok=True)
        with open(os.path.join(cwd, "log", "r.json"), "w") as f:
            json.dump({"test_result": {"auc": 0.7}, "best_valid_result": {}, "log_file": "log/r.log",
                       "protocol_checks": {"test_digest": "d" * 64}}, f)
        return subprocess.CompletedProcess(command, 0, stdout="results written to log/r.json\n", stderr="")

    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    din, deepfm = SUITES["smoke"]
    records = [runner.run_one(e, "one_epoch", seed, "synthetic_music", str(tmp_path), {}, lambda m: None)
               for e in (din, deepfm) for seed in (3, 4)]
    folders = [cwd for _, cwd in calls]
    assert len(set(folders)) == 4
    for (command, _), seed in zip(calls, (3, 4, 3, 4)):
        assert f"--seed={seed}" in command and f"--sid_seed={seed}" in command
    assert all(r["protocol"]["test_digest"] == "d" * 64 and r["git"] == CLEAN for r in records)
