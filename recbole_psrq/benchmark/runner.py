"""Running a suite: one ``run_recbole_psrq.py`` process per (experiment, budget, seed), run through an
executor (:mod:`recbole_psrq.benchmark.executor`), its record written by this driver only, under
``<out>/runs/<budget>-<its settings hash>/<config fingerprint>/<run key>/seed<N>.json``; a finished run
is never rerun, so a killed suite resumes where it stopped."""
import json
import os
import platform
import subprocess

from recbole_psrq.benchmark.executor import LocalExecutor, Task, earlier_seconds
from recbole_psrq.benchmark.suites import BUDGETS
from recbole_psrq.errors import ConfigError
from recbole_psrq.io import atomic_open
from recbole_psrq.quick_start import PROJECT_ROOT


def shown_path(path):
    """``path`` relative to the repository when it lies inside it: committed logs name no machine's folders."""
    path = os.path.abspath(path)
    inside = os.path.commonpath([path, PROJECT_ROOT]) == PROJECT_ROOT
    return os.path.relpath(path, PROJECT_ROOT) if inside else path


def shown_arg(arg):
    """A command-line argument with its absolute path (``/x/y`` or ``--key=/x/y``) made relative to the
    repository, so a committed record names no machine's folders."""
    key, sep, value = arg.rpartition("=") if arg.startswith("--") else ("", "", arg)
    if not os.path.isabs(value):
        return arg
    return f"{key}{sep}{os.path.relpath(value, PROJECT_ROOT)}"


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


def config_fingerprint(experiment, dataset, tuned_file=None):
    """Hash of the yaml files the run is built from (the frozen tuned configuration included) and of the
    code it runs: editing the protocol, the dataset or model settings, retuning, or editing the code gives
    new runs instead of mixing results made differently."""
    import hashlib

    from recbole_psrq import quick_start

    protocol = experiment.overrides.get("protocol") or quick_start.default_protocol(
        quick_start.resolve_model(experiment.model))
    digest = hashlib.sha256()
    extra = [tuned_file] if tuned_file else []
    for path in quick_start.config_file_list(experiment.model, dataset, protocol, extra) + run_code_files():
        with open(path, "rb") as f:
            digest.update(os.path.relpath(path, PROJECT_ROOT).encode() + b"\0" + f.read())
    return digest.hexdigest()[:10]


def run_path(out, budget, experiment, seed, dataset, tuned_file=None):
    """The record of one run. The folder is the budget's name and settings (editing a budget's epochs gives
    new runs), then the config fingerprint, then the run key."""
    import hashlib

    settings = json.dumps(BUDGETS[budget], sort_keys=True).encode()
    folder = f"{budget}-{hashlib.sha256(settings).hexdigest()[:6]}"
    fingerprint = config_fingerprint(experiment, dataset, tuned_file)
    return os.path.join(out, "runs", folder, fingerprint, run_key(experiment), f"seed{seed}.json")


def run_task(experiment, budget, seed, dataset, out, extra_overrides, tuned_file=None):
    """The :class:`Task` of one training run, and the path of its record."""
    path = run_path(out, budget, experiment, seed, dataset, tuned_file)
    # one torch thread per run: on small shared machines 2 threads were measured ~7x slower.
    # The seed drives every seeded step of the run, the SIDs' k-means included, so the quantizers'
    # variance is part of the spread over seeds. SIDs are cached by content + config in one folder for
    # the whole suite (entries are written atomically and verified when read).
    # A killed run started again (a resumed suite) continues from its last validation: resume.pth lies
    # in the run's own working folder (its cwd), see recbole_psrq/resume.py.
    overrides = {"torch_threads": 1, "sid_cache_dir": os.path.join(out, "runs", "sid_cache"),
                 "resume_file": "resume.pth",
                 **BUDGETS[budget], **extra_overrides, **experiment.overrides, "seed": seed, "sid_seed": seed}
    argv = [os.path.join(PROJECT_ROOT, "run_recbole_psrq.py"), f"--model={experiment.model}",
            f"--dataset={dataset}"]
    if tuned_file:  # the frozen tuned configuration, below the experiment's own overrides
        argv.append(f"--config_files={os.path.abspath(tuned_file)}")
    argv += [f"--{k}={v}" for k, v in overrides.items()]
    # a working folder per run: its log, checkpoint and result JSON are nobody else's
    workdir = os.path.join(os.path.dirname(path), f"seed{seed}.work")
    key = f"{budget:10s} {experiment.name:16s} seed {seed}"
    return path, Task(key=key, argv=tuple(argv), workdir=workdir)


# the converted files a run reads (interactions, item/user features, content embeddings); the folder's
# README and stats (which hold the conversion's timings) are not inputs
DATA_SUFFIXES = (".inter", ".item", ".user", ".npz")


def data_identity(dataset, overrides):
    """{file name: sha256 (first 16 hex digits)} of the dataset files the runs read, from the folder
    ``overrides``' ``data_path`` (else the dataset's yaml) points to; empty when there is none. Content
    embeddings made on another machine can differ in their last bits (and then so do the SIDs fitted on
    them), so a record names the exact files it ran on."""
    import hashlib

    from recbole_psrq.quick_start import PROPERTIES_DIR, _resolve_data_path

    yaml_file = os.path.join(PROPERTIES_DIR, "dataset", f"{dataset}.yaml")
    folder = os.path.join(_resolve_data_path([yaml_file] if os.path.isfile(yaml_file) else [], overrides),
                          dataset)
    identity = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        if name.endswith(DATA_SUFFIXES) and os.path.isfile(path):
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            identity[name] = digest.hexdigest()[:16]
    return identity


def machine():
    """The CPU a run ran on (runs of one row may come from several machines)."""
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    return {"cpu": model or platform.processor() or platform.machine() or "unknown", "cores": os.cpu_count()}


def make_record(experiment, budget, seed, task, outcome, tuned_file=None, data=None):
    result = outcome["result"]
    return {"model": experiment.model, "overrides": experiment.overrides, "budget": budget,
            "seed": seed, "wall_seconds": outcome["wall"] + earlier_seconds(result),
            "resumed": result.get("resumed"), "test_result": result["test_result"],
            "best_valid_result": result["best_valid_result"], "protocol": result.get("protocol_checks"),
            "tuned": shown_path(tuned_file) if tuned_file else None,
            "git": git_state(), "data": data, "machine": machine(),
            "command": " ".join(shown_arg(a) for a in task.argv),
            "log_file": shown_path(os.path.join(task.workdir, result["log_file"]))}


def run_one(experiment, budget, seed, dataset, out, extra_overrides, log, tuned_file=None):
    """Run (or reuse) one training run here. Returns its record dict (None when it failed)."""
    records, _ = run_all([(experiment, budget, seed)], dataset, out, extra_overrides, log,
                         LocalExecutor(1), {(budget, run_key(experiment)): tuned_file})
    return records.get((budget, run_key(experiment), seed))


def run_all(units, dataset, out, extra_overrides, log, executor, tuned=None):
    """Run every (experiment, budget, seed) of ``units`` that has no record yet, through ``executor``.
    ``tuned`` maps (budget, run key) to a frozen tuned yaml. Returns ({(budget, run key, seed): record},
    [failed unit]); only this driver writes records, each atomically as its run finishes."""
    tuned = tuned or {}
    records, pending, task_info, failed = {}, {}, {}, []
    for experiment, budget, seed in units:
        key = (budget, run_key(experiment), seed)
        if key in records or key in pending.values():
            continue
        tuned_file = tuned.get((budget, run_key(experiment)))
        path, task = run_task(experiment, budget, seed, dataset, out, extra_overrides, tuned_file)
        if os.path.isfile(path):
            log(f"skip   {task.key} (done: {shown_path(path)})")
            with open(path) as f:
                records[key] = json.load(f)
            continue
        pending[task] = key
        task_info[task] = (experiment, budget, seed, path, tuned_file)
    for task in pending:
        log(f"run    {task.key}")
    data = data_identity(dataset, extra_overrides) if pending else None
    for task, outcome in executor.map(list(pending)):
        experiment, budget, seed, path, tuned_file = task_info.pop(task)
        if not outcome["ok"]:
            log(f"FAILED {task.key} after {outcome['wall']:.0f}s:\n{outcome['tail']}")
            failed.append((experiment, budget, seed))
            continue
        record = make_record(experiment, budget, seed, task, outcome, tuned_file, data)
        with atomic_open(path, "w") as f:  # only a finished run leaves a record: a killed one is rerun
            json.dump(record, f, indent=2)
        records[pending[task]] = record
        log(f"done   {task.key} in {record['wall_seconds']:.0f}s: {_short(record['test_result'])}")
    return records, failed


EXECUTORS = ("local", "ray")


def make_executor(name="local", jobs=1, ray_address=None, cpus_per_task=1, gpus_per_task=0):
    """The executor of runs and tuning trials: ``local`` (``jobs`` processes here) or ``ray``."""
    if name == "local":
        return LocalExecutor(jobs)
    if name == "ray":
        from recbole_psrq.benchmark.ray_executor import RayExecutor

        return RayExecutor(address=ray_address, cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task)
    raise ConfigError(f"Unknown executor '{name}'; use one of {', '.join(EXECUTORS)}.")


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


def collect_runs(suite, budgets, seeds, dataset, out, extra, only, report_only, log, executor=None,
                 tuned=None):
    """Run (or, with ``report_only``, only read) every run of the suite through ``executor`` (default: one
    local process at a time). Returns ``records_by_exp`` ({(budget, table, name): {seed: record}}), the
    records as report rows and the missing runs."""
    tuned = tuned or {}
    units = [(e, b, s) for b in budgets for s in seeds for e in suite if not only or e.name in only]
    if report_only:
        done = {}
        for e, b, s in units:
            path = run_path(out, b, e, s, dataset, tuned.get((b, run_key(e))))
            if os.path.isfile(path):
                with open(path) as f:
                    done[(b, run_key(e), s)] = json.load(f)
    else:
        done, _ = run_all(units, dataset, out, extra, log, executor or LocalExecutor(1), tuned)
    records_by_exp, records, missing = {}, [], []
    for experiment, budget, seed in units:
        record = done.get((budget, run_key(experiment), seed))
        if record is None:
            missing.append(f"{experiment.table} {experiment.name} {budget} seed {seed}")
            continue
        records_by_exp.setdefault((budget, experiment.table, experiment.name), {})[seed] = record
        records.append({**record, "table": experiment.table, "name": experiment.name})
    return records_by_exp, records, missing


def progress(suite, budgets, seeds, records_by_exp, only=(), jobs=1):
    """Lines saying how far a study is: per experiment (a run shared between tables counted once) its
    finished seeds and mean wall time per run, then the runs left and what they should cost at those means
    (experiments with no finished run are counted apart: their cost is unknown)."""
    lines, left_seconds, left_unknown, left_runs, seen = [], 0.0, [], 0, set()
    for budget in budgets:
        for e in suite:
            if (only and e.name not in only) or (budget, run_key(e)) in seen:
                continue
            seen.add((budget, run_key(e)))
            done = records_by_exp.get((budget, e.table, e.name), {})
            walls = [r["wall_seconds"] for s, r in done.items() if s in seeds]
            missing = len(seeds) - len(walls)
            mean = sum(walls) / len(walls) if walls else None
            left_runs += missing
            if missing and mean is None:
                left_unknown.append(e.name)
            elif missing:
                left_seconds += missing * mean
            lines.append(f"{budget:10s} {e.name:22s} {len(walls)}/{len(seeds)} seeds" +
                         (f", {mean:.0f} s/run" if mean is not None else ""))
    total = (f"{left_runs} run(s) left: ~{left_seconds / 3600:.1f} run-hours at the finished runs' mean wall "
             f"(~{left_seconds / 3600 / max(1, jobs):.1f} h with --jobs {max(1, jobs)})")
    if left_unknown:
        total += f", plus {', '.join(left_unknown)} (no finished run yet: cost unknown)"
    return lines + [total]
