"""The benchmark's tuning stage (``--tune N``): every trainable experiment of the suite gets the same
budget of N validation-only trials (:mod:`recbole_psrq.tune`), and its best configuration is frozen as
``<out>/tuned/<budget>/<run key>.yaml``, which the seeded final runs read. Training-free rows (the
floors) are not tuned. The trial records stay under ``<out>/runs/tuning/`` (validation metrics only)."""
import os
import shutil

import yaml

from recbole_psrq.benchmark.runner import run_key, shown_path
from recbole_psrq.benchmark.suites import BUDGETS
from recbole_psrq.io import atomic_open


def training_free(model):
    from recbole_psrq.quick_start import resolve_model

    return bool(getattr(resolve_model(model), "training_free", False))


def frozen_path(out, budget, experiment):
    return os.path.join(out, "tuned", budget, f"{run_key(experiment)}.yaml")


def tune_suite(suite, budgets, dataset, out, extra, only, trials, executor, log, seed=0, batch=2,
               report_only=False):
    """Tune (or, with ``report_only``, only read the frozen results of) every trainable experiment.
    Returns ``tuned`` ({(budget, run key): frozen yaml}) and ``info`` ({(table, name): report entry or
    None}, for results.md's Tuning section)."""
    from recbole_psrq.tune.space import HYPER_DIR
    from recbole_psrq.tune.study import make_job, tune

    jobs, owners, info = [], {}, {}
    for budget in budgets:
        for experiment in suite:
            if only and experiment.name not in only:
                continue
            if training_free(experiment.model):
                info[(experiment.table, experiment.name)] = None
                continue
            key = (budget, run_key(experiment))
            owners.setdefault(key, []).append(experiment)
            if len(owners[key]) > 1 or report_only:
                continue
            overrides = {"torch_threads": 1, "sid_cache_dir": os.path.join(out, "runs", "sid_cache"),
                         **BUDGETS[budget], "eval_step": 1, **extra, **experiment.overrides}
            space = experiment.space and os.path.join(HYPER_DIR, experiment.space)
            jobs.append((key, make_job(f"{budget}/{experiment.name}", experiment.model, dataset, trials,
                                       os.path.join(out, "runs", "tuning", budget), overrides, (), seed,
                                       batch, space)))
    if jobs:
        studies = [job for _, job in jobs]
        log(f"tuning {len(studies)} experiment(s), {trials} trials each (seed {seed}, {batch} per round)")
        frozen = tune(studies, executor, log)
        for key, job in jobs:
            if frozen[job.name] is None:
                log(f"FAILED tuning {job.name}: every trial failed (see {shown_path(job.folder)}/trials)")
                continue
            target = frozen_path(out, key[0], owners[key][0])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(frozen[job.name]) as src, atomic_open(target, "w") as dst:
                shutil.copyfileobj(src, dst)
    tuned = {}
    for (budget, key), experiments in owners.items():
        path = frozen_path(out, budget, experiments[0])
        if not os.path.isfile(path):  # not tuned (yet): the caller leaves its runs out
            continue
        tuned[(budget, key)] = path
        with open(path) as f:
            summary = yaml.safe_load(f)["tuning"]
        entry = {"trials": summary["trials"], "pruned": summary["pruned"], "space": summary["space"],
                 "space_hash": summary["space_hash"], "chosen": summary["chosen"],
                 "best_valid": summary["best_valid"], "frozen": shown_path(path)}
        for e in experiments:
            info[(e.table, e.name)] = entry
    return tuned, info
