"""Report writers: ``results.md``, ``results.csv``, ``results.tex`` and ``sid_quality.csv``, and the
environment (Python, package versions, git commit, date) recorded with them."""
import csv
import datetime
import glob
import json
import os
import sys

import numpy as np

from recbole_psrq.benchmark.suites import (BASELINES, BUDGETS, CTR_METRICS, SMALLER_IS_BETTER, TABLE_TITLES,
                                           TOPK_METRICS)

# results.csv's comparison rows: (statistic, MetricStats field)
COMPARISON_FIELDS = [("diff", "diff"), ("ci_low", "ci_low"), ("ci_high", "ci_high"), ("p", "p"),
                     ("p_holm", "p_holm"), ("pairs", "n_paired")]


def environment(tree):
    """Python, package versions, date and the commit of ``tree`` (:func:`runner.git_state`)."""
    import importlib.metadata as md

    versions = {}
    for name in ("recbole", "torch", "numpy", "pandas", "scipy", "faiss-cpu", "transformers"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    return {"python": sys.version.split()[0], "packages": versions,
            "git_commit": tree["commit"] + (" (with uncommitted changes)" if tree["dirty"] else ""),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _fmt(stats):
    """A main-table cell: mean ± std over seeds."""
    return f"{stats.mean:.4f} ± {stats.std:.4f}"


def _num(value, spec=".4f"):
    return "–" if value is None or np.isnan(value) else format(value, spec)


def _p(value):
    return "–" if value is None or np.isnan(value) else f"{value:.3g}"


def _verdict(row, metric, stats):
    """What the difference says at p_Holm < 0.05 (the direction follows SMALLER_IS_BETTER)."""
    if row["is_floor"]:
        return "reference (not tested)"
    if np.isnan(stats.p_holm):
        return "not testable"
    if stats.p_holm >= 0.05:
        return "n.s."
    better = stats.diff < 0 if metric in SMALLER_IS_BETTER else stats.diff > 0
    return "better" if better else "worse"


def _comparison_lines(label, compared, metrics):
    """One line per metric of a comparison (a row against the baseline, or the claimed row against it)."""
    return [f"| {label} | {m} | {s.n_paired} | Δ {_num(s.diff, '+.4f')} [{_num(s.ci_low)}, {_num(s.ci_high)}] "
            f"| p={_p(s.p)} | p_Holm={_p(s.p_holm)} | {_verdict(compared, m, s)} |"
            for m in metrics if (s := compared["metrics"].get(m)) is not None]


def _difference_table(table_rows, metrics, baseline_name):
    """The paired differences of every non-baseline row to the baseline, one line per (row, metric)."""
    compared = [r for r in table_rows if not r["is_baseline"]]
    lines = [f"Paired differences to **{baseline_name}** (Δ = method − {baseline_name}, mean over the "
             "seeds both ran; 95% CI: paired t; p: two-sided paired t-test; p_Holm: Holm-adjusted within "
             "this table's family):", "",
             "| method | metric | pairs | Δ [95% CI] | p | p_Holm | verdict |", "|---|---|---|---|---|---|---|"]
    for r in compared:
        lines += _comparison_lines(r["name"], r, metrics)
    tested = [r for r in compared if not r["is_floor"]]
    m_family = sum(not np.isnan(s.p) for r in tested for s in r["metrics"].values())
    # a row with no p-value at all (e.g. one seed: nothing to pair) is named, not counted among the family's rows
    in_family = [r for r in tested if any(not np.isnan(s.p) for s in r["metrics"].values())]
    untestable = [r["name"] for r in tested if r not in in_family]
    floors = [r["name"] for r in compared if r["is_floor"]]
    lines += ["", f"Holm family of this table: m = {m_family} comparisons (every (row, metric) above with a "
              f"p-value, from {len(in_family)} row(s)" +
              (f"; not testable on any metric: {', '.join(untestable)}" if untestable else "") +
              (f"; floors excluded: {', '.join(floors)}" if floors else "") + ").", ""]
    return lines if compared else []


def versus_label(entry):
    """A claim comparison's other row, with its table when it is not the claim's own."""
    same_table = entry["versus_table"] == entry["table"]
    return entry["versus"] if same_table else f"{entry['versus']} ({entry['versus_table']})"


def _claim_table(entries, metrics):
    """The table's claim: its claimed row against every other row, Holm-adjusted within the claim family."""
    if not entries:
        return []
    claimed = entries[0]["name"]
    lines = [f"The claim: **{claimed}** against every other row (Δ = {claimed} − row, paired by seed; "
             "p_Holm: Holm-adjusted within this claim's family, apart from the comparisons with the baseline "
             "above; verdict from the claimed row's side):", "",
             "| versus | metric | pairs | Δ [95% CI] | p | p_Holm | verdict |", "|---|---|---|---|---|---|---|"]
    for e in entries:
        lines += _comparison_lines(versus_label(e), e, metrics)
    m_family = sum(not e["is_floor"] and not np.isnan(s.p) for e in entries for s in e["metrics"].values())
    lines += ["", f"Holm family of this claim: m = {m_family} comparisons (floors described, not tested)."]
    if metrics:
        verdicts = {}
        for e in entries:
            if metrics[0] in e["metrics"] and not e["is_floor"]:
                verdicts.setdefault(_verdict(e, metrics[0], e["metrics"][metrics[0]]), []).append(versus_label(e))
        parts = [f"{verdict} than {', '.join(names)}" if verdict in ("better", "worse")
                 else f"{verdict} against {', '.join(names)}" for verdict, names in verdicts.items()]
        if parts:
            lines.append(f"On `{metrics[0]}` (verdicts at p_Holm < 0.05), {claimed} is " + "; ".join(parts) + ".")
    return lines + [""]


def _table_blocks(rows):
    """(title, budget, rows, metric names present) for each non-empty table x budget."""
    for table, title in TABLE_TITLES.items():
        for budget in BUDGETS:
            table_rows = [r for r in rows if r["table"] == table and r["budget"] == budget]
            metrics = TOPK_METRICS if table == "TopK" else CTR_METRICS
            metrics = [m for m in metrics if any(m in r["metrics"] for r in table_rows)]
            if table_rows:
                yield title, budget, table_rows, metrics


def _floor_line(table_rows, metric):
    """How hard the table's task is: the best training-free floor on ``metric`` and the trained rows whose
    mean does not beat it."""
    floors = [r for r in table_rows if r["is_floor"] and metric in r["metrics"]]
    trained = [r for r in table_rows if not r["is_floor"] and metric in r["metrics"]]
    if not floors or not trained:
        return []
    best = max(floors, key=lambda r: r["metrics"][metric].mean)
    level = best["metrics"][metric].mean
    below = [f"{r['name']} ({r['metrics'][metric].mean:.4f})" for r in trained if r["metrics"][metric].mean <= level]
    return [f"Floors: the best training-free score on `{metric}` is {best['name']}, {level:.4f}; "
            + (f"trained rows not above it (mean): {', '.join(below)}." if below
               else "every trained row's mean is above it."), ""]


# a run whose best validation AUC stays this close to 0.5 never learned to rank (it ends by early stopping
# on a flat curve); such a run stays in the mean and the tests, and the report names it so that a large
# spread over seeds can be read
CHANCE_MARGIN = 0.01


def _chance_line(table_records, metric):
    """The runs of a table whose best validation ``metric`` (an AUC) is at chance level."""
    if "auc" not in metric:
        return []
    flat = [r for r in table_records if r.get("best_valid_result")
            and abs(r["best_valid_result"].get(metric, float("nan")) - 0.5) <= CHANCE_MARGIN]
    if not flat:
        return []
    runs = [f"{r['name']} seed {r['seed']} (validation {r['best_valid_result'][metric]:.4f}, test "
            f"{r['test_result'].get(metric, float('nan')):.4f})"
            for r in sorted(flat, key=lambda r: (r["name"], r["seed"]))]
    return [f"Runs that never learned (best validation `{metric}` within {CHANCE_MARGIN} of 0.5; kept in the "
            "means and the tests): " + ", ".join(runs) + ".", ""]


def _cold_bucket_line(table_rows):
    """The cold buckets' size on the table's test rows (the same rows for every run of a table)."""
    sizes = next((r["cold_rows"] for r in table_rows if r.get("cold_rows")), None)
    if not sizes:
        return []
    parts = [f"`{b}` {int(n):,} rows ({share:.1%})" for b, (n, share) in sizes.items()]
    return ["Cold buckets on these test rows: " + ", ".join(parts) + ". A bucket with no rows, or one "
            "label only, has no AUC (–).", ""]


def _cell(text):
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _tuning_section(tuning, rows):
    """Per experiment: the tuning budget, search space, chosen values, best validation score and the
    frozen config; or why it was not tuned."""
    floors = {(r["table"], r["name"]) for r in rows if r.get("is_floor")}
    lines = ["## Tuning", "",
             "Hyperparameters searched on the validation split only (the test split is never read), then "
             "frozen; the runs above use the frozen values.", "",
             "| table | experiment | trials (pruned) | search space | chosen | best validation | frozen config |",
             "|---|---|---|---|---|---|---|"]
    listed = dict(tuning)
    for r in rows:  # an experiment of the report without an entry was not tuned: say so, never omit it
        listed.setdefault((r["table"], r["name"]), None)
    for (table, name), info in listed.items():
        if info is None:
            reason = "not tuned (training-free)" if (table, name) in floors or name.startswith("Floor") \
                else "not tuned"
            lines.append(f"| {table} | {name} | {reason} | – | – | – | – |")
            continue
        space = "; ".join(f"`{k}`: {_cell(v)}" for k, v in info.get("space", {}).items()) or "–"
        if info.get("space_hash"):
            space += f" (space hash `{info['space_hash']}`)"
        chosen = "; ".join(f"`{k}` = {_cell(v)}" for k, v in info.get("chosen", {}).items()) or "–"
        best = info.get("best_valid") or {}
        best_text = f"{best['metric']} {best['score']:.4f}" if best.get("metric") is not None \
            and best.get("score") is not None else "–"
        frozen = f"`{_cell(info['frozen'])}`" if info.get("frozen") else "–"
        lines.append(f"| {table} | {name} | {info.get('trials', '–')} ({info.get('pruned', 0)} pruned) | {space} "
                     f"| {chosen} | {best_text} | {frozen} |")
    return lines + [""]


def read_sid_reports(out, dataset):
    """The quality report of every SID table the study's runs and trials fitted (the SID cache under
    ``<out>/runs/sid_cache/<dataset>/``, one entry per field, quantizer and settings), sorted by field,
    quantizer, codebook size, levels, options and seed."""
    entries = []
    for path in glob.glob(os.path.join(out, "runs", "sid_cache", dataset, "*", "report.json")):
        with open(path) as f:
            data = json.load(f)
        settings = data["settings"]
        entries.append({"field": os.path.basename(os.path.dirname(path)).split("-")[0],
                        "quantizer": settings["quantizer"], "codebook_size": settings["codebook_size"],
                        "levels": settings["n_levels"], "seed": settings["seed"],
                        "items": data["report"].get("n_items"),
                        "options": json.dumps(settings.get("options") or {}, sort_keys=True),
                        "report": data["report"]})
    return sorted(entries, key=lambda e: (e["field"], e["quantizer"], e["codebook_size"], e["levels"],
                                          e["options"], e["items"] or 0, e["seed"]))


SID_COLUMNS = ["unique_sids", "distinct_sid_share", "collision_rate", "recon_mse", "knn_recall@10"]


def write_sid_quality_csv(path, entries):
    """``sid_quality.csv``: one row per fitted SID table, its settings and quality (per-level lists as JSON)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["field", "quantizer", "codebook_size", "levels", "options", "items", "seed"] + SID_COLUMNS
                        + ["utilization", "perplexity", "nmi_level1", "warnings"])
        for e in entries:
            r = e["report"]
            writer.writerow([e["field"], e["quantizer"], e["codebook_size"], e["levels"], e["options"], e["items"],
                             e["seed"]]
                            + [r.get(c, "") for c in SID_COLUMNS]
                            + [json.dumps(r.get(c)) for c in ("utilization", "perplexity", "nmi_level1")]
                            + [len(r.get("warnings", []))])


def _mean_of(reports, key):
    values = [r[key] for r in reports if r.get(key) is not None]
    return float(np.mean(values)) if values else float("nan")


def _sid_section(entries):
    """results.md's SID quality: per field, quantizer and settings, the mean over its fits (seeds)."""
    if not entries:
        return []
    groups = {}
    for e in entries:
        key = (e["field"], e["quantizer"], e["codebook_size"], e["levels"], e["options"], e["items"])
        groups.setdefault(key, []).append(e)
    lines = ["## SID quality", "",
             "Every SID table the runs and tuning trials fitted (`sid_quality.csv` has one row per fit), "
             "grouped by settings and by the items fitted (tuning trials see a subsample of the users, hence "
             "fewer items); mean over the fits (seeds). Utilization: share of each level's codes used; "
             "collisions: share of items whose full SID another item has.", "",
             "| field | quantizer | k | levels | options | items | fits (seeds) | distinct SIDs | collisions | "
             "utilization per level | recon MSE | kNN recall@10 |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (field, quantizer, k, levels, options, items), fits in groups.items():
        reports = [f["report"] for f in fits]
        mean = {key: _mean_of(reports, key) for key in SID_COLUMNS}
        usage = [r["utilization"] for r in reports if r.get("utilization")]
        usage_text = ", ".join(f"{u:.2f}" for u in np.mean(usage, axis=0)) if usage else "–"
        lines.append(f"| {field} | {quantizer} | {k} | {levels} | {_cell(options)} | {items} | {len(fits)} "
                     f"({', '.join(str(f['seed']) for f in fits)}) | {_num(mean['unique_sids'], '.0f')} | "
                     f"{_num(mean['collision_rate'])} | {usage_text} | {_num(mean['recon_mse'])} | "
                     f"{_num(mean['knn_recall@10'])} |")
    return lines + [""]


def _runs_text(runs):
    """``DIN seeds 0, 1; MCCA seed 2`` for [(name, seed)]."""
    by_name = {}
    for name, seed in runs:
        by_name.setdefault(name, []).append(seed)
    return "; ".join(f"{name} seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, sorted(seeds)))}"
                     for name, seeds in by_name.items())


def _provenance_section(records):
    """results.md's data files and machines: per table and budget, whether every run read the same dataset
    files (their sha256, recorded by the driver) and on which CPUs the runs ran. Files that differ between
    runs are listed with the runs of each version: content embeddings made on another machine can differ in
    their last bits, and the SIDs fitted on them with them."""
    tables = {}
    for r in records:
        tables.setdefault((r["table"], r["budget"]), []).append(r)
    if not tables:
        return []
    lines = ["## Data files and machines", "",
             "The dataset files each run read (sha256, first 12 hex digits) and the CPUs the runs ran on. "
             "Test rows are checked to be identical (the test digest); a file listed with several versions "
             "was converted again on another machine, whose content embeddings can differ in the last bits.",
             ""]
    for (table, budget), runs in sorted(tables.items()):
        versions, unrecorded, cpus = {}, [], {}
        for r in runs:
            cpu = r.get("machine") or {}
            label = f"{cpu['cpu']} ({cpu['cores']} cores)" if cpu else "not recorded"
            cpus[label] = cpus.get(label, 0) + 1
            if not r.get("data"):
                unrecorded.append((r["name"], r["seed"]))
                continue
            for name, digest in r["data"].items():
                versions.setdefault(name, {}).setdefault(digest, []).append((r["name"], r["seed"]))
        same = [n for n, v in versions.items() if len(v) == 1]
        differ = {n: v for n, v in versions.items() if len(v) > 1}
        text = f"- {table} (`{budget}`), {len(runs)} runs: "
        text += (f"{len(same)} file(s) identical in every run that recorded them ("
                 + ", ".join(f"{n} {next(iter(versions[n]))[:12]}" for n in same) + ")") if same else "no file recorded"
        if differ:
            text += "; **differing**: " + "; ".join(
                f"{n}: " + ", ".join(f"{d[:12]} ({_runs_text(rs)})" for d, rs in v.items()) for n, v in differ.items())
        if unrecorded:
            text += f"; not recorded (runs made before records named their files): {_runs_text(unrecorded)}"
        text += ". Machines: " + ", ".join(f"{label}: {n} run{'s' if n > 1 else ''}" for label, n in cpus.items())
        lines.append(text + ".")
    return lines + [""]


def write_markdown(path, rows, command, env, dataset, seeds, missing, not_clean=(), tuning=None, claims=(),
                   sid_entries=(), records=()):
    """``results.md``. ``tuning``: optional {(table, experiment name): info or None} (info: trials, space,
    space_hash, chosen, best_valid {metric, score}, frozen, pruned); when None, the rows' own ``tuning``
    entries are used if they have any. ``claims``: :func:`stats.compare_claims`' entries, shown under
    their table. ``sid_entries``: :func:`read_sid_reports`' entries (the SID quality section). ``records``:
    the runs (with ``table`` and ``name``), for the data files and machines section."""
    if tuning is None and any("tuning" in r for r in rows):
        tuning = {(r["table"], r["name"]): r["tuning"] for r in rows if "tuning" in r}
    lines = [f"# Benchmark results: {dataset}", "",
             f"Command: `{command}`  ", f"Seeds: {seeds} ({len(seeds)} seeds; the `seeds` column counts each "
             "method's finished runs)  ",
             f"Git commit: {env['git_commit']}  ",
             f"Date: {env['date']}  ", f"Python {env['python']}; " +
             ", ".join(f"{k} {v}" for k, v in env["packages"].items()), "",
             "Cells: mean ± std over seeds on the test split. Budget `one_epoch`: the model after one epoch "
             "(nothing to select); `early_stop`: the checkpoint with the best validation score. "
             "LogLoss: lower is better. Floors are training-free scores on the same "
             "test rows (their LogLoss is meaningless: the scores are not probabilities).", "",
             "Statistics: each method is compared with the table's baseline (DIN for T2-T4, SASRec for top-k) "
             "paired by seed (seed s against the baseline's seed s; seeds only one of them ran are left "
             "out). Δ = mean paired difference (method − baseline) with its 95% confidence interval from "
             "the paired t distribution (t quantile with n−1 degrees of freedom, n = pairs); p = two-sided "
             "paired t-test; p_Holm = "
             "Holm-Bonferroni adjusted within each table and budget. The Holm family of a table is every "
             "(non-baseline row × metric) comparison with a p-value, all the table's metrics included; "
             "floors are reference rows: they get Δ and its interval but no p and are not in the family. "
             "Verdicts (better / worse / n.s.) use p_Holm < 0.05, never the raw p. Not testable (no interval, "
             "no p, not in the family): fewer than two pairs, or the same difference on every pair, which "
             "leaves nothing to estimate the noise from (a hit-count metric such as Recall@K can differ by "
             "the same number of hits on two seeds; a t-test would call that p = 0).", ""]
    if not_clean:
        lines += ["## Not from a clean commit (aggregated with `--allow-dirty`)", ""] + [
            f"- {reason}" for reason in not_clean] + [""]
    for title, budget, table_rows, metrics in _table_blocks(rows):
        lines += [f"## {title} — budget `{budget}`", "",
                  "| method | seeds | " + " | ".join(metrics) + " | wall s/run |",
                  "|---|---|" + "---|" * len(metrics) + "---|"]
        for r in table_rows:
            cells = [_fmt(r["metrics"][m]) if m in r["metrics"] else "–" for m in metrics]
            name = f"**{r['name']}** (baseline)" if r["is_baseline"] else r["name"]
            lines.append(f"| {name} | {r['n']} | " + " | ".join(cells) + f" | {r['wall']:.0f} |")
        lines.append("")
        lines += _floor_line(table_rows, metrics[0]) if metrics else []
        table_records = [r for r in records if (r["table"], r["budget"]) == (table_rows[0]["table"], budget)]
        lines += _chance_line(table_records, metrics[0]) if metrics else []
        lines += _cold_bucket_line(table_rows)
        lines += _difference_table(table_rows, metrics, BASELINES[table_rows[0]["table"]])
        lines += _claim_table([e for e in claims if (e["table"], e["budget"]) == (table_rows[0]["table"], budget)],
                              metrics)
    if tuning is not None:
        lines += _tuning_section(tuning, rows)
    lines += _sid_section(sid_entries)
    lines += _provenance_section(records)
    if missing:
        lines += ["## Runs not (yet) finished", ""] + [f"- {m}" for m in missing] + [""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def _csv_value(value):
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else value


def write_csv(path, records, rows=(), claims=(), tuning=None):
    """``results.csv``: every figure of the report. ``statistic`` ``run``: one row per run (its seed, wall
    time and test metrics); ``mean`` / ``std``: over a row's seeds (``mean`` carries the mean wall time);
    ``diff``, ``ci_low``, ``ci_high``, ``p``, ``p_holm``, ``pairs``: ``name`` − ``versus`` paired by seed,
    ``family`` ``baseline`` (against the table's baseline) or ``claim`` (the table's claimed row against
    the others; ``versus`` names another table in brackets); ``tuned`` (``family`` ``tuning``): the chosen
    values as JSON in ``overrides``, the best validation score under its metric and ``trials (pruned)`` in
    ``versus``. Empty cells: undefined (e.g. a floor's p)."""
    metric_names = sorted({m for r in records for m in r["test_result"]})
    header = ["table", "name", "model", "overrides", "budget", "statistic", "versus", "family", "seed",
              "wall_seconds"] + metric_names

    def line(row, statistic, versus, family, metrics, field, wall=""):
        return ([row["table"], row["name"], row["model"], "", row["budget"], statistic, versus, family, "", wall]
                + [_csv_value(getattr(metrics[m], field)) if m in metrics else "" for m in metric_names])

    def comparison(row, versus, family, metrics):
        return [line(row, statistic, versus, family, metrics, field) for statistic, field in COMPARISON_FIELDS]

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in records:
            writer.writerow([r["table"], r["name"], r["model"], json.dumps(r["overrides"]), r["budget"], "run",
                             "", "", r["seed"], f"{r['wall_seconds']:.1f}"]
                            + [r["test_result"].get(m, "") for m in metric_names])
        for row in rows:
            writer.writerow(line(row, "mean", "", "", row["metrics"], "mean", f"{row['wall']:.1f}"))
            writer.writerow(line(row, "std", "", "", row["metrics"], "std"))
            if not row["is_baseline"]:
                writer.writerows(comparison(row, BASELINES[row["table"]], "baseline", row["metrics"]))
        models = {(r["table"], r["name"]): r["model"] for r in rows}
        for e in claims:
            row = {**e, "model": models.get((e["table"], e["name"]), "")}
            writer.writerows(comparison(row, versus_label(e), "claim", e["metrics"]))
        budgets = {(r["table"], r["name"]): r["budget"] for r in rows}
        for (table, name), info in (tuning or {}).items():
            if info is None or (table, name) not in budgets:
                continue
            best = info.get("best_valid") or {}
            writer.writerow([table, name, models[(table, name)], json.dumps(info.get("chosen", {})),
                             budgets[(table, name)], "tuned", f"{info.get('trials')} ({info.get('pruned', 0)})",
                             "tuning", "", ""]
                            + [_csv_value(best.get("score")) if m == best.get("metric") else ""
                               for m in metric_names])


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
                s = r["metrics"][m]
                dagger = "$^{\\dagger}$" if not np.isnan(s.p_holm) and s.p_holm < 0.05 else ""
                cells.append(f"{s.mean:.4f}$\\pm${s.std:.4f}{dagger}")
            lines.append(r["name"].replace("_", "\\_") + " & " + " & ".join(cells) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", ""]
    lines.append("% mean $\\pm$ std over seeds; $^{\\dagger}$ p_Holm < 0.05: two-sided paired t-test against the "
                 "table's baseline, paired by seed, Holm-adjusted within the table and budget (family: every "
                 "non-baseline row x metric, floors excluded)")
    with open(path, "w") as f:
        f.write("\n".join(lines))
