"""The command line of ``python -m recbole_psrq.benchmark``: run (or resume) a suite, then write the
report (``results.md``/``.csv``/``.tex``, plots, ``environment.json``) and ``benchmark.log`` in ``--out``."""
import argparse
import contextlib
import datetime
import json
import os
import shlex
import sys

from recbole_psrq import benchmark
from recbole_psrq.benchmark.plots import plot_claims, plot_metrics, plot_sid_drift
from recbole_psrq.benchmark.report import (environment, read_sid_reports, write_csv, write_latex, write_markdown,
                                           write_sid_quality_csv)
from recbole_psrq.benchmark.checks import IntegrityError, check_same_test_rows, dirty_sources
from recbole_psrq.benchmark.lock import OutFolderBusy, hold_out_folder
from recbole_psrq.benchmark.runner import (EXECUTORS, collect_runs, git_state, make_executor, progress, run_key,
                                           shown_arg, shown_path)
from recbole_psrq.benchmark.tuning import training_free, tune_suite
from recbole_psrq.benchmark.stats import compare_claims, summarize
from recbole_psrq.benchmark.suites import BUDGETS, SUITES
from recbole_psrq.errors import PSRQError


def main(argv=None):
    with contextlib.ExitStack() as held:
        return _main(argv, held)


def _main(argv, held):
    parser = argparse.ArgumentParser(prog="python -m recbole_psrq.benchmark",
                                     description=benchmark.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="paper", choices=sorted(SUITES))
    parser.add_argument("--dataset", default="synthetic_music")
    parser.add_argument("--seeds", default="5",
                        help="N (seeds 0..N-1) or a comma-separated list, e.g. 1,2 (one driver per --out folder: "
                             "run in parallel with --jobs or --executor ray)")
    parser.add_argument("--budgets", default="one_epoch,early_stop",
                        help=f"comma-separated, from {list(BUDGETS)}")
    parser.add_argument("--out", default=None, help="default: results/<dataset>")
    parser.add_argument("--only", default="", help="comma-separated experiment names to run")
    parser.add_argument("--exclude", default="",
                        help="comma-separated experiment names to leave out (e.g. a model too slow for this "
                             "machine, run later on its own with --only)")
    parser.add_argument("--report-only", action="store_true", help="aggregate finished runs only")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="write the report although the tree or a run had uncommitted changes (results.md "
                             "then says so); refused otherwise")
    parser.add_argument("--tune", type=int, default=0, metavar="N",
                        help="first tune every trainable experiment on validation with N trials each (the "
                             "same budget for all), freeze the best, and run the seeds with it")
    parser.add_argument("--tune-seed", type=int, default=0, help="seeds the tuning studies and their trials")
    parser.add_argument("--tune-user-fraction", type=float, default=None,
                        help="tune on a fixed subsample of the users (e.g. 0.3; the same users for every "
                             "model), the seeded final runs on all of them")
    parser.add_argument("--tune-batch", type=int, default=2,
                        help="trials sampled per round of a study; results depend on it, not on --jobs")
    parser.add_argument("--executor", default="local", choices=EXECUTORS,
                        help="local: a process pool on this machine; ray: a Ray cluster (see README, Scaling out)")
    parser.add_argument("--jobs", type=int, default=1, help="concurrent runs/trials (local executor)")
    parser.add_argument("--ray-address", default=None,
                        help="address of a running Ray cluster, e.g. 10.0.0.1:6379 (default: start Ray here)")
    parser.add_argument("--cpus-per-task", type=float, default=1, help="CPUs Ray reserves per run (ray)")
    parser.add_argument("--gpus-per-task", type=float, default=0, help="GPUs Ray reserves per run (ray)")
    args, unknown = parser.parse_known_args(argv)
    bad_args = [item for item in unknown if not (item.startswith("--") and "=" in item)]
    if bad_args:
        parser.error(f"unrecognised {bad_args}; RecBole overrides for every run are --key=value")
    extra = dict(item[2:].split("=", 1) for item in unknown)
    budgets = [b for b in args.budgets.split(",") if b]
    bad = [b for b in budgets if b not in BUDGETS]
    if bad:
        parser.error(f"unknown budget(s) {bad}; use {list(BUDGETS)}")
    out = os.path.abspath(args.out or os.path.join("results", args.dataset))
    os.makedirs(out, exist_ok=True)
    # quoted as a shell needs it (an experiment name such as "Floor: popularity" holds a space), absolute
    # paths relative to the repository, where it runs: a committed report names no machine's folders
    command = "python -m recbole_psrq.benchmark " + shlex.join(
        shown_arg(arg) for arg in (argv if argv is not None else sys.argv[1:]))
    try:
        held.enter_context(hold_out_folder(out, command))
    except OutFolderBusy as e:  # not logged: benchmark.log belongs to the other process
        print(f"error: {e}", file=sys.stderr)
        return 2
    suite = SUITES[args.suite]
    only = {n for n in args.only.split(",") if n}
    exclude = {n for n in args.exclude.split(",") if n}
    names = list(dict.fromkeys(e.name for e in suite))
    unknown_names = sorted((only | exclude) - set(names))
    if unknown_names:  # a misspelt name would silently run nothing of that row
        parser.error(f"--only/--exclude name(s) {unknown_names} are not in the {args.suite} suite; its "
                     f"experiments: {', '.join(names)}")
    if exclude:
        only = {n for n in (only or names) if n not in exclude}
        if not only:  # an empty set would mean "every experiment" below
            parser.error(f"--exclude leaves no experiment of the {args.suite} suite to run")
    try:
        seeds = ([int(x) for x in args.seeds.split(",") if x.strip()] if "," in args.seeds
                 else list(range(int(args.seeds))))
    except ValueError:
        parser.error(f"--seeds takes N or a comma-separated list of seeds, got {args.seeds!r}")
    log_path = os.path.join(out, "benchmark.log")

    def log(message):
        line = f"{datetime.datetime.now():%H:%M:%S} {message}"
        print(line, flush=True)
        with open(log_path, "a") as f:
            f.write(line + "\n")

    executor = None
    try:
        if not args.report_only:
            executor = make_executor(args.executor, args.jobs, args.ray_address, args.cpus_per_task,
                                     args.gpus_per_task)
        tuned, tuning, untuned = {}, None, []
        if args.tune:
            tune_extra = {**extra, **({"user_fraction": args.tune_user_fraction}
                                      if args.tune_user_fraction else {})}
            tuned, tuning = tune_suite(suite, budgets, args.dataset, out, tune_extra, only, args.tune,
                                       executor, log, args.tune_seed, args.tune_batch, args.report_only)
            # a trainable experiment without a frozen configuration is not run untuned: it is missing
            untuned = [e for e in suite if (not only or e.name in only) and not training_free(e.model)
                       and any((b, run_key(e)) not in tuned for b in budgets)]
            suite_to_run = [e for e in suite if e not in untuned]
        else:
            suite_to_run = suite
        records_by_exp, records, missing = collect_runs(suite_to_run, budgets, seeds, args.dataset, out,
                                                       extra, only, args.report_only, log, executor, tuned)
    except PSRQError as e:
        log(f"error: {e}")
        return 2
    finally:
        if executor is not None:
            executor.close()
    missing += [f"{e.table} {e.name}: not tuned (tuning unfinished or every trial failed)" for e in untuned]
    if args.report_only and missing:
        for line in progress(suite_to_run, budgets, seeds, records_by_exp, only, args.jobs):
            log(f"progress {line}")
    try:
        check_same_test_rows(records_by_exp, suite)
    except IntegrityError as e:
        log(f"error: {e}")
        return 2
    tree = git_state()
    not_clean = dirty_sources(records, tree)
    if not_clean and not args.allow_dirty:
        log("error: refusing to write a report that is not from a clean commit:\n  "
            + "\n  ".join(not_clean[:10]) + ("\n  ..." if len(not_clean) > 10 else "")
            + "\nCommit the changes and rerun the affected runs, or pass --allow-dirty (results.md then "
              "says so).")
        return 2
    rows = summarize(records_by_exp, suite, budgets, seeds)
    claims = compare_claims(records_by_exp, suite, budgets)
    env = environment(tree)
    sid_entries = read_sid_reports(out, args.dataset)
    write_markdown(os.path.join(out, "results.md"), rows, command, env, args.dataset, seeds, missing,
                   not_clean, tuning=tuning, claims=claims, sid_entries=sid_entries, records=records)
    write_sid_quality_csv(os.path.join(out, "sid_quality.csv"), sid_entries)
    write_csv(os.path.join(out, "results.csv"), records, rows, claims, tuning)
    write_latex(os.path.join(out, "results.tex"), rows)
    plots = plot_metrics(out, rows) + plot_claims(out, claims)
    drift = plot_sid_drift(out, sid_entries)
    with open(os.path.join(out, "environment.json"), "w") as f:
        json.dump({**env, "command": command}, f, indent=2)
    log(f"wrote {shown_path(out)}/results.md, results.csv, results.tex, sid_quality.csv, "
        f"{len(plots) + bool(drift)} plot(s); "
        f"{len(missing)} run(s) missing")
    return 0 if not missing else 1
