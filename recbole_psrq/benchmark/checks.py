"""What the benchmark refuses to report: runs of one table (or of two tables a claim compares) scored on
different test rows, and results made from (or aggregated in) a tree with uncommitted changes unless
``--allow-dirty``."""
from recbole_psrq.benchmark.suites import CLAIM_ALSO_VERSUS
from recbole_psrq.errors import PSRQError


class IntegrityError(PSRQError):
    """A report would compare runs that are not comparable, or could not be traced to a commit."""


def check_same_test_rows(records_by_exp, suite):
    """Every run of a table (per budget), CTR or top-k, must carry the same test-row digest, recorded at
    dataset build (``protocol.test_digest`` in the run's result JSON). Raises :class:`IntegrityError` naming
    two runs that differ, or a run that has no digest."""
    for (budget, table, name), by_seed in sorted(records_by_exp.items()):
        for seed, record in sorted(by_seed.items()):
            digest = (record.get("protocol") or {}).get("test_digest")
            if digest is None:
                raise IntegrityError(
                    f"{table} {name} (budget {budget}, seed {seed}) has no test-row digest: it was made "
                    "before runs recorded one. Delete its record under "
                    "<out>/runs/ and rerun the suite.")
    for (budget, table), runs in _table_runs(records_by_exp).items():
        first = runs[0]
        for other in runs[1:]:
            if other[2] != first[2]:
                raise IntegrityError(
                    f"{table} (budget {budget}) would compare runs scored on different test rows: "
                    f"{first[0]} seed {first[1]} has test digest {first[2][:12]}…, {other[0]} seed {other[1]} "
                    f"has {other[2][:12]}…. Every model of a table must be built from the same dataset and "
                    "protocol settings (same dataset files, split, history_min_length...).")
    # a claim tested across tables (T4's PSRQ+MCCA against T3's DIN+PSRQ) needs the same rows in both
    tables = _table_runs(records_by_exp)
    for (budget, table), runs in tables.items():
        for other_table, _ in CLAIM_ALSO_VERSUS.get(table, []):
            other = tables.get((budget, other_table))
            if other and other[0][2] != runs[0][2]:
                raise IntegrityError(
                    f"{table}'s claim is tested against {other_table} (budget {budget}), but they were scored "
                    f"on different test rows: {table} {runs[0][0]} seed {runs[0][1]} has test digest "
                    f"{runs[0][2][:12]}…, {other_table} {other[0][0]} seed {other[0][1]} has {other[0][2][:12]}…. "
                    "Run both tables from the same dataset and protocol settings.")


def _table_runs(records_by_exp):
    runs = {}
    for (budget, table, name), by_seed in sorted(records_by_exp.items()):
        runs.setdefault((budget, table), []).extend(
            (name, seed, record["protocol"]["test_digest"]) for seed, record in sorted(by_seed.items()))
    return runs


def dirty_sources(records, tree_state):
    """Why the report is not from a clean commit: the aggregating tree's changed paths and each run made
    from a changed tree or with no recorded commit. Empty when everything is clean."""
    reasons = [f"uncommitted change in the working tree: {p}" for p in tree_state["dirty"]]
    for r in records:
        git = r.get("git")
        if git is None:
            reasons.append(f"{r['table']} {r['name']} seed {r['seed']}: no commit recorded with the run")
        elif git["dirty"]:
            reasons.append(f"{r['table']} {r['name']} seed {r['seed']}: run at {git['commit'][:10]} with "
                           f"uncommitted changes ({', '.join(git['dirty'][:3])})")
    return reasons
