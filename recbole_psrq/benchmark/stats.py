"""Statistics over seeds: mean ± std per metric; the paired difference to the table's baseline with its
95% confidence interval (paired t); the paired t-test's p-value, raw and Holm-adjusted within each table.

Pairing is by seed: a row's run with seed s is compared with the baseline's run with seed s, whatever
order the records come in; a seed only one of them has is left out of the comparison (but kept in the
row's mean ± std).

The Holm family of a table (one table, one budget) is every comparison (non-baseline row, metric)
against the table's baseline that has a p-value, over all the table's metrics. Floors (experiments whose
model name ends with ``Floor``) are reference rows: they are training-free (std 0 over seeds), so they get
a difference and its interval but no p-value and are not in the family (testing them would only inflate
the family and weaken every other comparison).

A table's claim (:data:`suites.CLAIMS`, e.g. "PSRQ+MCCA beats every baseline") is tested apart from the
baseline comparisons: the claimed row against every other row of its table (and the rows of other tables
named in :data:`suites.CLAIM_ALSO_VERSUS`), Δ = claimed − other, paired by seed, Holm-adjusted within that
claim family (per table and budget; floors again described, not tested).
"""
from typing import NamedTuple

import numpy as np

from recbole_psrq.benchmark.suites import (BASELINES, CLAIM_ALSO_VERSUS, CLAIMS, COLD_BUCKETS, CTR_METRICS,
                                           TOPK_METRICS)

CONFIDENCE = 0.95


class MetricStats(NamedTuple):
    """One metric of one row. ``diff`` = mean over paired seeds of (row − baseline), ``ci_low``/``ci_high``
    its 95% paired-t interval, ``p`` the two-sided paired t-test, ``p_holm`` Holm-adjusted within the
    table's family. NaN where undefined: the baseline row itself, no paired seeds (diff and CI), one
    paired seed or the same difference on every paired seed (CI and p), floors (p and p_holm).
    ``n_paired``: the number of seeds both runs have."""
    mean: float
    std: float
    diff: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    p: float = float("nan")
    p_holm: float = float("nan")
    n_paired: int = 0


def _differences(values, baseline):
    """(differences, round-off tolerance) of paired arrays, or (None, None) when they are not paired."""
    values, baseline = np.asarray(values, float), np.asarray(baseline, float)
    if values.shape != baseline.shape or values.ndim != 1:
        return None, None
    scale = max(1.0, float(np.max(np.abs(values), initial=0.0)), float(np.max(np.abs(baseline), initial=0.0)))
    return values - baseline, 1e-12 * scale


def paired_ttest(values, baseline):
    """Two-sided paired t-test p-value over seeds (``values[i]`` paired with ``baseline[i]``).

    NaN when undefined: fewer than two pairs, unequal lengths, or every difference the same (zero spread,
    up to float round-off; values equal to the baseline included). The test estimates the noise from the
    spread of the differences over seeds, and a zero estimate is not certainty: a hit-count metric
    (Recall@K on one test item per user moves in steps of 1/users) can differ by the same number of hits on
    two seeds, and seeds that do not change a run repeat one measurement. A t statistic of ±inf would give
    p = 0 and a "significant" verdict from two seeds (scipy answers round-off noise or NaN there)."""
    from scipy import stats

    d, tol = _differences(values, baseline)
    if d is None or len(d) < 2 or np.ptp(d) <= tol:
        return float("nan")
    return float(stats.ttest_rel(np.asarray(values, float), np.asarray(baseline, float)).pvalue)


def paired_difference(values, baseline, confidence=CONFIDENCE):
    """(mean difference, CI low, CI high) of ``values − baseline`` over paired seeds: the t interval
    mean ± t_{n−1, (1+confidence)/2} · sd / √n. NaN interval with fewer than two pairs (everything NaN
    with none or unequal lengths) or differences all equal (zero spread, up to round-off: no estimate of the
    noise, see :func:`paired_ttest`; a [d, d] interval would claim certainty)."""
    from scipy import stats

    d, tol = _differences(values, baseline)
    nan = float("nan")
    if d is None or len(d) == 0:
        return nan, nan, nan
    mean = float(np.mean(d))
    if len(d) < 2 or np.ptp(d) <= tol:
        return mean, nan, nan
    half = float(stats.t.ppf((1 + confidence) / 2, len(d) - 1) * np.std(d, ddof=1) / np.sqrt(len(d)))
    return mean, mean - half, mean + half


def holm(pvalues):
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    With the m defined p-values sorted ascending p_(1) ≤ … ≤ p_(m):
    adj_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j)) (monotone in p, capped at 1). NaN entries stay NaN
    and are not counted in m."""
    p = np.asarray(pvalues, float).reshape(-1)
    adjusted = np.full(p.shape, np.nan)
    defined = np.flatnonzero(~np.isnan(p))
    m = len(defined)
    if m == 0:
        return adjusted.tolist()
    order = defined[np.argsort(p[defined], kind="stable")]
    steps = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted[order] = np.maximum.accumulate(steps)
    return adjusted.tolist()


def is_floor(experiment):
    """Training-free reference rows (PopularityFloor, ContentFloor): in the table, not in its family."""
    return experiment.model.endswith("Floor")


def _finite(value):
    return value is not None and value == value


def _metric_stats(records, base_records, metric, compare):
    values = [r["test_result"].get(metric) for r in records.values()]
    if not values or not all(_finite(v) for v in values):  # absent, or NaN (e.g. an empty cold bucket)
        return None
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    if compare is None:  # the baseline itself
        return MetricStats(mean, std)
    paired = [s for s in records if s in base_records and _finite(base_records[s]["test_result"].get(metric))]
    ours = [records[s]["test_result"][metric] for s in paired]
    theirs = [base_records[s]["test_result"][metric] for s in paired]
    diff, low, high = paired_difference(ours, theirs)
    p = paired_ttest(ours, theirs) if compare == "test" else float("nan")
    return MetricStats(mean, std, diff, low, high, p, float("nan"), len(paired))


def summarize(records_by_exp, suite, budgets, seeds, tuning=None):
    """Rows of {table, name, model, budget, n, metrics: {metric: MetricStats}, is_baseline, is_floor,
    wall, cold_rows[, tuning]} for the report writers, with ``p_holm`` adjusted per (table, budget).

    ``records_by_exp[(budget, table, name)]`` is {seed: record}. ``tuning``: optional
    {(table, name): info or None}; when given each row gets ``row["tuning"]`` (None if absent)."""
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
            is_baseline = experiment == baseline
            compare = None if is_baseline else "describe" if is_floor(experiment) else "test"
            row = {"table": experiment.table, "name": experiment.name, "model": experiment.model,
                   "budget": budget, "n": len(records), "metrics": {}, "is_baseline": is_baseline,
                   "is_floor": is_floor(experiment),
                   "wall": float(np.mean([r["wall_seconds"] for r in records.values()]))}
            for metric in metric_names:
                summary = _metric_stats(records, base_records, metric, compare)
                if summary is not None:
                    row["metrics"][metric] = summary
            first = next(iter(records.values()))["test_result"]
            row["cold_rows"] = {b: (first[f"{b}_rows"], first[f"{b}_share"]) for b in COLD_BUCKETS
                                if f"{b}_rows" in first}
            if tuning is not None:
                row["tuning"] = tuning.get((experiment.table, experiment.name))
            rows.append(row)
    _adjust_within_tables(rows)
    return rows


def compare_claims(records_by_exp, suite, budgets):
    """Each table's claim tested: per (table, budget) whose claimed row (:data:`suites.CLAIMS`) has runs, one
    entry {table, budget, name (the claimed row), versus, versus_table, is_floor, metrics: {metric:
    MetricStats}} per other row of the table and per row named in :data:`suites.CLAIM_ALSO_VERSUS`, in the
    suite's order. A MetricStats' mean/std are the claimed row's, ``diff`` = claimed − versus (paired by
    seed) and ``p_holm`` is adjusted over the claim family of its table and budget (floors: no p)."""
    entries = []
    for budget in budgets:
        for table, claimed in CLAIMS.items():
            records = records_by_exp.get((budget, table, claimed), {})
            if not records or not any(e.table == table and e.name == claimed for e in suite):
                continue
            others = [(e.table, e.name, is_floor(e)) for e in suite if e.table == table and e.name != claimed]
            others += [(t, n, False) for t, n in CLAIM_ALSO_VERSUS.get(table, [])
                       if any(e.table == t and e.name == n for e in suite)]
            metric_names = TOPK_METRICS if table == "TopK" else CTR_METRICS
            for versus_table, versus, floor in others:
                versus_records = records_by_exp.get((budget, versus_table, versus), {})
                if not versus_records:
                    continue
                entry = {"table": table, "budget": budget, "name": claimed, "versus": versus,
                         "versus_table": versus_table, "is_floor": floor, "metrics": {}}
                for metric in metric_names:
                    summary = _metric_stats(records, versus_records, metric, "describe" if floor else "test")
                    if summary is not None:
                        entry["metrics"][metric] = summary
                entries.append(entry)
    for table, budget in dict.fromkeys((e["table"], e["budget"]) for e in entries):
        family = [(e, m) for e in entries if e["table"] == table and e["budget"] == budget and not e["is_floor"]
                  for m, s in e["metrics"].items() if not np.isnan(s.p)]
        for (e, m), p_holm in zip(family, holm([e["metrics"][m].p for e, m in family])):
            e["metrics"][m] = e["metrics"][m]._replace(p_holm=p_holm)
    return entries


def holm_family(rows, table, budget):
    """The (row, metric) pairs of one table and budget whose p-values form its Holm family."""
    return [(r, m) for r in rows if r["table"] == table and r["budget"] == budget
            and not r["is_baseline"] and not r["is_floor"]
            for m, s in r["metrics"].items() if not np.isnan(s.p)]


def _adjust_within_tables(rows):
    for table, budget in dict.fromkeys((r["table"], r["budget"]) for r in rows):
        family = holm_family(rows, table, budget)
        adjusted = holm([r["metrics"][m].p for r, m in family])
        for (r, m), p_holm in zip(family, adjusted):
            r["metrics"][m] = r["metrics"][m]._replace(p_holm=p_holm)
