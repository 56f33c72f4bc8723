"""Multi-seed benchmark: the paper's comparisons (its Tables 2-4) plus a top-k table, on any dataset.

    python -m recbole_psrq.benchmark --suite paper --dataset mpd-5k --seeds 3 --out results/mpd-5k

Every (experiment, budget, seed) is one ``run_recbole_psrq.py`` process; its result JSON is kept under
``<out>/runs/`` and a finished run is never rerun, so a killed suite resumes where it stopped.
Budgets: ``one_epoch`` (the paper trains 1 epoch) and ``early_stop`` (up to 20 epochs, stopped
on the validation metric). Model selection uses validation only; test metrics are only read.
Outputs in ``<out>``: ``results.csv`` (one row per run), ``results.md`` and ``results.tex`` (mean ± std
over seeds, paired t-test against the table's baseline on the same seeds, wall time), PNG plots, and
the command, git commit and package versions that produced them.
"""
# Modules: suites (experiments, budgets, metrics), runner (one process per run, resume), stats (mean ±
# std, paired t-test), checks (same test rows per table, clean commit), report (md/csv/tex, environment),
# plots (PNGs), cli (main; __main__ runs it).
# Importing this package imports none of them: nothing beyond `import recbole_psrq` (no RecBole, no torch).
