"""Multi-seed benchmark: the paper's comparisons (its Tables 2-4) plus a top-k table, on any dataset.

    python -m recbole_psrq.benchmark --suite paper --dataset mpd-5k --seeds 3 --out results/mpd-5k

Every (experiment, budget, seed) is one ``run_recbole_psrq.py`` process; its result JSON is kept under
``<out>/runs/`` and a finished run is never rerun, so a killed suite resumes where it stopped.
Budgets: ``one_epoch`` (the paper trains 1 epoch) and ``early_stop`` (up to ``--max-epochs``, stopped
on the validation metric). Model selection uses validation only; test metrics are only read.
Outputs in ``<out>``: ``results.csv`` (one row per run), ``results.md`` and ``results.tex`` (mean ± std
over seeds, paired t-test against the table's baseline on the same seeds, wall time), PNG plots, and
the command, git commit and package versions that produced them.
"""
import argparse
import csv
import datetime
import glob
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from recbole_psrq.io import atomic_open
from recbole_psrq.quick_start import PROJECT_ROOT

BUDGETS = {
    # one epoch leaves nothing to select, so no validation pass (eval_step 0: RecBole saves the model
    # after the epoch); validating would not change the test metrics, only cost time (a full-sort
    # validation of MCCA on MPD-5k takes ~30 min on one CPU core)
    "one_epoch": {"epochs": 1, "eval_step": 0},
    "early_stop": {"epochs": 20, "stopping_step": 2},
}
CTR_METRICS = ["auc", "coldauc", "userauc", "logloss"]  # userauc = GAUC (value-type)
TOPK_METRICS = ["recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr@10"]
SMALLER_IS_BETTER = {"logloss"}
POINTWISE_NEGATIVES = {"train_neg_sample_args": "{'distribution': 'uniform', 'sample_num': 1}"}


@dataclass(frozen=True)
class Experiment:
    table: str
    name: str
    model: str
    overrides: dict = field(default_factory=dict)


def _din_sid(quantizer, levels=3):
    return {"sid_modalities": "['text']", "sid_quantizer": quantizer, "sid_levels": levels}


SEQ_TEXT_SID = {"sid_modalities": "['text']", "selected_features": "['text_sid']"}


PAPER_SUITE = [
    Experiment("T2", "DIN", "DIN"),
    # RecBole's DIEN (GRU) cannot take an empty history: it scores only rows with >= 1 earlier positive
    Experiment("T2", "DIEN", "DIEN", {"history_min_length": 1}),
    Experiment("T2", "DeepFM", "DeepFM"),
    Experiment("T2", "WideDeep", "WideDeep"),
    Experiment("T2", "PSRQ+MCCA", "MCCA"),
    Experiment("T3", "DIN", "DIN"),
    Experiment("T3", "DIN+PQ", "DIN", _din_sid("pq", 4)),
    Experiment("T3", "DIN+VQ", "DIN", _din_sid("vq", 1)),
    Experiment("T3", "DIN+RQ", "DIN", _din_sid("rq_kmeans")),
    Experiment("T3", "DIN+RQ-VAE", "DIN", _din_sid("rq_vae")),
    Experiment("T3", "DIN+PSRQ", "DIN", _din_sid("psrq")),
    Experiment("T4", "DIN", "DIN"),
    Experiment("T4", "MCCA w/o MSC", "MCCA", {"mcca_variant": "wo_msc"}),
    Experiment("T4", "MCCA w/o MJC", "MCCA", {"mcca_variant": "wo_mjc"}),
    Experiment("T4", "PSRQ+MCCA", "MCCA"),
    Experiment("TopK", "SASRec", "SASRec"),
    Experiment("TopK", "GRU4Rec", "GRU4Rec"),
    Experiment("TopK", "BERT4Rec", "BERT4Rec"),
    Experiment("TopK", "SASRecF+SID", "SASRecF", SEQ_TEXT_SID),
    Experiment("TopK", "FDSA+SID", "FDSA", SEQ_TEXT_SID),
    Experiment("TopK", "PSRQ+MCCA", "MCCA", {"protocol": "topk", **POINTWISE_NEGATIVES}),
]
SUITES = {
    "paper": PAPER_SUITE,
    "ctr": [e for e in PAPER_SUITE if e.table != "TopK"],
    "smoke": [Experiment("T2", "DIN", "DIN"), Experiment("T2", "DeepFM", "DeepFM")],
    # MCCA against DIN with and without SIDs, and the ablations (issue 4's default-dataset check)
    "mcca": [e for e in PAPER_SUITE if e.table in ("T3", "T4")
             and e.name in ("DIN", "DIN+PSRQ", "MCCA w/o MSC", "MCCA w/o MJC", "PSRQ+MCCA")],
}
BASELINES = {"T2": "DIN", "T3": "DIN", "T4": "DIN", "TopK": "SASRec"}
TABLE_TITLES = {
    "T2": "Table 2: MCCA vs CTR baselines",
    "T3": "Table 3: DIN + text SIDs from each quantizer",
    "T4": "Table 4: MCCA ablations",
    "TopK": "Top-k (full sort): MCCA vs sequential baselines",
}


def run_key(experiment):
    """Runs shared between tables (e.g. DIN in T2/T3/T4) are trained once."""
    parts = [experiment.model] + [f"{k}={v}" for k, v in sorted(experiment.overrides.items())]
    safe = "".join(c if c.isalnum() or c in "=_-." else "_" for c in "__".join(parts))
    return safe[:150]


def config_fingerprint(experiment, dataset):
    """Hash of the yaml files the run is built from: editing the protocol, dataset or model settings
    gives new runs instead of mixing results made under different settings."""
    import hashlib

    from recbole_psrq import quick_start

    protocol = experiment.overrides.get("protocol") or quick_start.default_protocol(
        quick_start.resolve_model(experiment.model))
    digest = hashlib.sha256()
    for path in quick_start.config_file_list(experiment.model, dataset, protocol):
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
        log(f"skip   {budget:10s} {experiment.name:16s} seed {seed} (done: {path})")
        with open(path) as f:
            return json.load(f)
    # one torch thread per run: on small shared machines 2 threads were measured ~7x slower
    overrides = {"torch_threads": 1, **BUDGETS[budget], **extra_overrides, **experiment.overrides,
                 "seed": seed}
    command = [sys.executable, os.path.join(PROJECT_ROOT, "run_recbole_psrq.py"),
               f"--model={experiment.model}", f"--dataset={dataset}"]
    command += [f"--{k}={v}" for k, v in overrides.items()]
    workdir = os.path.join(out, "runs", "work")
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
              "best_valid_result": result["best_valid_result"],
              "command": " ".join(command[1:]), "log_file": result["log_file"]}
    with atomic_open(path, "w") as f:  # only a finished run leaves a record: a killed one is rerun
        json.dump(record, f, indent=2)
    log(f"done   {budget:10s} {experiment.name:16s} seed {seed} in {wall:.0f}s: "
        f"{_short(result['test_result'])}")
    return record


def _short(metrics):
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())


def paired_ttest(values, baseline):
    """Two-sided paired t-test p-value over seeds (nan when undefined)."""
    from scipy import stats

    values, baseline = np.asarray(values, float), np.asarray(baseline, float)
    if len(values) < 2 or len(values) != len(baseline) or np.allclose(values, baseline):
        return float("nan")
    return float(stats.ttest_rel(values, baseline).pvalue)


def summarize(records_by_exp, suite, budgets, seeds):
    """Rows of {table, name, budget, n, metric: (mean, std, p), wall} for the report writers."""
    rows = []
    for budget in budgets:
        for experiment in suite:
            records = records_by_exp.get((budget, experiment.table, experiment.name), {})
            if not records:
                continue
            baseline = next(e for e in suite if e.table == experiment.table
                            and e.name == BASELINES[experiment.table])
            base_records = records_by_exp.get((budget, baseline.table, baseline.name), {})
            metric_names = TOPK_METRICS if experiment.table == "TopK" else CTR_METRICS
            row = {"table": experiment.table, "name": experiment.name, "budget": budget,
                   "n": len(records), "metrics": {}, "is_baseline": experiment == baseline,
                   "wall": float(np.mean([r["wall_seconds"] for r in records.values()]))}
            for metric in metric_names:
                values = [r["test_result"].get(metric) for r in records.values()]
                if any(v is None for v in values):
                    continue
                paired = [s for s in records if s in base_records]
                p = paired_ttest([records[s]["test_result"][metric] for s in paired],
                                 [base_records[s]["test_result"][metric] for s in paired])
                row["metrics"][metric] = (float(np.mean(values)), float(np.std(values, ddof=1))
                                          if len(values) > 1 else 0.0, p)
            rows.append(row)
    return rows


def environment():
    import importlib.metadata as md

    versions = {}
    for name in ("recbole", "torch", "numpy", "pandas", "scipy", "faiss-cpu", "transformers"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit, dirty = "unknown", ""
    return {"python": sys.version.split()[0], "packages": versions,
            "git_commit": commit + (" (with uncommitted changes)" if dirty else ""),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _fmt(stats):
    mean, std, p = stats
    p_text = "" if np.isnan(p) else f" (p={p:.3g})"
    return f"{mean:.4f} ± {std:.4f}{p_text}"


def _table_blocks(rows):
    """(title, budget, rows, metric names present) for each non-empty table x budget."""
    for table, title in TABLE_TITLES.items():
        for budget in BUDGETS:
            table_rows = [r for r in rows if r["table"] == table and r["budget"] == budget]
            metrics = TOPK_METRICS if table == "TopK" else CTR_METRICS
            metrics = [m for m in metrics if any(m in r["metrics"] for r in table_rows)]
            if table_rows:
                yield title, budget, table_rows, metrics


def write_markdown(path, rows, command, env, dataset, seeds, missing):
    lines = [f"# Benchmark results: {dataset}", "",
             f"Command: `{command}`  ", f"Seeds: {seeds}  ", f"Git commit: {env['git_commit']}  ",
             f"Date: {env['date']}  ", f"Python {env['python']}; " +
             ", ".join(f"{k} {v}" for k, v in env["packages"].items()), "",
             "Cells: mean ± std over seeds on the test split. Budget `one_epoch`: the model after one epoch "
             "(nothing to select); `early_stop`: the checkpoint with the best validation score. "
             "p = two-sided paired t-test against the table's baseline (DIN for T2-T4, SASRec for "
             "top-k) on the same seeds. LogLoss: lower is better.", ""]
    for title, budget, table_rows, metrics in _table_blocks(rows):
        lines += [f"## {title} — budget `{budget}`", "",
                  "| method | seeds | " + " | ".join(metrics) + " | wall s/run |",
                  "|---|---|" + "---|" * len(metrics) + "---|"]
        for r in table_rows:
            cells = [_fmt(r["metrics"][m]) if m in r["metrics"] else "–" for m in metrics]
            name = f"**{r['name']}** (baseline)" if r["is_baseline"] else r["name"]
            lines.append(f"| {name} | {r['n']} | " + " | ".join(cells) + f" | {r['wall']:.0f} |")
        lines.append("")
    if missing:
        lines += ["## Runs not (yet) finished", ""] + [f"- {m}" for m in missing] + [""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def write_csv(path, records):
    metric_names = sorted({m for r in records for m in r["test_result"]})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["table", "name", "model", "overrides", "budget", "seed", "wall_seconds"]
                        + metric_names)
        for r in records:
            writer.writerow([r["table"], r["name"], r["model"], json.dumps(r["overrides"]),
                             r["budget"], r["seed"], f"{r['wall_seconds']:.1f}"]
                            + [r["test_result"].get(m, "") for m in metric_names])


def write_latex(path, rows):
    lines = ["% generated by python -m recbole_psrq.benchmark"]
    for title, budget, table_rows, metrics in _table_blocks(rows):
        lines += [f"% {title}, budget {budget}", "\\begin{tabular}{l" + "c" * len(metrics) + "}",
                  "\\toprule", "Method & " + " & ".join(metrics) + " \\\\", "\\midrule"]
        for r in table_rows:
            cells = []
            for m in metrics:
                if m not in r["metrics"]:
                    cells.append("--")
                    continue
                mean, std, p = r["metrics"][m]
                star = "$^{*}$" if not np.isnan(p) and p < 0.05 else ""
                cells.append(f"{mean:.4f}$\\pm${std:.4f}{star}")
            lines.append(r["name"].replace("_", "\\_") + " & " + " & ".join(cells) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", ""]
    lines.append("% * p < 0.05, paired t-test against the table's baseline over seeds")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def plot_metrics(out, rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for table in TABLE_TITLES:
        table_rows = [r for r in rows if r["table"] == table]
        if not table_rows:
            continue
        metrics = ["ndcg@10", "recall@10"] if table == "TopK" else ["auc", "coldauc"]
        metrics = [m for m in metrics if any(m in r["metrics"] for r in table_rows)]
        fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            present = [r for r in table_rows if metric in r["metrics"]]
            labels = [f"{r['name']}\n{r['budget']}" for r in present]
            means = [r["metrics"][metric][0] for r in present]
            stds = [r["metrics"][metric][1] for r in present]
            ax.bar(range(len(present)), means, yerr=stds, capsize=3,
                   color=["#999" if r["is_baseline"] else "#3b7dd8" for r in present])
            ax.set_xticks(range(len(present)), labels, rotation=60, ha="right", fontsize=7)
            low = min(m - s for m, s in zip(means, stds))
            high = max(m + s for m, s in zip(means, stds))
            ax.set_ylim(low - 0.1 * (high - low + 1e-3), high + 0.1 * (high - low + 1e-3))
            ax.set_title(f"{table}: {metric} (mean ± std)")
        fig.tight_layout()
        path = os.path.join(out, f"metrics_{table}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_sid_drift(out, dataset):
    """Per-level NMI of each quantizer's text SIDs with level 1 (and with labels, when reported),
    read from the SID cache reports the runs wrote."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reports = {}
    for path in glob.glob(os.path.join(out, "runs", "work", "saved", "sid_cache", dataset,
                                       "text_sid-*", "report.json")):
        with open(path) as f:
            data = json.load(f)
        reports[data["settings"]["quantizer"]] = data["report"]
    if not reports:
        return None
    keys = [k for k in ("nmi_level1", "nmi_labels") if any(k in r for r in reports.values())]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, report in sorted(reports.items()):
            if key in report:
                ax.plot(range(1, len(report[key]) + 1), report[key], marker="o", label=name)
        ax.set_xlabel("SID level")
        ax.set_ylabel(key)
        ax.set_title(f"semantic drift: {key}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out, "sid_drift.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="paper", choices=sorted(SUITES))
    parser.add_argument("--dataset", default="synthetic_music")
    parser.add_argument("--seeds", default="3",
                        help="N (seeds 0..N-1) or a comma-separated list, e.g. 1,2 to split a suite over processes")
    parser.add_argument("--budgets", default="one_epoch,early_stop",
                        help=f"comma-separated, from {list(BUDGETS)}")
    parser.add_argument("--out", default=None, help="default: results/<dataset>")
    parser.add_argument("--only", default="", help="comma-separated experiment names to run")
    parser.add_argument("--report-only", action="store_true", help="aggregate finished runs only")
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
    suite = SUITES[args.suite]
    only = {n for n in args.only.split(",") if n}
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

    command = "python -m recbole_psrq.benchmark " + " ".join(argv if argv is not None else sys.argv[1:])
    records_by_exp, records, missing, done_keys = {}, [], [], {}
    for budget in budgets:
        for seed in seeds:
            for experiment in suite:
                if only and experiment.name not in only:
                    continue
                key = (budget, run_key(experiment), seed)
                if key in done_keys:  # the same run listed in several tables
                    record = done_keys[key]
                elif args.report_only:
                    path = run_path(out, budget, experiment, seed, args.dataset)
                    record = json.load(open(path)) if os.path.isfile(path) else None
                else:
                    record = run_one(experiment, budget, seed, args.dataset, out, extra, log)
                done_keys[key] = record
                if record is None:
                    missing.append(f"{experiment.table} {experiment.name} {budget} seed {seed}")
                    continue
                records_by_exp.setdefault((budget, experiment.table, experiment.name), {})[seed] = record
                records.append({**record, "table": experiment.table, "name": experiment.name})
    rows = summarize(records_by_exp, suite, budgets, seeds)
    env = environment()
    write_markdown(os.path.join(out, "results.md"), rows, command, env, args.dataset, seeds, missing)
    write_csv(os.path.join(out, "results.csv"), records)
    write_latex(os.path.join(out, "results.tex"), rows)
    plots = plot_metrics(out, rows)
    drift = plot_sid_drift(out, args.dataset)
    with open(os.path.join(out, "environment.json"), "w") as f:
        json.dump({**env, "command": command}, f, indent=2)
    log(f"wrote {out}/results.md, results.csv, results.tex, {len(plots) + bool(drift)} plot(s); "
        f"{len(missing)} run(s) missing")
    return 0 if not missing else 1


if __name__ == "__main__":
    sys.exit(main())
