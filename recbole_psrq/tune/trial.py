"""One tuning trial: train with early stopping on the validation metric, report the validation score
of every epoch, stop early when the pruner says the trial is clearly worse than the finished ones, and
return validation metrics only. The test dataloader is never built, and no checkpoint is written.

    python -m recbole_psrq.tune.trial --spec '<json>'

The spec (written by the tuning driver, :mod:`recbole_psrq.tune.study`): ``model``, ``dataset``,
``config_files``, ``overrides`` (the trial's sampled values included), ``direction``, ``pruner``
(``{"n_startup_trials", "n_warmup_steps"}``) and ``history``: the validation curves of the study's
finished trials, which the pruner compares this trial with.
"""
import argparse
import json
import os
import sys
import time
from logging import getLogger

from recbole_psrq.errors import PSRQError
from recbole_psrq.io import atomic_open


class Pruned(Exception):
    """Raised from RecBole's epoch callback to stop a trial the pruner has given up on."""


def train_valid_dataloaders(config, dataset):
    """RecBole's ``data_preparation`` without the test dataloader: split, samplers, train and valid
    loaders. (The test split still exists, as the dataset's split: its row digest is recorded by the
    protocol checks, and nothing reads its rows.)"""
    from recbole.data.utils import KGSampler, create_samplers, get_dataloader
    from recbole.utils import ModelType

    built = dataset.build()
    train_dataset, valid_dataset, _ = built
    train_sampler, valid_sampler, _ = create_samplers(config, dataset, built)
    if config["MODEL_TYPE"] == ModelType.KNOWLEDGE:
        kg_sampler = KGSampler(dataset, config["train_neg_sample_args"]["distribution"],
                               config["train_neg_sample_args"]["alpha"])
        train_data = get_dataloader(config, "train")(config, train_dataset, train_sampler, kg_sampler,
                                                     shuffle=True)
    else:
        train_data = get_dataloader(config, "train")(config, train_dataset, train_sampler,
                                                     shuffle=config["shuffle"])
    valid_data = get_dataloader(config, "valid")(config, valid_dataset, valid_sampler, shuffle=False)
    return train_data, valid_data


def make_pruner_trial(direction, history, n_startup_trials=2, n_warmup_steps=2):
    """An Optuna trial in a throwaway study that holds the finished trials' validation curves, so that
    Optuna's MedianPruner decides here exactly as it would in the driver's study."""
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction, pruner=optuna.pruners.MedianPruner(
        n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps))
    for past in history:
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=past["value"],
                                     intermediate_values={int(s): v for s, v in past["curve"]}))
    return study.ask()


def train_and_validate(model, dataset=None, config_files=(), overrides=None, should_stop=None):
    """Train ``model`` with early stopping on validation (never touching the test split). ``should_stop
    (epoch, score)`` is asked after every validation; True stops the trial as pruned. Returns the
    validation record: ``state`` (complete | pruned), ``valid_curve`` ([[epoch, score], ...]),
    ``best_valid_score``, ``best_valid_result``, ``valid_metric``, ``run_id``, ``log_file``, ``seed``,
    ``resumed`` (see :func:`recbole_psrq.resume.fit`)."""
    from recbole_psrq import quick_start

    config = quick_start.build_config(model, dataset, config_files, overrides)
    with quick_start.torch_settings(config):
        return _train_and_validate(config, should_stop)


def _train_and_validate(config, should_stop):
    from recbole.utils import get_trainer, init_seed

    from recbole_psrq import quick_start

    init_seed(config["seed"], config["reproducibility"])
    run_id = quick_start.new_run_id()
    log_file = quick_start._init_logger(config, run_id)
    logger = getLogger()
    logger.info(config)
    data = quick_start.create_dataset(config)
    train_data, valid_data = train_valid_dataloaders(config, data)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model_obj = quick_start.resolve_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model_obj)
    curve = []

    def after_validation(epoch, score):
        curve.append([int(epoch), float(score)])
        if should_stop is not None and should_stop(int(epoch), float(score)):
            raise Pruned()

    state = "complete"
    try:
        quick_start._fit(config, trainer, train_data, valid_data, saved=False, callback_fn=after_validation)
    except Pruned:
        state = "pruned"
        logger.info(f"trial pruned after epoch {curve[-1][0]}: validation {config['valid_metric']} "
                    f"{curve[-1][1]:.4f} is below the median of the finished trials at that epoch")
    if not curve:
        raise PSRQError("The trial ran no validation (eval_step 0 or epochs 0); tuning selects on "
                        "validation, so set eval_step >= 1.")
    best = max(s for _, s in curve) if config["valid_metric_bigger"] else min(s for _, s in curve)
    if config["resume_file"] and os.path.exists(config["resume_file"]):
        os.remove(config["resume_file"])
    return {"model": config["model"], "dataset": config["dataset"], "seed": config["seed"],
            "state": state, "valid_metric": config["valid_metric"].lower(),
            "valid_metric_bigger": bool(config["valid_metric_bigger"]), "valid_curve": curve,
            "best_valid_score": best,
            "best_valid_result": quick_start._plain(trainer.best_valid_result),
            "run_id": run_id, "log_file": log_file, "resumed": getattr(trainer, "resumed", None)}


def pruning_rule(spec):
    """``should_stop(epoch, score)`` from the spec's pruner and finished trials (None without history)."""
    if not spec.get("history"):
        return None
    probe = make_pruner_trial(spec["direction"], spec["history"], **(spec.get("pruner") or {}))

    def should_stop(epoch, score):
        probe.report(score, epoch)
        return probe.should_prune()
    return should_stop


def run_spec(spec):
    """Run the trial a spec describes; returns the record (validation metrics only)."""
    start = time.time()
    record = train_and_validate(spec["model"], spec.get("dataset"), spec.get("config_files") or (),
                                spec["overrides"], pruning_rule(spec))
    record["wall_seconds"] = time.time() - start
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_psrq.tune.trial", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", required=True, help="the trial, as JSON text")
    args = parser.parse_args(argv)
    try:
        record = run_spec(json.loads(args.spec))
    except PSRQError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = os.path.splitext(record["log_file"] or "trial")[0] + ".trial.json"
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    print(f"results written to {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
