"""Multi-seed benchmark: the paper's comparisons (its Tables 2-4) plus a top-k table, on any dataset.

    python -m recbole_psrq.benchmark --suite paper --dataset mpd-5k --tune 8 --seeds 5 --jobs 2

Every (experiment, budget, seed) is one ``run_recbole_psrq.py`` process, run by an executor (``--executor
local --jobs N``, or ``ray``); its result JSON is kept under ``<out>/runs/`` and a finished run is never
rerun, so a killed suite resumes where it stopped. With ``--tune N`` every trainable experiment is first
tuned on validation with the same N trials (:mod:`recbole_psrq.tune`) and its seeds run the frozen
configuration.
Budgets: ``one_epoch`` (the paper trains 1 epoch), ``early_stop`` (up to 20 epochs, stopped on the
validation metric) and ``converge`` (up to 200, patience 5). Model selection uses validation only; test
metrics are only read. Outputs in ``<out>``: ``results.md`` and ``results.tex`` (mean ± std over seeds;
the paired difference to the table's baseline, and the table's claimed row against every other row, each
with its 95% CI, raw and Holm-adjusted p-values; the tuning budget, space and chosen values; wall time),
``results.csv`` (every run and every one of those figures), ``tuned/`` (the frozen configurations), PNG
plots, and the command, git commit and package versions that produced them.
"""
# Modules: suites (experiments, budgets, metrics), executor (tasks; the local process pool), ray_executor,
# runner (runs through an executor, resume), tuning (the --tune stage), stats (mean ± std, paired CIs,
# Holm), checks (same test rows per table, clean commit), report (md/csv/tex, environment), plots (PNGs),
# trace (a document's figures traced to results.csv; its own CLI), cli (main; __main__ runs it).
# Importing this package imports none of them: nothing beyond `import recbole_psrq` (no RecBole, no torch).
