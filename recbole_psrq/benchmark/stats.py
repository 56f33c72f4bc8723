"""Statistics over seeds: mean ± std per metric and a paired t-test against the table's baseline."""
import numpy as np

from recbole_psrq.benchmark.suites import BASELINES, COLD_BUCKETS, CTR_METRICS, TOPK_METRICS


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
                if any(v is None or v != v for v in values):  # absent, or NaN (e.g. an empty cold bucket)
                    continue
                paired = [s for s in records if s in base_records]
                p = paired_ttest([records[s]["test_result"][metric] for s in paired],
                                 [base_records[s]["test_result"][metric] for s in paired])
                row["metrics"][metric] = (float(np.mean(values)), float(np.std(values, ddof=1))
                                          if len(values) > 1 else 0.0, p)
            first = next(iter(records.values()))["test_result"]
            row["cold_rows"] = {b: (first[f"{b}_rows"], first[f"{b}_share"]) for b in COLD_BUCKETS
                                if f"{b}_rows" in first}
            rows.append(row)
    return rows
