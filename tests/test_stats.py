"""The benchmark's statistics (``recbole_psrq.benchmark.stats``) and how results.md / results.tex show them:
Holm adjustment, paired-t confidence intervals, pairing by seed, the Holm family (floors excluded) and
the tuning section."""
import csv
import json
import os
import warnings

import numpy as np
import pytest
from scipy import stats

from recbole_psrq.benchmark.report import (read_sid_reports, write_csv, write_latex, write_markdown,
                                           write_sid_quality_csv)
from recbole_psrq.benchmark.stats import (MetricStats, compare_claims, holm, paired_difference, paired_ttest,
                                         summarize)
from recbole_psrq.benchmark.suites import Experiment

ENV = {"git_commit": "0" * 40, "date": "today", "python": "3.11", "packages": {"recbole": "1.2.1"}}


# --- holm ---------------------------------------------------------------------------------------------

def test_holm_matches_a_hand_computed_example():
    # m = 4. Sorted: p_(1) = 0.005 (index 3), p_(2) = 0.01 (index 0), p_(3) = 0.03 (index 2), p_(4) = 0.04
    # (index 1). Multiply by m - j + 1 = 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04. Running maximum (step-down
    # monotonicity): 0.02, 0.03, 0.06, 0.06. Back in input order: [0.03, 0.06, 0.06, 0.02].
    # (Bonferroni would give [0.04, 0.16, 0.12, 0.02]; no running maximum would give 0.04 at index 1.)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_is_monotone_capped_at_one_and_never_below_the_raw_p():
    # 2 * 0.5 = 1.0 for the smallest, then 1 * 0.6 = 0.6 must be raised to 1.0 (monotone)
    assert holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])
    assert holm([0.4, 0.9, 0.8]) == pytest.approx([1.0, 1.0, 1.0])  # 1.2, 1.6, 0.9 -> capped, monotone
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.uniform(0, 0.2, size=rng.integers(1, 12))
        adjusted = np.array(holm(p))
        order = np.argsort(p)
        assert np.all(np.diff(adjusted[order]) >= 0)            # same order as the raw p-values
        assert np.all(adjusted >= p) and np.all(adjusted <= 1)
        assert np.all(adjusted <= np.minimum(1, len(p) * p) + 1e-15)  # never worse than Bonferroni


def test_holm_passes_nan_through_and_does_not_count_it():
    # m = 2 (the NaN is no comparison): 2 * 0.01 = 0.02, 1 * 0.04 = 0.04; with m = 3 it would be 0.03, 0.08
    adjusted = holm([0.01, float("nan"), 0.04])
    assert adjusted[0] == pytest.approx(0.02) and np.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)
    assert all(np.isnan(holm([float("nan")] * 3))) and holm([]) == []
    assert holm([0.03]) == pytest.approx([0.03])


# --- paired difference and t-test -------------------------------------------------------------------

def test_paired_difference_matches_a_hand_computed_t_interval():
    # d = [0.02, 0.03, 0.025]: mean 0.025; deviations -0.005, 0.005, 0 -> sd = sqrt(5e-5 / 2) = 0.005;
    # se = 0.005 / sqrt(3) = 0.0028868; t_{0.975, df=2} = 4.3027 -> half width 0.012421:
    # CI [0.012579, 0.037421]. (z = 1.96 would give ±0.005658; df = n = 3 would give t = 3.182.)
    t = stats.t.ppf(0.975, 2)
    assert t == pytest.approx(4.302653, abs=1e-6)
    diff, low, high = paired_difference([0.72, 0.74, 0.715], [0.70, 0.71, 0.69])
    assert diff == pytest.approx(0.025)
    assert low == pytest.approx(0.025 - t * 0.005 / np.sqrt(3)) and low == pytest.approx(0.012579, abs=1e-6)
    assert high == pytest.approx(0.025 + t * 0.005 / np.sqrt(3)) and high == pytest.approx(0.037421, abs=1e-6)


def test_two_pairs_already_give_an_interval():
    # d = [0.01, 0.03]: mean 0.02, sd 0.0141421, se 0.01, t_{0.975, df=1} = 12.7062 -> ±0.127062
    diff, low, high = paired_difference([0.71, 0.73], [0.70, 0.70])
    assert (diff, low, high) == pytest.approx((0.02, 0.02 - 0.127062, 0.02 + 0.127062), abs=1e-6)


def test_round_off_tolerance_scales_with_the_values():
    # every difference is 0.1, but float round-off spreads them by ~3e-13 at this magnitude: still constant
    values, baseline = [1000.1, 2000.2, 3000.3], [1000.0, 2000.1, 3000.2]
    assert np.ptp(np.subtract(values, baseline)) > 1e-13
    assert np.isnan(paired_ttest(values, baseline))
    diff, low, high = paired_difference(values, baseline)
    assert diff == pytest.approx(0.1) and np.isnan(low) and np.isnan(high)
    # a real spread just above the tolerance is tested
    assert paired_ttest([1000.1, 2000.2, 3000.3 + 1e-6], baseline) < 0.05


def test_round_off_tolerance_follows_the_larger_of_the_two_rows():
    # a row near 1e6 against a row near 1: the differences are 1000000.1 up to one ulp (1.2e-10) of 1e6
    small, large = [0.7, 0.8, 0.9], [1000000.8, 1000000.9, 1000001.0]
    assert np.ptp(np.subtract(large, small)) > 1e-12
    for values, baseline in ((large, small), (small, large)):
        assert np.isnan(paired_ttest(values, baseline))
        assert np.isnan(paired_difference(values, baseline)[1])


def test_paired_difference_edge_cases():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        diff, low, high = paired_difference([0.7], [0.6])                     # one pair: no interval
        assert diff == pytest.approx(0.1) and np.isnan(low) and np.isnan(high)
        assert all(np.isnan(paired_difference([], [])))                      # no pairs
        assert all(np.isnan(paired_difference([0.7, 0.8], [0.6])))            # not paired
        # every difference 0.1 (up to float round-off): zero spread, no estimate of the noise, no interval
        diff, low, high = paired_difference([0.8, 0.9, 1.0], [0.7, 0.8, 0.9])
        assert diff == pytest.approx(0.1) and np.isnan(low) and np.isnan(high)


def test_paired_ttest_is_undefined_when_every_difference_is_the_same():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy warns (and answers round-off noise) here: not asked
        assert np.isnan(paired_ttest([0.8, 0.9, 1.0], [0.7, 0.8, 0.9]))
        assert np.isnan(paired_ttest([0.8, 0.9, 1.0], [0.8, 0.9, 1.0]))
        assert np.isnan(paired_ttest([0.7], [0.6]))                           # one pair
        assert np.isnan(paired_ttest([], []))                                 # no pairs
        assert np.isnan(paired_ttest([0.7, 0.8], [0.6]))                      # not paired
    assert paired_ttest([0.72, 0.74, 0.715], [0.70, 0.71, 0.69]) == pytest.approx(
        stats.ttest_rel([0.72, 0.74, 0.715], [0.70, 0.71, 0.69]).pvalue)


def test_a_hit_count_difference_repeated_on_two_seeds_is_not_a_significant_result(tmp_path):
    # the MPD top-k study's partial report (2 seeds): FDSA+SID 271 and 298 hits of 4,665 test users in the
    # top 10, SASRec 411 and 438: Recall@10 differs by exactly 140 hits on both seeds. A t-test with zero
    # spread said p = 0, p_Holm = 0, "worse", Δ [-0.0300, -0.0300]; nothing is known about the noise.
    users = 4665
    topk = [Experiment("TopK", "SASRec", "SASRec"), Experiment("TopK", "FDSA+SID", "FDSA")]
    hits = {"SASRec": ([411, 438], [190, 195]), "FDSA+SID": ([271, 298], [128, 140])}
    by_exp = {("converge", "TopK", name): {s: {"test_result": {"recall@10": r / users, "ndcg@10": n / users / 2},
                                               "wall_seconds": 1.0} for s, (r, n) in enumerate(zip(*h))}
              for name, h in hits.items()}
    rows = summarize(by_exp, topk, ["converge"], [0, 1])
    fdsa = next(r for r in rows if r["name"] == "FDSA+SID")
    recall, ndcg = fdsa["metrics"]["recall@10"], fdsa["metrics"]["ndcg@10"]
    assert recall.diff == pytest.approx(-140 / users) and recall.n_paired == 2
    assert np.isnan(recall.ci_low) and np.isnan(recall.ci_high) and np.isnan(recall.p) and np.isnan(recall.p_holm)
    # NDCG's differences (62 and 55 half-hits) have a spread: tested, in a family of one (recall is not in it)
    assert ndcg.p == pytest.approx(stats.ttest_rel([128, 140], [190, 195]).pvalue) and ndcg.p_holm == ndcg.p
    path = tmp_path / "results.md"
    write_markdown(path, rows, "cmd", ENV, "mpd-5k-pop", [0, 1], [])
    md = path.read_text()
    assert "| FDSA+SID | recall@10 | 2 | Δ -0.0300 [–, –] | p=– | p_Holm=– | not testable |" in md
    assert "m = 1 comparisons" in md


def test_a_row_with_one_seed_is_named_outside_the_holm_family(tmp_path):
    # the MPD Table 2 while DIEN had one seed: its 5 metrics have no p-value, so the family holds the other
    # rows' comparisons only, and the sentence must not count DIEN among the family's rows
    t2 = [Experiment("T2", "DIN", "DIN"), Experiment("T2", "DeepFM", "DeepFM"), Experiment("T2", "DIEN", "DIEN")]
    aucs = {"DIN": [0.70, 0.71, 0.69], "DeepFM": [0.72, 0.74, 0.715], "DIEN": [0.68]}
    by_exp = {("converge", "T2", name): {s: {"test_result": {"auc": auc}, "wall_seconds": 1.0}
                                         for s, auc in enumerate(values)} for name, values in aucs.items()}
    rows = summarize(by_exp, t2, ["converge"], [0, 1, 2])
    path = tmp_path / "results.md"
    write_markdown(path, rows, "cmd", ENV, "mpd-5k-pop", [0, 1, 2], [])
    md = path.read_text()
    assert "| DIEN | auc | 1 | Δ -0.0200 [–, –] | p=– | p_Holm=– | not testable |" in md
    assert ("Holm family of this table: m = 1 comparisons (every (row, metric) above with a p-value, "
            "from 1 row(s); not testable on any metric: DIEN).") in md


# --- summarize ----------------------------------------------------------------------------------------

def _records(by_seed, logloss=None):
    return {seed: {"test_result": {"auc": auc, **({"logloss": logloss[seed]} if logloss else {})},
                   "wall_seconds": 1.0} for seed, auc in by_seed.items()}


T2 = [Experiment("T2", "DIN", "DIN"), Experiment("T2", "DeepFM", "DeepFM"),
      Experiment("T2", "WideDeep", "WideDeep"), Experiment("T2", "Floor: popularity", "PopularityFloor")]


def test_differences_and_intervals_pair_by_seed_in_any_order_and_skip_unpaired_seeds():
    din = {0: 0.70, 1: 0.71, 2: 0.69, 4: 0.90}
    deepfm = {2: 0.715, 0: 0.72, 3: 0.50, 1: 0.74}  # another order; seed 3 has no DIN, seed 4 no DeepFM
    by_exp = {("one_epoch", "T2", "DIN"): _records(din), ("one_epoch", "T2", "DeepFM"): _records(deepfm)}
    auc = next(r for r in summarize(by_exp, T2[:2], ["one_epoch"], [0, 1, 2, 3, 4])
               if r["name"] == "DeepFM")["metrics"]["auc"]
    # paired seeds 0, 1, 2: the hand-computed example of test_paired_difference_matches_...
    assert auc.n_paired == 3 and auc.diff == pytest.approx(0.025)
    assert (auc.ci_low, auc.ci_high) == pytest.approx(
        paired_difference([0.72, 0.74, 0.715], [0.70, 0.71, 0.69])[1:])
    assert auc.p == pytest.approx(stats.ttest_rel([0.72, 0.74, 0.715], [0.70, 0.71, 0.69]).pvalue)
    assert auc.mean == pytest.approx(np.mean(list(deepfm.values())))  # the mean keeps every seed


def test_holm_family_is_every_model_metric_of_one_table_and_budget_without_floors():
    seeds = range(4)
    din = {s: 0.70 + 0.01 * s for s in seeds}
    noise = [0.004, -0.003, 0.001, -0.002]
    deepfm = {s: din[s] + 0.010 + noise[s] for s in seeds}
    widedeep = {s: din[s] + 0.004 + noise[::-1][s] for s in seeds}
    floor = {s: din[s] - 0.002 + noise[::-1][s] for s in seeds}  # moderate p-values, were it tested
    loss = {"DIN": [0.60, 0.61, 0.62, 0.63], "DeepFM": [0.59, 0.62, 0.60, 0.64],
            "WideDeep": [0.61, 0.60, 0.63, 0.62], "Floor: popularity": [0.62, 0.60, 0.64, 0.61]}
    by_exp = {}
    for budget, shift in (("one_epoch", 0.0), ("early_stop", 0.02)):
        for name, values in (("DIN", din), ("DeepFM", deepfm), ("WideDeep", widedeep), ("Floor: popularity", floor)):
            by_exp[(budget, "T2", name)] = _records({s: v + (shift if name == "WideDeep" else 0)
                                                     for s, v in values.items()}, loss[name])
    # a second table in the same budget: its own family
    t3 = [Experiment("T3", "DIN", "DIN"), Experiment("T3", "DIN+PQ", "DIN")]
    by_exp[("one_epoch", "T3", "DIN")] = _records(din)
    by_exp[("one_epoch", "T3", "DIN+PQ")] = _records(deepfm)
    rows = summarize(by_exp, T2 + t3, ["one_epoch", "early_stop"], list(seeds))
    row = {(r["table"], r["budget"], r["name"]): r for r in rows}

    for budget in ("one_epoch", "early_stop"):
        family = [(name, m) for name in ("DeepFM", "WideDeep") for m in ("auc", "logloss")]
        raw = [row[("T2", budget, n)]["metrics"][m].p for n, m in family]
        assert len(raw) == 4 and not any(np.isnan(raw))
        expected = holm(raw)  # m = 4: two models x two metrics, the floor left out
        got = [row[("T2", budget, n)]["metrics"][m].p_holm for n, m in family]
        assert got == pytest.approx(expected)
        floor_row = row[("T2", budget, "Floor: popularity")]
        assert floor_row["is_floor"] and not floor_row["is_baseline"]
        for s in floor_row["metrics"].values():  # a reference row: a difference, but no test
            assert np.isnan(s.p) and np.isnan(s.p_holm) and not np.isnan(s.diff) and s.n_paired == 4
        # with the floor's two comparisons in the family (m = 6) the adjusted values would differ
        floor_p = [paired_ttest([floor[s] for s in seeds], [din[s] for s in seeds]),
                   paired_ttest(loss["Floor: popularity"], loss["DIN"])]
        assert holm(raw + floor_p)[:4] != pytest.approx(expected)
    # T3's only comparison is a family of one (it is not adjusted together with T2's)
    pq = row[("T3", "one_epoch", "DIN+PQ")]["metrics"]["auc"]
    assert pq.p_holm == pytest.approx(pq.p)
    assert row[("T2", "one_epoch", "DeepFM")]["metrics"]["auc"].p_holm > \
        row[("T2", "one_epoch", "DeepFM")]["metrics"]["auc"].p


def test_summarize_attaches_tuning_only_when_given():
    by_exp = {("one_epoch", "T2", "DIN"): _records({0: 0.7, 1: 0.71})}
    assert "tuning" not in summarize(by_exp, T2, ["one_epoch"], [0, 1])[0]
    info = {"trials": 3}
    assert summarize(by_exp, T2, ["one_epoch"], [0, 1], tuning={("T2", "DIN"): info})[0]["tuning"] is info
    assert summarize(by_exp, T2, ["one_epoch"], [0, 1], tuning={})[0]["tuning"] is None


# --- the report ---------------------------------------------------------------------------------------

TUNING_INFO = {"trials": 20, "pruned": 4, "space": {"learning_rate": "loguniform(1e-4, 1e-2)",
                                                   "dropout_prob": "choice(0.0, 0.2)"},
               "space_hash": "5f3a9c", "chosen": {"learning_rate": 0.0012, "dropout_prob": 0.2},
               "best_valid": {"metric": "auc", "score": 0.71234}, "frozen": "tuned/T2/DeepFM.yaml"}


def _report_rows():
    din = {0: 0.70, 1: 0.71, 2: 0.69}
    deepfm = {0: 0.72, 1: 0.74, 2: 0.715}
    widedeep = {0: 0.705, 1: 0.70, 2: 0.70}
    floor = {0: 0.55, 1: 0.55, 2: 0.55}
    by_exp = {("one_epoch", "T2", n): _records(v) for n, v in
              (("DIN", din), ("DeepFM", deepfm), ("WideDeep", widedeep), ("Floor: popularity", floor))}
    return summarize(by_exp, T2, ["one_epoch"], [0, 1, 2]), din, deepfm, widedeep


def test_results_md_shows_differences_intervals_holm_and_tuning(tmp_path):
    rows, din, deepfm, widedeep = _report_rows()
    tuning = {("T2", "DeepFM"): TUNING_INFO, ("T2", "Floor: popularity"): None, ("T2", "WideDeep"): None}
    path = tmp_path / "results.md"
    write_markdown(path, rows, "cmd", ENV, "synthetic_music", [0, 1, 2], [], tuning=tuning)
    md = path.read_text()
    p_deepfm = stats.ttest_rel(list(deepfm.values()), list(din.values())).pvalue
    p_widedeep = stats.ttest_rel(list(widedeep.values()), list(din.values())).pvalue
    p_holm = holm([p_deepfm, p_widedeep])  # family: 2 models x auc; the floor is not in it
    diff, low, high = paired_difference(list(deepfm.values()), list(din.values()))
    assert f"| DeepFM | 3 | {np.mean(list(deepfm.values())):.4f} ± {np.std(list(deepfm.values()), ddof=1):.4f} |" in md
    assert (f"| DeepFM | auc | 3 | Δ {diff:+.4f} [{low:.4f}, {high:.4f}] | p={p_deepfm:.3g} "
            f"| p_Holm={p_holm[0]:.3g} |") in md
    assert "| WideDeep | auc | 3 | Δ " in md and f"p_Holm={p_holm[1]:.3g}" in md
    f_diff, f_low, f_high = paired_difference([0.55] * 3, list(din.values()))
    assert (f"| Floor: popularity | auc | 3 | Δ {f_diff:+.4f} [{f_low:.4f}, {f_high:.4f}] | p=– | p_Holm=– "
            "| reference (not tested) |") in md
    assert "m = 2 comparisons" in md and "floors excluded: Floor: popularity" in md
    # the header states the method and the family, and that verdicts use the adjusted p
    for text in ("Seeds: [0, 1, 2]", "95% confidence interval", "paired t", "Holm", "floors are reference rows",
                 "p_Holm < 0.05"):
        assert text in md, text
    # tuning: budget, space, chosen values, best validation score, frozen file; untuned rows say so
    tuning_md = md[md.index("## Tuning"):]
    assert ("| T2 | DeepFM | 20 (4 pruned) | `learning_rate`: loguniform(1e-4, 1e-2); `dropout_prob`: "
            "choice(0.0, 0.2) (space hash `5f3a9c`) | `learning_rate` = 0.0012; `dropout_prob` = 0.2 "
            "| auc 0.7123 | `tuned/T2/DeepFM.yaml` |") in tuning_md
    assert "| T2 | Floor: popularity | not tuned (training-free) |" in tuning_md
    assert "| T2 | WideDeep | not tuned |" in tuning_md
    assert "| T2 | DIN | not tuned |" in tuning_md  # in the report but not in the dict: listed, not dropped


def test_results_md_has_no_tuning_section_unless_given_and_reads_it_from_rows(tmp_path):
    rows, *_ = _report_rows()
    write_markdown(tmp_path / "a.md", rows, "cmd", ENV, "d", [0, 1, 2], [])
    assert "## Tuning" not in (tmp_path / "a.md").read_text()
    for r in rows:
        r["tuning"] = TUNING_INFO if r["name"] == "DeepFM" else None
    write_markdown(tmp_path / "b.md", rows, "cmd", ENV, "d", [0, 1, 2], [])
    md = (tmp_path / "b.md").read_text()
    assert "| T2 | DeepFM | 20 (4 pruned) |" in md and "| T2 | DIN | not tuned |" in md


def test_results_tex_marks_holm_significant_cells_only(tmp_path):
    rows, *_ = _report_rows()
    deepfm = next(r for r in rows if r["name"] == "DeepFM")
    widedeep = next(r for r in rows if r["name"] == "WideDeep")
    deepfm["metrics"]["auc"] = deepfm["metrics"]["auc"]._replace(p=0.001, p_holm=0.04)
    widedeep["metrics"]["auc"] = widedeep["metrics"]["auc"]._replace(p=0.01, p_holm=0.06)  # raw p < 0.05 only
    write_latex(tmp_path / "results.tex", rows)
    lines = (tmp_path / "results.tex").read_text().splitlines()
    assert next(line for line in lines if line.startswith("DeepFM &")).endswith("$^{\\dagger}$ \\\\")
    assert "dagger" not in next(line for line in lines if line.startswith("WideDeep &"))
    assert "dagger" not in next(line for line in lines if line.startswith("DIN &"))
    assert any("p_Holm < 0.05" in line for line in lines)


def test_metric_stats_fields():
    assert MetricStats._fields == ("mean", "std", "diff", "ci_low", "ci_high", "p", "p_holm", "n_paired")
    base = MetricStats(0.7, 0.01)
    assert np.isnan(base.diff) and np.isnan(base.p_holm) and base.n_paired == 0


# --- the table's claim --------------------------------------------------------------------------------

CLAIM_SUITE = T2 + [Experiment("T2", "PSRQ+MCCA", "MCCA"),
                    Experiment("T3", "DIN", "DIN"), Experiment("T3", "DIN+PSRQ", "DIN"),
                    Experiment("T4", "DIN", "DIN"), Experiment("T4", "MCCA w/o MSC", "MCCA"),
                    Experiment("T4", "PSRQ+MCCA", "MCCA")]


def _claim_records():
    din = {0: 0.70, 1: 0.71, 2: 0.69}
    values = {"DIN": din, "DeepFM": {0: 0.72, 1: 0.74, 2: 0.715}, "WideDeep": {0: 0.76, 1: 0.75, 2: 0.74},
              "Floor: popularity": {0: 0.55, 1: 0.55, 2: 0.55}, "PSRQ+MCCA": {0: 0.78, 1: 0.77, 2: 0.75},
              "DIN+PSRQ": {0: 0.79, 1: 0.775, 2: 0.76}, "MCCA w/o MSC": {0: 0.775, 1: 0.772, 2: 0.745}}
    by_exp = {("one_epoch", e.table, e.name): _records(values[e.name]) for e in CLAIM_SUITE}
    return by_exp, values


def test_each_tables_claimed_row_is_tested_against_every_other_row_in_a_holm_family_of_its_own():
    by_exp, v = _claim_records()
    claims = compare_claims(by_exp, CLAIM_SUITE, ["one_epoch"])
    t2 = [e for e in claims if e["table"] == "T2"]
    # every other row of T2, in the suite's order; Δ = PSRQ+MCCA − row
    assert [e["versus"] for e in t2] == ["DIN", "DeepFM", "WideDeep", "Floor: popularity"]
    assert all(e["name"] == "PSRQ+MCCA" and e["versus_table"] == "T2" for e in t2)
    mcca = list(v["PSRQ+MCCA"].values())
    raw = [stats.ttest_rel(mcca, list(v[n].values())).pvalue for n in ("DIN", "DeepFM", "WideDeep")]
    for e, p, p_holm in zip(t2, raw, holm(raw)):  # m = 3: the floor is described, not tested
        auc = e["metrics"]["auc"]
        diff, low, high = paired_difference(mcca, list(v[e["versus"]].values()))
        assert (auc.diff, auc.ci_low, auc.ci_high) == pytest.approx((diff, low, high))
        assert auc.p == pytest.approx(p) and auc.p_holm == pytest.approx(p_holm) and auc.n_paired == 3
    assert t2[0]["metrics"]["auc"].diff == pytest.approx(0.0667, abs=1e-4)  # the sign: claimed − other
    floor = t2[3]
    assert floor["is_floor"] and np.isnan(floor["metrics"]["auc"].p) and np.isnan(floor["metrics"]["auc"].p_holm)
    # the baseline comparisons keep their own family: DeepFM vs DIN is adjusted over T2's 3 non-baseline
    # models, not together with the claim's comparisons
    rows = summarize(by_exp, CLAIM_SUITE, ["one_epoch"], [0, 1, 2])
    base_raw = [next(r for r in rows if (r["table"], r["name"]) == ("T2", n))["metrics"]["auc"].p
                for n in ("DeepFM", "WideDeep", "PSRQ+MCCA")]
    assert next(r for r in rows if (r["table"], r["name"]) == ("T2", "DeepFM"))["metrics"]["auc"].p_holm == \
        pytest.approx(holm(base_raw)[0])


def test_t4s_claim_is_also_tested_against_din_with_the_same_sids_from_table_3():
    by_exp, v = _claim_records()
    t4 = [e for e in compare_claims(by_exp, CLAIM_SUITE, ["one_epoch"]) if e["table"] == "T4"]
    assert [(e["versus_table"], e["versus"]) for e in t4] == [("T4", "DIN"), ("T4", "MCCA w/o MSC"),
                                                              ("T3", "DIN+PSRQ")]
    cross = t4[2]["metrics"]["auc"]
    assert cross.diff == pytest.approx(np.mean(np.subtract([0.78, 0.77, 0.75], [0.79, 0.775, 0.76])))
    raw = [e["metrics"]["auc"].p for e in t4]
    assert [e["metrics"]["auc"].p_holm for e in t4] == pytest.approx(holm(raw))  # m = 3, T4's own family
    t3 = [e for e in compare_claims(by_exp, CLAIM_SUITE, ["one_epoch"]) if e["table"] == "T3"]
    assert [(e["name"], e["versus"]) for e in t3] == [("DIN+PSRQ", "DIN")]
    # without Table 3 in the suite there is nothing to compare across; without the claimed row, no claim
    no_t3 = [e for e in CLAIM_SUITE if e.table != "T3"]
    assert [e["versus"] for e in compare_claims(by_exp, no_t3, ["one_epoch"]) if e["table"] == "T4"] == \
        ["DIN", "MCCA w/o MSC"]
    assert compare_claims(by_exp, T2, ["one_epoch"]) == []


def test_results_md_and_csv_show_the_claim_with_its_own_family(tmp_path):
    by_exp, v = _claim_records()
    suite = CLAIM_SUITE[:5]  # T2 only
    rows = summarize(by_exp, suite, ["one_epoch"], [0, 1, 2])
    claims = compare_claims(by_exp, suite, ["one_epoch"])
    write_markdown(tmp_path / "results.md", rows, "cmd", ENV, "d", [0, 1, 2], [], claims=claims)
    md = (tmp_path / "results.md").read_text()
    deepfm = claims[1]["metrics"]["auc"]
    assert "The claim: **PSRQ+MCCA** against every other row (Δ = PSRQ+MCCA − row" in md
    assert (f"| DeepFM | auc | 3 | Δ {deepfm.diff:+.4f} [{deepfm.ci_low:.4f}, {deepfm.ci_high:.4f}] "
            f"| p={deepfm.p:.3g} | p_Holm={deepfm.p_holm:.3g} |") in md
    f_diff, f_low, f_high = paired_difference([0.78, 0.77, 0.75], [0.55] * 3)
    assert (f"| Floor: popularity | auc | 3 | Δ {f_diff:+.4f} [{f_low:.4f}, {f_high:.4f}] | p=– | p_Holm=– "
            "| reference (not tested) |") in md
    assert "Holm family of this claim: m = 3 comparisons" in md
    verdicts = {e["versus"]: ("better" if e["metrics"]["auc"].p_holm < 0.05 else "n.s.") for e in claims[:3]}
    assert "better" in verdicts.values() and "n.s." in verdicts.values()  # the summary line has both
    summary = next(line for line in md.splitlines()
                   if line.startswith("On `auc` (verdicts at p_Holm < 0.05), PSRQ+MCCA is "))
    for name, verdict in verdicts.items():
        assert (f"better than" if verdict == "better" else "n.s. against") in summary and name in summary
    # results.csv holds the same figures: claim rows are name = claimed row, versus = the other row
    records = [{"table": t, "name": n, "model": "M", "overrides": {}, "budget": b, "seed": s, **r}
               for (b, t, n), by_seed in by_exp.items() if t == "T2" for s, r in by_seed.items()]
    write_csv(tmp_path / "results.csv", records, rows, claims)
    with open(tmp_path / "results.csv") as f:
        lines = list(csv.DictReader(f))
    claim = {(r["versus"], r["statistic"]): r for r in lines if r["family"] == "claim"}
    assert {r["name"] for r in lines if r["family"] == "claim"} == {"PSRQ+MCCA"}
    assert float(claim[("DeepFM", "diff")]["auc"]) == pytest.approx(deepfm.diff)
    assert float(claim[("DeepFM", "p_holm")]["auc"]) == pytest.approx(deepfm.p_holm)
    assert claim[("Floor: popularity", "p")]["auc"] == "" and claim[("DeepFM", "pairs")]["auc"] == "3"
    assert [r["statistic"] for r in lines if (r["versus"], r["family"]) == ("DIN", "claim")] == [
        "diff", "ci_low", "ci_high", "p", "p_holm", "pairs"]
    mean = next(r for r in lines if (r["name"], r["statistic"]) == ("WideDeep", "mean"))
    assert float(mean["auc"]) == pytest.approx(0.75) and mean["wall_seconds"] == "1.0" and mean["seed"] == ""


def test_results_csv_holds_the_tuning_s_chosen_values_and_best_validation_score(tmp_path):
    rows, *_ = _report_rows()
    records = [{"table": "T2", "name": r["name"], "model": r["model"], "overrides": {}, "budget": "one_epoch",
                "seed": 0, "wall_seconds": 1.0, "test_result": {"auc": 0.7, "logloss": 0.6}} for r in rows]
    tuning = {("T2", "DeepFM"): TUNING_INFO, ("T2", "Floor: popularity"): None, ("T3", "DIN+PQ"): TUNING_INFO}
    write_csv(tmp_path / "results.csv", records, rows, (), tuning)
    with open(tmp_path / "results.csv") as f:
        tuned = [r for r in csv.DictReader(f) if r["statistic"] == "tuned"]
    assert len(tuned) == 1  # the floor is not tuned; T3 is not in this report
    assert (tuned[0]["name"], tuned[0]["family"], tuned[0]["versus"]) == ("DeepFM", "tuning", "20 (4)")
    assert json.loads(tuned[0]["overrides"]) == {"learning_rate": 0.0012, "dropout_prob": 0.2}
    assert float(tuned[0]["auc"]) == pytest.approx(0.71234) and tuned[0]["logloss"] == ""


def test_a_claim_skips_rows_without_runs_needs_the_other_tables_row_in_the_suite_and_scores_topk_on_topk():
    by_exp, v = _claim_records()
    del by_exp[("one_epoch", "T2", "DeepFM")]  # not run (yet): left out, the rows after it still compared
    t2 = [e["versus"] for e in compare_claims(by_exp, CLAIM_SUITE, ["one_epoch"]) if e["table"] == "T2"]
    assert t2 == ["DIN", "WideDeep", "Floor: popularity"]
    # T3 in the suite, but not its DIN+PSRQ: no cross-table comparison (the records alone do not decide)
    without_psrq = [e for e in CLAIM_SUITE if (e.table, e.name) != ("T3", "DIN+PSRQ")]
    assert [e["versus"] for e in compare_claims(by_exp, without_psrq, ["one_epoch"]) if e["table"] == "T4"] == \
        ["DIN", "MCCA w/o MSC"]
    topk = [Experiment("TopK", "SASRec", "SASRec"), Experiment("TopK", "PSRQ+MCCA", "MCCA")]
    runs = {name: {s: {"test_result": {"recall@10": r, "ndcg@10": r / 2, "auc": 0.5}, "wall_seconds": 1.0}
                   for s, r in enumerate(values)}
            for name, values in (("SASRec", [0.010, 0.012, 0.011]), ("PSRQ+MCCA", [0.017, 0.018, 0.0175]))}
    claims = compare_claims({("converge", "TopK", n): r for n, r in runs.items()}, topk, ["converge"])
    assert [(e["name"], e["versus"]) for e in claims] == [("PSRQ+MCCA", "SASRec")]
    assert list(claims[0]["metrics"]) == ["recall@10", "ndcg@10"]  # the top-k metrics, never the CTR ones
    assert claims[0]["metrics"]["recall@10"].diff == pytest.approx(0.0065)


def test_the_claim_plot_draws_each_difference_with_its_interval_and_marks_holm_significance(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from recbole_psrq.benchmark.plots import plot_claims

    drawn, original = [], Axes.errorbar

    def recording_errorbar(self, x, y, *args, **kwargs):
        drawn.append((self, x, y, kwargs))
        return original(self, x, y, *args, **kwargs)

    monkeypatch.setattr(Axes, "errorbar", recording_errorbar)
    by_exp, _ = _claim_records()
    claims = compare_claims(by_exp, CLAIM_SUITE, ["one_epoch"])
    paths = plot_claims(str(tmp_path), claims)
    assert [os.path.basename(p) for p in paths] == ["claims_T2.png", "claims_T3.png", "claims_T4.png"]
    assert open(paths[0], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    t2 = [e for e in claims if e["table"] == "T2"]
    assert len(drawn) == len(claims) and [d[2] for d in drawn[:4]] == [0, 1, 2, 3]
    for (ax, x, _, kwargs), e in zip(drawn, t2):
        s = e["metrics"]["auc"]
        assert x == pytest.approx(s.diff)
        assert np.ravel(kwargs["xerr"]) == pytest.approx([s.diff - s.ci_low, s.ci_high - s.diff])
        filled = kwargs["markerfacecolor"] != "white"
        assert filled == (s.p_holm < 0.05 if not e["is_floor"] else False)
        assert kwargs["fmt"] == ("s" if e["is_floor"] else "o")
    assert {d[3]["markerfacecolor"] for d in drawn[:3]} == {"#3b7dd8", "white"}  # both kinds occur
    labels = [t.get_text() for t in drawn[-1][0].get_yticklabels()]
    assert labels == ["DIN", "MCCA w/o MSC", "DIN+PSRQ (T3)"]
    assert drawn[0][0].get_xlabel().startswith("Δ auc = PSRQ+MCCA − row")


def test_results_md_says_which_trained_rows_do_not_beat_the_best_floor(tmp_path):
    by_exp, _ = _claim_records()
    by_exp[("one_epoch", "T2", "Floor: popularity")] = _records({0: 0.715, 1: 0.705, 2: 0.71})  # mean 0.71
    by_exp[("one_epoch", "T2", "Floor: content (text)")] = _records({0: 0.60, 1: 0.60, 2: 0.60})  # the lower one
    suite = CLAIM_SUITE[:5] + [Experiment("T2", "Floor: content (text)", "ContentFloor")]
    write_markdown(tmp_path / "a.md", summarize(by_exp, suite, ["one_epoch"], [0, 1, 2]), "cmd", ENV, "d",
                   [0, 1, 2], [])
    md = (tmp_path / "a.md").read_text()
    # DIN's mean is 0.7000, below the floor's 0.7100; DeepFM (0.7250) and the rest are above
    assert ("Floors: the best training-free score on `auc` is Floor: popularity, 0.7100; trained rows not "
            "above it (mean): DIN (0.7000).") in md
    by_exp[("one_epoch", "T2", "Floor: popularity")] = _records({0: 0.55, 1: 0.55, 2: 0.55})
    write_markdown(tmp_path / "b.md", summarize(by_exp, suite, ["one_epoch"], [0, 1, 2]), "cmd", ENV, "d",
                   [0, 1, 2], [])
    md = (tmp_path / "b.md").read_text()  # now the content floor is the higher one
    assert "is Floor: content (text), 0.6000; every trained row's mean is above it." in md


# --- SID quality ----------------------------------------------------------------------------------------

def _sid_entry(root, name, quantizer, k, levels, seed, items, unique, usage, nmi, options=None):
    folder = root / "runs" / "sid_cache" / "ds" / name
    folder.mkdir(parents=True)
    report = {"n_items": items, "unique_sids": unique, "distinct_sid_share": unique / items,
              "collision_rate": 1 - unique / items, "recon_mse": 0.1 * levels, "knn_recall@10": 0.05,
              "utilization": usage, "perplexity": [10.0] * levels, "nmi_level1": nmi, "warnings": ["w"]}
    (folder / "report.json").write_text(json.dumps({"modality": "text", "settings": {
        "quantizer": quantizer, "n_levels": levels, "codebook_size": k, "seed": seed, "options": options or {}},
        "report": report}))
    (folder / "quantizer.npz").write_bytes(b"not read")


def _sid_cache(tmp_path):
    _sid_entry(tmp_path, "text_sid-psrq-b", "psrq", 64, 2, 1, 100, 60, [1.0, 0.5], [1.0, 0.8], {"prefix_weight": 1})
    _sid_entry(tmp_path, "text_sid-psrq-a", "psrq", 64, 2, 0, 100, 40, [1.0, 0.7], [1.0, 0.6], {"prefix_weight": 1})
    _sid_entry(tmp_path, "text_sid-psrq-c", "psrq", 32, 3, 0, 30, 20, [1.0, 1.0, 1.0], [1.0, 0.9, 0.9])  # a trial
    _sid_entry(tmp_path, "audio_sid-psrq-d", "psrq", 64, 2, 0, 100, 10, [0.5, 0.5], [1.0, 0.99])
    _sid_entry(tmp_path, "text_sid-rq_kmeans-e", "rq_kmeans", 64, 2, 0, 100, 90, [1.0, 1.0], [1.0, 0.3])
    (tmp_path / "runs" / "sid_cache" / "other-dataset").mkdir()
    return read_sid_reports(str(tmp_path), "ds")


def test_sid_reports_are_read_from_the_studys_cache_sorted_by_settings_and_seed(tmp_path):
    entries = _sid_cache(tmp_path)
    assert [(e["field"], e["quantizer"], e["codebook_size"], e["levels"], e["items"], e["seed"]) for e in entries] == [
        ("audio_sid", "psrq", 64, 2, 100, 0), ("text_sid", "psrq", 32, 3, 30, 0), ("text_sid", "psrq", 64, 2, 100, 0),
        ("text_sid", "psrq", 64, 2, 100, 1), ("text_sid", "rq_kmeans", 64, 2, 100, 0)]
    assert entries[2]["options"] == '{"prefix_weight": 1}' and entries[2]["report"]["unique_sids"] == 40
    assert read_sid_reports(str(tmp_path), "missing") == []


def test_sid_quality_csv_and_section_give_each_fit_and_the_mean_per_settings(tmp_path):
    entries = _sid_cache(tmp_path)
    write_sid_quality_csv(tmp_path / "sid_quality.csv", entries)
    with open(tmp_path / "sid_quality.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and rows[2]["unique_sids"] == "40" and json.loads(rows[2]["utilization"]) == [1.0, 0.7]
    assert (rows[2]["items"], rows[2]["seed"], rows[2]["warnings"]) == ("100", "0", "1")
    rows_, *_ = _report_rows()
    write_markdown(tmp_path / "results.md", rows_, "cmd", ENV, "d", [0, 1, 2], [], sid_entries=entries)
    md = (tmp_path / "results.md").read_text()
    # the two seeds of one setting are averaged: 50 distinct SIDs, collisions 0.5, utilization 1.00, 0.60
    assert ('| text_sid | psrq | 64 | 2 | {"prefix_weight": 1} | 100 | 2 (0, 1) | 50 | 0.5000 | 1.00, 0.60 | 0.2000 '
            '| 0.0500 |') in md
    assert "| text_sid | psrq | 32 | 3 | {} | 30 | 1 (0) | 20 |" in md
    write_markdown(tmp_path / "none.md", rows_, "cmd", ENV, "d", [0, 1, 2], [])
    assert "## SID quality" not in (tmp_path / "none.md").read_text()


def test_the_drift_plot_averages_each_quantizers_most_fitted_text_settings(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from recbole_psrq.benchmark.plots import plot_sid_drift

    lines, original = [], Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda self, x, y, *a, **k: lines.append((list(x), list(y), k["label"]))
                        or original(self, x, y, *a, **k))
    path = plot_sid_drift(str(tmp_path), _sid_cache(tmp_path))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # psrq: the k=64 setting (2 fits, mean NMI 0.7 at level 2), not the 1-fit trial setting; no audio
    assert lines == [([1, 2], pytest.approx([1.0, 0.7]), "psrq (k=64, 2 fits)"),
                     ([1, 2], pytest.approx([1.0, 0.3]), "rq_kmeans (k=64, 1 fits)")]
    assert plot_sid_drift(str(tmp_path), []) is None


def test_git_keeps_a_sid_cache_entrys_report_and_ignores_the_rest():
    import subprocess

    from recbole_psrq.quick_start import PROJECT_ROOT

    if subprocess.run(["git", "rev-parse"], cwd=PROJECT_ROOT, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout (e.g. a mutation-testing copy): .gitignore cannot be asked")
    entry = "results/x/runs/sid_cache/ds/text_sid-psrq-abc"
    ignored = subprocess.run(["git", "check-ignore", "--no-index", f"{entry}/report.json", f"{entry}/quantizer.npz",
                              f"{entry}/sids.npz", f"{entry}/manifest.json"],
                             cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.split()
    assert ignored == [f"{entry}/quantizer.npz", f"{entry}/sids.npz", f"{entry}/manifest.json"]
