"""PNG plots of a benchmark: the metrics of each table (mean ± std), each table's claim (the paired
differences with their 95% intervals) and the SID levels' semantic drift."""
import os

import numpy as np

from recbole_psrq.benchmark.report import versus_label
from recbole_psrq.benchmark.suites import TABLE_TITLES


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
            means = [r["metrics"][metric].mean for r in present]
            stds = [r["metrics"][metric].std for r in present]
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


def plot_claims(out, claims):
    """``claims_<table>.png`` per table with a claim (:func:`stats.compare_claims`): for its first metric
    (AUC, or Recall@10 for top-k), Δ = claimed − row with its paired 95% interval, one line per row; filled
    markers where p_Holm < 0.05, open ones otherwise, grey squares for the floors (described, not tested)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for table in TABLE_TITLES:
        budgets = list(dict.fromkeys(e["budget"] for e in claims if e["table"] == table))
        for budget in budgets:
            entries = [e for e in claims if (e["table"], e["budget"]) == (table, budget) and e["metrics"]]
            metric = "recall@10" if table == "TopK" else "auc"
            entries = [e for e in entries if metric in e["metrics"]]
            if not entries:
                continue
            fig, ax = plt.subplots(figsize=(6, 0.45 * len(entries) + 1.2))
            for y, e in enumerate(entries):
                s = e["metrics"][metric]
                low, high = (s.ci_low, s.ci_high) if not np.isnan(s.ci_low) else (s.diff, s.diff)
                significant = not np.isnan(s.p_holm) and s.p_holm < 0.05
                ax.errorbar(s.diff, y, xerr=[[s.diff - low], [high - s.diff]], capsize=3,
                            fmt="s" if e["is_floor"] else "o", color="#999" if e["is_floor"] else "#3b7dd8",
                            markerfacecolor="#3b7dd8" if significant else "white")
            ax.axvline(0, color="black", linewidth=0.8)
            ax.set_yticks(range(len(entries)), [versus_label(e) for e in entries])
            ax.invert_yaxis()
            ax.set_xlabel(f"Δ {metric} = {entries[0]['name']} − row (95% CI; filled: p_Holm < 0.05)")
            ax.set_title(f"{table} claim, budget {budget}")
            fig.tight_layout()
            path = os.path.join(out, f"claims_{table}.png" if len(budgets) == 1 else f"claims_{table}_{budget}.png")
            fig.savefig(path, dpi=110)
            plt.close(fig)
            paths.append(path)
    return paths


def plot_sid_drift(out, sid_entries):
    """Per-level NMI of each quantizer's text SIDs with level 1 (and with labels, when reported), from
    :func:`report.read_sid_reports`: per quantizer its settings fitted most often (the seeded runs'),
    averaged over those fits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {}
    for e in sid_entries:
        if e["field"] == "text_sid":
            key = (e["quantizer"], e["codebook_size"], e["levels"], e["options"], e["items"])
            groups.setdefault(key, []).append(e)
    curves = {}
    for key, fits in sorted(groups.items(), key=lambda item: -len(item[1])):
        curves.setdefault(key[0], (key, fits))
    if not curves:
        return None
    keys = [k for k in ("nmi_level1", "nmi_labels") if any(k in f["report"] for _, fits in curves.values()
                                                            for f in fits)]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for quantizer, ((_, k, levels, _, _), fits) in sorted(curves.items()):
            values = [f["report"][key] for f in fits if key in f["report"]]
            if values:
                ax.plot(range(1, levels + 1), np.mean(values, axis=0), marker="o",
                        label=f"{quantizer} (k={k}, {len(values)} fits)")
        ax.set_xticks(range(1, max(key_[2] for key_, _ in curves.values()) + 1))
        ax.set_xlabel("SID level")
        ax.set_ylabel(key)
        ax.set_title(f"semantic drift: {key}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out, "sid_drift.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
