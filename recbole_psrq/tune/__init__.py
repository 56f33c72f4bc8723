"""Validation-only hyper-parameter search, the same budget for every model.

    python -m recbole_psrq.tune --model MCCA --dataset synthetic_music --trials 8

Each experiment gets a search space (``properties/hyper/<Model>.yaml``, plus ``sid.yaml`` for runs with
SID fields; RecBole's hyper files are read too), a seeded Optuna TPE sampler, and ``--trials`` trials,
each trained with early stopping on the validation metric and stopped early by a median pruner when
clearly worse than the finished trials. No trial builds the test dataloader; trial records hold
validation metrics only. The best trial is frozen as ``tuned.yaml`` (the chosen values, the space and its
hash, the budget, the best validation score), which the seeded final runs read (``--config_files``, or
the benchmark's ``--tune N``).
"""
# Modules: space (search-space files), trial (one trial: train + validate, pruning), study (the driver:
# seeded studies in rounds through an executor, resume, freezing), cli (main; __main__ runs it).
