import csv
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from scipy import stats

from recbole_psrq.benchmark import runner
from recbole_psrq.benchmark.cli import main
from recbole_psrq.benchmark.runner import run_key, run_path
from recbole_psrq.benchmark.stats import is_floor
from recbole_psrq.benchmark.suites import BUDGETS, PAPER_SUITE, SUITES
from recbole_psrq.benchmark.tuning import training_free
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


def png_size(path):
    """(width, height) from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    head = open(path, "rb").read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", path
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_the_reports_command_can_be_pasted_into_a_shell(tmp_path):
    out = tmp_path / "my results"  # an argument with a space (as is the experiment name "Floor: popularity")
    _write(out, SUITES["smoke"][0], 0, _fake_record("DIN", 0, 0.7))
    argv = ["--suite", "smoke", "--seeds", "1", "--budgets", "one_epoch", "--out", str(out), "--report-only",
            "--only", "DIN"]
    main(argv + [f"--data_path={PROJECT_ROOT}/converted/"])
    command = re.search(r"^Command: `(.*)`  $", (out / "results.md").read_text(), re.M).group(1)
    # with absolute paths relative to the repository (where the command runs): it names no machine's folders
    argv[argv.index(str(out))] = os.path.relpath(out, PROJECT_ROOT)
    assert shlex.split(command) == ["python", "-m", "recbole_psrq.benchmark", *argv, "--data_path=converted"]


def test_report_has_mean_std_and_paired_ttest_against_the_baseline(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    bars = []
    original_bar = Axes.bar

    def recording_bar(self, x, height, *args, **kwargs):  # what the metric plots draw
        bars.append((self, list(height), list(kwargs.get("yerr")), list(kwargs.get("color"))))
        return original_bar(self, x, height, *args, **kwargs)

    monkeypatch.setattr(Axes, "bar", recording_bar)
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
    d = np.subtract(deepfm, din)
    half = stats.t.ppf(0.975, 2) * np.std(d, ddof=1) / np.sqrt(3)
    assert f"| DeepFM | 3 | {np.mean(deepfm):.4f} ± {np.std(deepfm, ddof=1):.4f} | 0.6000 ± 0.0000 |" in md
    assert f"**DIN** (baseline) | 3 | {np.mean(din):.4f} ± {np.std(din, ddof=1):.4f}" in md
    # the family is DeepFM's auc alone (its logloss equals DIN's on every seed: no p), so p_Holm = p
    assert (f"| DeepFM | auc | 3 | Δ {d.mean():+.4f} [{d.mean() - half:.4f}, {d.mean() + half:.4f}] "
            f"| p={p:.3g} | p_Holm={p:.3g} | better |") in md
    assert "| DeepFM | logloss | 3 | Δ +0.0000 [–, –] | p=– | p_Holm=– | not testable |" in md
    assert "Holm family of this table: m = 1 comparisons" in md
    assert "Git commit:" in md and "recbole 1.2.1" in md
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["statistic"] for r in rows] == ["run"] * 6 + ["mean", "std"] * 2 + [
        "diff", "ci_low", "ci_high", "p", "p_holm", "pairs"]  # no claimed row in the smoke suite
    deepfm_runs = [r for r in rows if r["name"] == "DeepFM" and r["statistic"] == "run"]
    assert [(int(r["seed"]), float(r["auc"])) for r in deepfm_runs] == list(enumerate(deepfm))
    figure = {(r["name"], r["statistic"]): r for r in rows if r["statistic"] != "run"}
    assert float(figure[("DeepFM", "mean")]["auc"]) == pytest.approx(np.mean(deepfm))
    assert float(figure[("DIN", "std")]["auc"]) == pytest.approx(np.std(din, ddof=1))
    assert figure[("DeepFM", "diff")]["versus"] == "DIN" and figure[("DeepFM", "diff")]["family"] == "baseline"
    assert float(figure[("DeepFM", "diff")]["auc"]) == pytest.approx(d.mean())
    assert float(figure[("DeepFM", "ci_low")]["auc"]) == pytest.approx(d.mean() - half)
    assert float(figure[("DeepFM", "p_holm")]["auc"]) == pytest.approx(p)
    assert figure[("DeepFM", "p")]["logloss"] == "" and figure[("DeepFM", "pairs")]["auc"] == "3"
    assert "\\begin{tabular}" in (tmp_path / "results.tex").read_text()
    # one panel (only auc has values): figsize 5 x 3.5 in at 110 dpi; one bar per model, baseline grey
    assert png_size(tmp_path / "metrics_T2.png") == (550, 385)
    assert len(bars) == 1 and bars[0][0].get_title() == "T2: auc (mean ± std)"
    np.testing.assert_allclose(bars[0][1], [np.mean(din), np.mean(deepfm)])
    np.testing.assert_allclose(bars[0][2], [np.std(din, ddof=1), np.std(deepfm, ddof=1)])
    assert bars[0][3] == ["#999", "#3b7dd8"]


def test_paired_ttest_pairs_runs_by_seed_not_by_position():
    """Records arrive keyed by seed in any order (resumed or split suites), and a seed the baseline
    lacks is left out of the test but kept in the mean."""
    from recbole_psrq.benchmark.stats import summarize

    def records(by_seed):
        return {seed: {"test_result": {"auc": auc}, "wall_seconds": 1.0} for seed, auc in by_seed.items()}

    din = {0: 0.690, 1: 0.700, 2: 0.730}
    deepfm = {2: 0.745, 3: 0.600, 0: 0.700, 1: 0.712}  # another order, and seed 3 has no DIN run
    by_exp = {("one_epoch", "T2", "DIN"): records(din), ("one_epoch", "T2", "DeepFM"): records(deepfm)}
    rows = summarize(by_exp, SUITES["smoke"], ["one_epoch"], [0, 1, 2, 3])
    auc = next(r for r in rows if r["name"] == "DeepFM")["metrics"]["auc"]
    by_seed = stats.ttest_rel([deepfm[s] for s in (0, 1, 2)], [din[s] for s in (0, 1, 2)]).pvalue
    by_position = stats.ttest_rel([0.745, 0.600, 0.700], list(din.values())).pvalue
    assert auc.p == pytest.approx(by_seed) and abs(by_seed - by_position) > 0.1
    assert auc.p_holm == pytest.approx(by_seed)  # a family of one
    # the difference is over the paired seeds 0-2 only: (0.010 + 0.012 + 0.015) / 3
    assert auc.diff == pytest.approx(0.037 / 3) and auc.n_paired == 3
    assert auc.mean == pytest.approx(np.mean(list(deepfm.values())))
    assert auc.std == pytest.approx(np.std(list(deepfm.values()), ddof=1))
    base = next(r for r in rows if r["name"] == "DIN")["metrics"]["auc"]  # baseline vs itself: nothing
    assert all(np.isnan(v) for v in (base.diff, base.ci_low, base.ci_high, base.p, base.p_holm))


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


def test_report_only_says_how_far_the_study_is_and_what_is_left(tmp_path, capsys):
    din, deepfm = SUITES["smoke"]
    for seed, wall in ((0, 100.0), (1, 200.0)):
        record = _fake_record("DIN", seed, 0.7)
        record["wall_seconds"] = wall
        _write(tmp_path, din, seed, record)
    assert main(["--suite", "smoke", "--seeds", "4", "--budgets", "one_epoch", "--out", str(tmp_path),
                 "--report-only", "--jobs", "2"]) == 1
    lines = [line.split(" ", 2)[2] for line in capsys.readouterr().out.splitlines() if " progress " in line]
    assert lines == ["one_epoch  DIN                    2/4 seeds, 150 s/run",
                     "one_epoch  DeepFM                 0/4 seeds",
                     "6 run(s) left: ~0.1 run-hours at the finished runs' mean wall (~0.0 h with --jobs 2), "
                     "plus DeepFM (no finished run yet: cost unknown)"]


def test_progress_counts_a_run_shared_between_tables_once():
    from recbole_psrq.benchmark.runner import progress

    suite = [e for e in SUITES["mcca"] if e.name in ("DIN", "PSRQ+MCCA")]  # DIN in T3 and T4: one run key
    records = {("converge", "T3", "DIN"): {0: {"wall_seconds": 3600.0}}, ("converge", "T4", "DIN"):
               {0: {"wall_seconds": 3600.0}}, ("converge", "T4", "PSRQ+MCCA"): {s: {"wall_seconds": 7200.0}
                                                                             for s in (0, 1, 2)}}
    lines = progress(suite, ["converge"], [0, 1, 2], records, jobs=1)
    assert lines == ["converge   DIN                    1/3 seeds, 3600 s/run",
                     "converge   PSRQ+MCCA              3/3 seeds, 7200 s/run",
                     "2 run(s) left: ~2.0 run-hours at the finished runs' mean wall (~2.0 h with --jobs 1)"]


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
    # each record names the data files it read and the CPU it ran on
    record = json.loads(din_record)
    assert record["data"] == runner.data_identity("synthetic_music", {"data_path": str(tiny_data_path)})
    assert any(name.endswith(".inter") for name in record["data"]) and record["machine"]["cores"] == os.cpu_count()
    assert "## Data files and machines" in md and "differing" not in md


def test_runs_scored_on_different_test_rows_are_refused_in_one_table(tmp_path, capsys):
    din, deepfm = SUITES["smoke"]
    for seed in range(2):
        _write(tmp_path, din, seed, _fake_record("DIN", seed, 0.7))
        digest = "d" * 63 + "e" if seed else "d" * 64
        _write(tmp_path, deepfm, seed, _fake_record("DeepFM", seed, 0.7, digest=digest))
    assert _report(tmp_path) == 2
    out = capsys.readouterr().out
    assert "different test rows" in out and "DIN seed 0" in out and "DeepFM seed 1" in out
    assert ("Every model of a table must be built from the same dataset and protocol settings (same dataset "
            "files, split, history_min_length...).") in out
    assert not (tmp_path / "results.md").exists()


def test_a_claim_across_tables_is_refused_when_the_tables_were_scored_on_different_rows():
    from recbole_psrq.benchmark.checks import IntegrityError, check_same_test_rows

    # every table agrees within itself; T3 may differ from T4. One seed per row, so a table's second run is
    # another model and the refusal must name each table's first run
    def by_exp(t3_digest):
        runs = {("T3", "DIN"): t3_digest, ("T3", "DIN+PSRQ"): t3_digest, ("T4", "DIN"): "d" * 64,
                ("T4", "PSRQ+MCCA"): "d" * 64}
        return {("converge", t, n): {0: {"protocol": {"test_digest": digest}}} for (t, n), digest in runs.items()}

    check_same_test_rows(by_exp("d" * 64), SUITES["mcca"])
    # only the claim T4 PSRQ+MCCA vs T3 DIN+PSRQ compares the two tables: the per-table rule cannot see this
    with pytest.raises(IntegrityError) as refused:
        check_same_test_rows(by_exp("e" * 64), SUITES["mcca"])
    assert str(refused.value) == (
        "T4's claim is tested against T3 (budget converge), but they were scored on different test rows: T4 DIN "
        "seed 0 has test digest dddddddddddd…, T3 DIN seed 0 has eeeeeeeeeeee…. Run both tables from the same "
        "dataset and protocol settings.")


def test_a_run_without_a_test_digest_is_refused(tmp_path, capsys):
    din, deepfm = SUITES["smoke"]
    for seed in range(2):
        _write(tmp_path, din, seed, _fake_record("DIN", seed, 0.7))
        record = _fake_record("DeepFM", seed, 0.7)
        record["protocol"] = None
        _write(tmp_path, deepfm, seed, record)
    assert _report(tmp_path) == 2
    out = capsys.readouterr().out
    assert ("DeepFM (budget one_epoch, seed 0) has no test-row digest: it was made before runs recorded one. "
            "Delete its record under <out>/runs/ and rerun the suite.") in out


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


def test_the_topk_table_has_both_floors_under_its_protocol():
    floors = [e for e in SUITES["topk"] if e.name.startswith("Floor: ")]
    models = [e for e in SUITES["topk"] if e not in floors]
    assert {e.model for e in floors} == {"PopularityFloor", "ContentFloor"}
    assert all(is_floor(e) for e in floors) and not any(is_floor(e) for e in models)
    ctr_floors = {e.model: e for e in SUITES["t2"] if is_floor(e)}
    for floor in floors:
        assert floor.overrides["protocol"] == "topk" and floor.overrides["epochs"] == 1
        # validated on the same fixed users as the models, and a run of its own (not the CTR tables' floor)
        assert {e.overrides["valid_user_fraction"] for e in models} == {floor.overrides["valid_user_fraction"]}
        assert run_key(floor) != run_key(ctr_floors[floor.model])
        # training-free: the tuner skips it, so every top-k model but the floors gets the same grid
        assert training_free(floor.model)
    assert not any(training_free(e.model) for e in models)


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


def test_a_floor_runs_one_epoch_under_every_budget_and_the_budget_rules_every_other_run(tmp_path):
    floor = next(e for e in SUITES["t2"] if e.model == "ContentFloor")
    din = next(e for e in SUITES["t2"] if e.name == "DIN")
    for budget in ("early_stop", "converge"):
        _, floor_task = runner.run_task(floor, budget, 0, "synthetic_music", str(tmp_path), {})
        _, din_task = runner.run_task(din, budget, 0, "synthetic_music", str(tmp_path), {})
        epochs = [a for a in floor_task.argv if a.startswith("--epochs=")]
        assert epochs == ["--epochs=1"]  # one flag, the floor's (its score is the same every epoch)
        assert f"--epochs={BUDGETS[budget]['epochs']}" in din_task.argv


def test_paired_ttest_is_nan_exactly_when_undefined():
    from recbole_psrq.benchmark.stats import paired_ttest

    two_seeds = stats.ttest_rel([0.70, 0.80], [0.60, 0.65]).pvalue
    assert paired_ttest([0.70, 0.80], [0.60, 0.65]) == pytest.approx(two_seeds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # undefined cases return early instead of asking scipy
        assert np.isnan(paired_ttest([0.7], [0.6]))                      # one seed
        assert np.isnan(paired_ttest([0.7, 0.8, 0.9], [0.6, 0.7]))      # unpaired
        assert np.isnan(paired_ttest([0.7, 0.8], [0.7, 0.8]))           # no difference at all


def _records(by_seed, metric="auc"):
    return {seed: {"test_result": {metric: value}, "wall_seconds": 1.0} for seed, value in by_seed.items()}


def test_summarize_single_seeds_missing_baselines_and_topk_metrics():
    from recbole_psrq.benchmark.stats import summarize
    from recbole_psrq.benchmark.suites import Experiment

    suite = [Experiment("T2", "DIN", "DIN"), Experiment("T2", "DeepFM", "DeepFM"),
             Experiment("T3", "DIN", "DIN"), Experiment("T3", "DIN+PQ", "DIN"),
             Experiment("TopK", "SASRec", "SASRec"), Experiment("TopK", "GRU4Rec", "GRU4Rec")]
    by_exp = {("one_epoch", "T2", "DeepFM"): _records({0: 0.7}),          # its baseline DIN did not run
              ("one_epoch", "T3", "DIN"): _records({0: 0.70, 1: 0.71}),
              ("one_epoch", "T3", "DIN+PQ"): _records({0: 0.75, 1: 0.77}),
              ("one_epoch", "TopK", "GRU4Rec"): _records({0: 0.02}, "recall@10")}
    rows = {(r["table"], r["name"]): r for r in summarize(by_exp, suite, ["one_epoch"], [0, 1])}
    assert set(rows) == {("T2", "DeepFM"), ("T3", "DIN"), ("T3", "DIN+PQ"), ("TopK", "GRU4Rec")}
    deepfm = rows[("T2", "DeepFM")]["metrics"]["auc"]
    assert (deepfm.mean, deepfm.std) == (0.7, 0.0)  # one seed: std 0, and no baseline: no comparison
    assert deepfm.n_paired == 0 and all(np.isnan(v) for v in (deepfm.diff, deepfm.ci_low, deepfm.p, deepfm.p_holm))
    # T3 is compared with T3's own DIN, not with the suite's first DIN
    assert rows[("T3", "DIN")]["is_baseline"] and not rows[("T3", "DIN+PQ")]["is_baseline"]
    assert rows[("T3", "DIN+PQ")]["metrics"]["auc"].p == pytest.approx(
        stats.ttest_rel([0.75, 0.77], [0.70, 0.71]).pvalue)
    topk = rows[("TopK", "GRU4Rec")]["metrics"]  # the top-k table's metrics, not the ctr ones
    assert list(topk) == ["recall@10"] and (topk["recall@10"].mean, topk["recall@10"].std) == (0.02, 0.0)


def test_topk_runs_are_held_to_the_digest_rule_like_ctr_runs():
    from recbole_psrq.benchmark.checks import IntegrityError, check_same_test_rows
    from recbole_psrq.benchmark.suites import Experiment

    suite = [Experiment("T2", "DIN", "DIN"), Experiment("TopK", "SASRec", "SASRec")]

    def record(digest):
        return {"protocol": {"test_digest": digest} if digest else None}

    # top-k models scored on the same rows pass, each budget on its own rows
    same = {("early_stop", "TopK", "SASRec"): {0: record("a" * 64), 1: record("a" * 64)},
            ("early_stop", "TopK", "GRU4Rec"): {0: record("a" * 64)},
            ("one_epoch", "TopK", "SASRec"): {0: record("b" * 64)},
            ("one_epoch", "T2", "DIN"): {0: record("d" * 64)}}
    check_same_test_rows(same, suite)
    # a top-k model scored on other rows (a general recommender's test split, another dataset) is refused
    with pytest.raises(IntegrityError, match=f"TopK .budget early_stop. would compare runs scored on different "
                                             f"test rows: GRU4Rec seed 0 has test digest {'a' * 12}…, "
                                             f"SASRec seed 0 has {'c' * 12}…"):
        check_same_test_rows({**same, ("early_stop", "TopK", "SASRec"): {0: record("c" * 64)}}, suite)
    # ... and so is a top-k run without a digest, wherever it sorts
    with pytest.raises(IntegrityError, match="TopK SASRec .budget one_epoch, seed 0. has no test-row digest"):
        check_same_test_rows({**same, ("one_epoch", "TopK", "SASRec"): {0: record(None)}}, suite)
    with pytest.raises(IntegrityError, match="T2 DIN .budget one_epoch, seed 0. has no test-row digest"):
        check_same_test_rows({**same, ("one_epoch", "T2", "DIN"): {0: record(None)}}, suite)
    # the second run already differing from the first is found
    differing = {("one_epoch", "T2", "DIN"): {0: record("d" * 64), 1: record("e" * 64)}}
    with pytest.raises(IntegrityError, match=f"DIN seed 0 has test digest {'d' * 12}…, DIN seed 1 has {'e' * 12}…"):
        check_same_test_rows(differing, suite)


def test_dirty_sources_name_runs_without_a_commit_and_at_most_three_files():
    from recbole_psrq.benchmark.checks import dirty_sources

    runs = [{"table": "T2", "name": "DIN", "seed": 0, "git": None},
            {"table": "T2", "name": "DeepFM", "seed": 1,
             "git": {"commit": "a" * 40, "dirty": ["a.py", "b.py", "c.py", "d.py"]}},
            {"table": "T2", "name": "DIN", "seed": 1, "git": dict(CLEAN)}]
    assert dirty_sources(runs, {"commit": "b" * 40, "dirty": ["README.md"]}) == [
        "uncommitted change in the working tree: README.md",
        "T2 DIN seed 0: no commit recorded with the run",
        "T2 DeepFM seed 1: run at aaaaaaaaaa with uncommitted changes (a.py, b.py, c.py)"]
    assert dirty_sources(runs[2:], CLEAN) == []


def test_a_changed_budget_gives_new_runs(monkeypatch):
    din = SUITES["smoke"][0]
    before = run_path("o", "early_stop", din, 0, "synthetic_music")
    monkeypatch.setitem(runner.BUDGETS, "early_stop", {"epochs": 50, "stopping_step": 2})
    assert run_path("o", "early_stop", din, 0, "synthetic_music") != before


def test_a_record_command_names_paths_relative_to_the_repository():
    from recbole_psrq.benchmark.runner import shown_arg
    from recbole_psrq.quick_start import PROJECT_ROOT

    inside = os.path.join(PROJECT_ROOT, "results", "x", "tuned.yaml")
    assert shown_arg(os.path.join(PROJECT_ROOT, "run_recbole_psrq.py")) == "run_recbole_psrq.py"
    assert shown_arg(f"--config_files={inside}") == "--config_files=results/x/tuned.yaml"
    assert shown_arg("--seed=0") == "--seed=0"
    assert shown_arg("--learning_rate=1e-3") == "--learning_rate=1e-3"


def test_a_records_data_identity_covers_the_files_runs_read_and_nothing_else(tmp_path):
    folder = tmp_path / "music"
    folder.mkdir()
    for name, content in (("music.inter", b"u\ti\n"), ("music.item", b"i\n"), ("music.text.npz", b"\0" * 8),
                          ("README.md", b"notes"), ("music.stats.json", b'{"seconds": 1.0}')):
        (folder / name).write_bytes(content)
    identity = runner.data_identity("music", {"data_path": str(tmp_path)})
    assert sorted(identity) == ["music.inter", "music.item", "music.text.npz"]
    (folder / "music.stats.json").write_bytes(b'{"seconds": 2.0}')  # a reconversion's timings: not an input
    (folder / "README.md").write_bytes(b"other notes")
    assert runner.data_identity("music", {"data_path": str(tmp_path)}) == identity
    (folder / "music.text.npz").write_bytes(b"\0" * 7 + b"\1")  # embeddings that differ in the last bit
    changed = runner.data_identity("music", {"data_path": str(tmp_path)})
    assert changed["music.text.npz"] != identity["music.text.npz"] and changed["music.inter"] == identity["music.inter"]
    assert runner.data_identity("absent", {"data_path": str(tmp_path)}) == {}


def test_the_report_names_data_files_that_differ_between_a_tables_runs():
    from recbole_psrq.benchmark.report import _provenance_section

    cpu = {"cpu": "AMD EPYC", "cores": 2}
    data = {"m.inter": "a" * 16, "m.text.npz": "b" * 16}
    records = [{"table": "T2", "budget": "converge", "name": "DIN", "seed": 0, "data": data, "machine": cpu},
               {"table": "T2", "budget": "converge", "name": "DIN", "seed": 1, "data": data, "machine": cpu},
               {"table": "T2", "budget": "converge", "name": "MCCA", "seed": 0, "machine": cpu,
                "data": {**data, "m.text.npz": "c" * 16}},
               {"table": "T2", "budget": "converge", "name": "MCCA", "seed": 1}]
    lines = _provenance_section(records)
    line = next(x for x in lines if x.startswith("- T2"))
    assert "4 runs: 1 file(s) identical in every run that recorded them (m.inter aaaaaaaaaaaa)" in line
    assert "**differing**: m.text.npz: bbbbbbbbbbbb (DIN seeds 0, 1), cccccccccccc (MCCA seed 0)" in line
    assert "not recorded (runs made before records named their files): MCCA seed 1" in line
    assert "Machines: AMD EPYC (2 cores): 3 runs, not recorded: 1 run." in line
    same = _provenance_section(records[:2])
    assert "differing" not in "\n".join(same) and "m.text.npz bbbbbbbbbbbb" in "\n".join(same)
    assert _provenance_section([]) == []


def test_the_report_names_runs_whose_validation_auc_stayed_at_chance():
    from recbole_psrq.benchmark.report import _chance_line

    def run(name, seed, valid, test=0.47):  # a LogLoss of 0.5 is no chance level
        return {"table": "T2", "budget": "converge", "name": name, "seed": seed,
                "best_valid_result": {"auc": valid, "logloss": 0.5}, "test_result": {"auc": test}}

    records = [run("WideDeep", 1, 0.86), run("WideDeep", 0, 0.501), run("DIN", 2, 0.4905, 0.52),
               run("DIN", 0, 0.489), run("DeepFM", 0, 0.511), {"table": "T2", "name": "Floor", "seed": 0}]
    line = _chance_line(records, "auc")[0]
    # sorted by name; DIN seed 0 (0.489) and DeepFM (0.511) are outside the margin, on either side
    assert line.split("tests): ")[1] == ("DIN seed 2 (validation 0.4905, test 0.5200), WideDeep seed 0 "
                                         "(validation 0.5010, test 0.4700).")
    assert _chance_line(records[:1], "auc") == [] and _chance_line(records, "logloss") == []


def test_only_and_exclude_select_experiments_by_name_and_refuse_unknown_names(tmp_path, capsys):
    for seed in range(2):
        for exp, auc in ((SUITES["smoke"][0], 0.7), (SUITES["smoke"][1], 0.72)):
            _write(tmp_path, exp, seed, _fake_record(exp.model, seed, auc + seed / 100))
    assert _report(tmp_path, "--exclude", "DeepFM") == 0
    md = (tmp_path / "results.md").read_text()
    assert "| **DIN** (baseline) | 2 |" in md and "| DeepFM |" not in md
    assert _report(tmp_path, "--only", "DeepFM") == 0
    assert "| DeepFM | 2 |" in (tmp_path / "results.md").read_text()
    for flags in (("--only", "DeepFm"), ("--exclude", "DIN,DIEN"), ("--exclude", "DIN,DeepFM")):
        with pytest.raises(SystemExit):
            _report(tmp_path, *flags)
    err = capsys.readouterr().err
    assert "['DeepFm'] are not in the smoke suite; its experiments: DIN, DeepFM" in err
    assert "['DIEN'] are not in the smoke suite" in err and "leaves no experiment of the smoke suite" in err


def test_a_second_benchmark_process_in_the_same_out_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from recbole_psrq.benchmark.lock import hold_out_folder\n"
         "with hold_out_folder(sys.argv[1], 'python -m recbole_psrq.benchmark --suite smoke --jobs 2'):\n"
         "    print('held', flush=True)\n"
         "    time.sleep(60)\n", str(out)],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = main(["--suite", "smoke", "--seeds", "1", "--budgets", "one_epoch", "--out", str(out),
                     "--report-only"])
        err = capsys.readouterr().err
        assert code == 2
        assert f"is in use by another benchmark process (pid {holder.pid}, since " in err
        assert "--suite smoke --jobs 2)" in err and "give this one another --out" in err
        assert not (out / "benchmark.log").exists() and not (out / "results.md").exists()  # nothing touched
    finally:
        holder.kill()  # SIGKILL: no cleanup ran, the kernel drops the lock with the process
        holder.wait(timeout=30)
    # the killed holder left no stale lock: the folder is free again (report-only: no runs yet, exit 1)
    assert main(["--suite", "smoke", "--seeds", "1", "--budgets", "one_epoch", "--out", str(out),
                 "--report-only"]) == 1
    assert (out / "results.md").exists()


def test_the_out_folder_lock_is_released_after_each_driver_in_one_process(tmp_path):
    from recbole_psrq.benchmark.lock import OutFolderBusy, hold_out_folder

    with hold_out_folder(str(tmp_path), "first"):
        with pytest.raises(OutFolderBusy, match=r"\(pid \d+, since .*: first\)"):
            with hold_out_folder(str(tmp_path), "second"):
                pass
    with hold_out_folder(str(tmp_path), "third"):  # released on leaving the block
        assert (tmp_path / ".benchmark.lock").read_text().endswith(": third")
