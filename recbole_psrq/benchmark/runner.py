"""Running a suite: one ``run_recbole_psrq.py`` process per (experiment, budget, seed), its record kept
under ``<out>/runs/<budget>/<config fingerprint>/<run key>/seed<N>.json``; a finished run is never rerun,
so a killed suite resumes where it stopped."""
import json
import os
import subprocess
import sys
import time

from recbole_psrq.benchmark.suites import BUDGETS
from recbole_psrq.io import atomic_open
from recbole_psrq.quick_start import PROJECT_ROOT


def shown_path(path):
    """``path`` relative to the repository when it lies inside it: committed logs name no machine's folders."""
    path = os.path.abspath(path)
    inside = os.path.commonpath([path, PROJECT_ROOT]) == PROJECT_ROOT
    return os.path.relpath(path, PROJECT_ROOT) if inside else path


def run_key(experiment):
    """Runs shared between tables (e.g. DIN in T2/T3/T4) are trained once."""
    parts = [experiment.model] + [f"{k}={v}" for k, v in sorted(experiment.overrides.items())]
    safe = "".join(c if c.isalnum() or c in "=_-." else "_" for c in "__".join(parts))
    return safe[:150]


def run_code_files():
    """The code a run executes: the runner script and every module of the package except the benchmark
    driver itself (its report writers do not change what a run computes)."""
    package = os.path.join(PROJECT_ROOT, "recbole_psrq")
    driver = os.path.join(package, "benchmark")
    files = [os.path.join(PROJECT_ROOT, "run_recbole_psrq.py")]
    for folder, subfolders, names in os.walk(package):
        subfolders[:] = sorted(d for d in subfolders if d != "__pycache__"
                               and os.path.join(folder, d) != driver)
        files += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".py")]
    return files


def config_fingerprint(experiment, dataset):
    """Hash of the yaml files the run is built from and of the code it runs: editing the protocol, the
    dataset or model settings, or the code gives new runs instead of mixing results made differently."""
    import hashlib

    from recbole_psrq import quick_start

    protocol = experiment.overrides.get("protocol") or quick_start.default_protocol(
        quick_start.resolve_model(experiment.model))
    digest = hashlib.sha256()
    for path in quick_start.config_file_list(experiment.model, dataset, protocol) + run_code_files():
        with open(path, "rb") as f:
            digest.update(os.path.relpath(path, PROJECT_ROOT).encode() + b"\0" + f.read())
    return digest.hexdigest()[:10]


def run_path(out, budget, experiment, seed, dataset):
    return os.path.join(out, "runs", budget, config_fingerprint(experiment, dataset),
                        run_key(experiment), f"seed{seed}.json")


def run_one(experiment, budget, seed, dataset, out, extra_overrides, log):
    """Run (or reuse) one training run. Returns its record dict."""
    path = run_path(out, budget, experiment, seed, dataset)
    if os.path.isfile(path):
        log(f"skip   {budget:10s} {experiment.name:16s} seed {seed} (done: {shown_path(path)})")
        with open(path) as f:
            return json.load(f)
    # one torch thread per run: on small shared machines 2 threads were measured ~7x slower.
    # The seed drives every seeded step of the run, the SIDs' k-means included, so the quantizers'
    # variance is part of the spread over seeds. SIDs are cached by content + config in one folder for
    # the whole suite (entries are written atomically and verified when read).
    overrides = {"torch_threads": 1, "sid_cache_dir": os.path.join(out, "runs", "sid_cache"),
                 **BUDGETS[budget], **extra_overrides, **experiment.overrides, "seed": seed, "sid_seed": seed}
    command = [sys.executable, os.path.join(PROJECT_ROOT, "run_recbole_psrq.py"),
               f"--model={experiment.model}", f"--dataset={dataset}"]
    command += [f"--{k}={v}" for k, v in overrides.items()]
    # a working folder per run: its log, checkpoint and result JSON are nobody else's
    workdir = os.path.join(os.path.dirname(path), f"seed{seed}.work")
    os.makedirs(workdir, exist_ok=True)
    log(f"run    {budget:10s} {experiment.name:16s} seed {seed}")
    start = time.time()
    proc = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": PROJECT_ROOT})
    wall = time.time() - start
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        log(f"FAILED {budget:10s} {experiment.name:16s} seed {seed} after {wall:.0f}s:\n{tail}")
        return None
    result_file = next(line.split(" to ", 1)[1] for line in proc.stdout.splitlines()
                       if line.startswith("results written to "))
    with open(os.path.join(workdir, result_file)) as f:
        result = json.load(f)
    record = {"model": experiment.model, "overrides": experiment.overrides, "budget": budget,
              "seed": seed, "wall_seconds": wall, "test_result": result["test_result"],
              "best_valid_result": result["best_valid_result"], "protocol": result.get("protocol_checks"),
              "git": git_state(), "command": " ".join(command[1:]),
              "log_file": os.path.join(workdir, result["log_file"])}
    with atomic_open(path, "w") as f:  # only a finished run leaves a record: a killed one is rerun
        json.dump(record, f, indent=2)
    log(f"done   {budget:10s} {experiment.name:16s} seed {seed} in {wall:.0f}s: "
        f"{_short(result['test_result'])}")
    return record


def git_state():
    """The commit of the code that ran, and the paths with uncommitted changes (empty on a clean tree);
    results/ is left out: the suite writes there while it runs."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True).stdout.strip() or "unknown"
        status = subprocess.run(["git", "status", "--porcelain"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True).stdout.splitlines()
    except OSError:
        return {"commit": "unknown", "dirty": []}
    return {"commit": commit, "dirty": [line[3:] for line in status if not line[3:].startswith("results/")]}


def _short(metrics):
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())


def collect_runs(suite, budgets, seeds, dataset, out, extra, only, report_only, log):
    """Run (or, with ``report_only``, only read) every run of the suite. Returns ``records_by_exp``
    ({(budget, table, name): {seed: record}}), the records as report rows and the missing runs."""
    records_by_exp, records, missing, done_keys = {}, [], [], {}
    for budget in budgets:
        for seed in seeds:
            for experiment in suite:
                if only and experiment.name not in only:
                    continue
                key = (budget, run_key(experiment), seed)
                if key in done_keys:  # the same run listed in several tables
                    record = done_keys[key]
                elif report_only:
                    path = run_path(out, budget, experiment, seed, dataset)
                    record = json.load(open(path)) if os.path.isfile(path) else None
                else:
                    record = run_one(experiment, budget, seed, dataset, out, extra, log)
                done_keys[key] = record
                if record is None:
                    missing.append(f"{experiment.table} {experiment.name} {budget} seed {seed}")
                    continue
                records_by_exp.setdefault((budget, experiment.table, experiment.name), {})[seed] = record
                records.append({**record, "table": experiment.table, "name": experiment.name})
    return records_by_exp, records, missing
