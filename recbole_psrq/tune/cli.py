"""The command line of ``python -m recbole_psrq.tune``: tune one model on validation, freeze the best
trial as ``<out>/<Model>-<hash>/tuned.yaml`` and print how to use it."""
import argparse
import datetime
import os
import sys

from recbole_psrq import tune
from recbole_psrq.benchmark.runner import EXECUTORS, make_executor
from recbole_psrq.benchmark.suites import BUDGETS
from recbole_psrq.errors import PSRQError


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_psrq.tune", description=tune.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", default="synthetic_music")
    parser.add_argument("--trials", type=int, required=True, help="the budget: trials run (pruned ones count)")
    parser.add_argument("--space", default=None,
                        help="search-space file (project yaml or RecBole hyper format); default "
                             "properties/hyper/<Model>.yaml (+ sid.yaml when the run has SID fields)")
    parser.add_argument("--budget", default="early_stop", choices=sorted(BUDGETS),
                        help="epochs / early stopping of each trial (validation runs every epoch)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the sampler and every trial's training")
    parser.add_argument("--batch", type=int, default=2,
                        help="trials sampled per round; results depend on it, not on --jobs")
    parser.add_argument("--config_files", default="", help="space-separated yaml files")
    parser.add_argument("--out", default=None, help="default: results/<dataset>/tuning")
    parser.add_argument("--executor", default="local", choices=EXECUTORS)
    parser.add_argument("--jobs", type=int, default=1, help="concurrent trials (local executor)")
    parser.add_argument("--ray-address", default=None, help="an existing Ray cluster (ray executor)")
    args, unknown = parser.parse_known_args(argv)
    bad = [item for item in unknown if not (item.startswith("--") and "=" in item)]
    if bad:
        parser.error(f"unrecognised {bad}; RecBole overrides are --key=value")
    extra = dict(item[2:].split("=", 1) for item in unknown)
    from recbole_psrq.tune.study import make_job, tune as run_studies

    out = os.path.abspath(args.out or os.path.join("results", args.dataset, "tuning"))
    overrides = {"torch_threads": 1, "sid_cache_dir": os.path.join(out, "sid_cache"),
                 **BUDGETS[args.budget], "eval_step": 1, **extra}

    def log(message):
        print(f"{datetime.datetime.now():%H:%M:%S} {message}", flush=True)

    try:
        job = make_job(args.model, args.model, args.dataset, args.trials, out, overrides,
                       args.config_files.split(), args.seed, args.batch, args.space)
        log(f"tuning {args.model} on {args.dataset}: {args.trials} trials over "
            + ", ".join(f"{k} {v}" for k, v in job.space.describe().items()) + f" -> {job.folder}")
        executor = make_executor(args.executor, args.jobs, args.ray_address)
        try:
            frozen = run_studies([job], executor, log)[job.name]
        finally:
            executor.close()
    except PSRQError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if frozen is None:
        print(f"error: every trial failed; see {job.folder}/trials/", file=sys.stderr)
        return 1
    from recbole_psrq.tune.study import read_frozen

    info = read_frozen(frozen)
    log(f"best: trial {info['best_trial']}, validation {info['best_valid']['metric']} "
        f"{info['best_valid']['score']:.4f}: {info['chosen']}")
    print(f"frozen configuration: {frozen}\nrun it with: python run_recbole_psrq.py --model={args.model} "
          f"--dataset={args.dataset} --config_files={os.path.relpath(frozen)}")
    return 0
