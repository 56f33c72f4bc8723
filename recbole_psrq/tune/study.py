"""The tuning driver: for each experiment, a seeded Optuna TPE study over its search space, trials run
through an executor (:mod:`recbole_psrq.benchmark.executor`) in rounds, and the best trial frozen as a yaml.

Determinism: each study asks for ``batch`` trials (a round), runs them (in any order, on any executor),
then tells itself their outcomes in trial order and asks its next round; the pruner of a trial sees only
the study's trials of earlier rounds. So the sampled values and pruning decisions depend on the seed and
the batch size, never on how many processes or nodes ran the trials, nor on the other studies (whose rounds
run beside it without waiting for each other). Every finished trial is kept as
``trials/trialNNN.json`` (validation metrics only); a resumed study replays those (checking that the
sampler proposes the same values) and runs only what is missing.
"""
import hashlib
import json
import math
import os
from dataclasses import dataclass, field

import yaml

from recbole_psrq.benchmark.executor import LocalExecutor, Task, earlier_seconds
from recbole_psrq.benchmark.runner import shown_arg, shown_path
from recbole_psrq.errors import ConfigError
from recbole_psrq.io import atomic_open

FROZEN_NAME = "tuned.yaml"
# where files live, not what is computed: left out of the frozen summary (it names no machine's folders)
_WHERE_KEYS = {"sid_cache_dir", "data_path", "checkpoint_dir"}
PRUNER = {"n_startup_trials": 2, "n_warmup_steps": 2}
# a resumed study may run on another machine, whose NumPy can round the sampler's arithmetic differently in
# the last bits (seen: learning_rate 0.00010237669925750045 recorded, ...0063 proposed on the next machine);
# values this close are the same trial, anything further apart means the settings changed
SAME_VALUE_REL_TOL = 1e-9


@dataclass
class TuneJob:
    """One experiment to tune: ``overrides`` are its fixed settings (budget, seed, the experiment's own
    keys); ``space`` the keys the tuner may change."""
    name: str
    model: str
    dataset: str
    space: object
    trials: int
    folder: str
    overrides: dict = field(default_factory=dict)
    config_files: tuple = ()
    seed: int = 0
    batch: int = 2
    base_config: dict = field(default_factory=dict)  # the merged yaml settings, for dotted keys
    direction: str = "maximize"
    valid_metric: str = "auc"


def job_folder(root, model, space, trials, seed, batch, overrides):
    """A study's folder: a new space, budget, seed, batch or fixed setting gives a new study."""
    key = json.dumps({"space": space.to_dict(), "trials": trials, "seed": seed, "batch": batch,
                      "overrides": {k: str(v) for k, v in sorted(overrides.items())}}, sort_keys=True)
    return os.path.join(root, f"{model}-{hashlib.sha256(key.encode()).hexdigest()[:10]}")


class _Study:
    def __init__(self, job):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.job = job
        startup = max(1, min(4, job.trials // 2))
        sampler = optuna.samplers.TPESampler(seed=job.seed, n_startup_trials=startup)
        self.study = optuna.create_study(direction=job.direction, sampler=sampler)
        self.distributions = job.space.distributions()
        self.records = {}
        self.asked = 0
        self.round, self.outcomes = [], {}  # the round asked and its trials' records so far
        # a finite space no larger than the budget is searched exhaustively: every combination once
        self.grid = job.space.grid()
        self.budget = job.trials
        if self.grid is not None and len(self.grid) <= job.trials:
            for combination in self.grid:
                self.study.enqueue_trial(combination)
            self.budget = len(self.grid)
        else:
            self.grid = None

    def remaining(self):
        return self.budget - self.asked

    def trial_path(self, number):
        return os.path.join(self.job.folder, "trials", f"trial{number:03d}.json")

    def history(self):
        return [{"curve": r["valid_curve"], "value": r["best_valid_score"]}
                for r in self.records.values() if r["state"] == "complete"]

    def ask_round(self):
        """Ask for this round's trials; returns [(optuna trial, values, recorded or None)]."""
        asked = []
        for _ in range(min(self.job.batch, self.remaining())):
            trial = self.study.ask(self.distributions) if self.distributions else self.study.ask()
            self.asked += 1
            values = self.job.space.values(trial.params)
            recorded = None
            path = self.trial_path(trial.number)
            if os.path.isfile(path):
                with open(path) as f:
                    recorded = json.load(f)
                if not same_values(recorded["params"], values):
                    raise ConfigError(
                        f"{path} was recorded with {recorded['params']}, but the seeded sampler now proposes "
                        f"{values} for trial {trial.number}: the study's settings changed under the same "
                        "folder. Delete the folder to start the study again.")
            asked.append((trial, values, recorded))
        return asked

    def spec(self, values):
        from recbole_psrq.tune.space import apply_values

        job = self.job
        return {"model": job.model, "dataset": job.dataset, "config_files": list(job.config_files),
                "overrides": {**job.overrides, **apply_values(values, job.base_config)},
                "direction": job.direction, "pruner": PRUNER, "history": self.history()}

    def tell(self, trial, record):
        from optuna.trial import TrialState

        self.records[trial.number] = record
        if record["state"] == "failed":
            self.study.tell(trial, state=TrialState.FAIL)
            return
        for epoch, score in record["valid_curve"]:
            trial.report(score, epoch)
        if record["state"] == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, record["best_valid_score"])

    def tell_round(self):
        """Tell the round's outcomes in trial order (independent of the order they finished in)."""
        for trial, _, recorded in self.round:
            self.tell(trial, recorded or self.outcomes[trial.number])

    def best(self):
        complete = [r for r in self.records.values() if r["state"] == "complete"]
        if not complete:
            return None
        sign = 1 if self.job.direction == "maximize" else -1
        return max(complete, key=lambda r: (sign * r["best_valid_score"], -r["number"]))


def tune(jobs, executor=None, log=print):
    """Run every job's study to its budget, each study's next round as soon as its own round has finished
    (so an executor with several processes or nodes is kept busy), and freeze each best trial. Returns
    {job name: frozen yaml path} (None for a job whose every trial failed)."""
    executor = executor or LocalExecutor(1)
    studies = [_Study(job) for job in jobs]
    for st in studies:
        os.makedirs(os.path.join(st.job.folder, "trials"), exist_ok=True)
        _write_json(os.path.join(st.job.folder, "space.json"),
                    {"space": st.job.space.to_dict(), "sources": [shown_path(s) for s in st.job.space.sources],
                     "hash": st.job.space.hash(), "trials": st.job.trials, "seed": st.job.seed,
                     "batch": st.job.batch, "overrides": _shown_overrides(st.job.overrides)})
    owners = {}  # task -> (study, trial, values, spec)

    def next_round(st):
        """The tasks of the study's next round that are not recorded yet (a resumed study's recorded
        rounds are told at once)."""
        while st.remaining():
            st.round, st.outcomes = st.ask_round(), {}
            tasks = []
            for trial, values, recorded in st.round:
                if recorded is None:
                    spec = st.spec(values)
                    # a trial killed with the driver continues from its last validation when rerun
                    spec["overrides"]["resume_file"] = "resume.pth"
                    task = Task(key=f"{st.job.name} trial {trial.number}",
                                argv=("-m", "recbole_psrq.tune.trial", "--spec", json.dumps(spec)),
                                workdir=os.path.join(st.job.folder, "work", f"trial{trial.number:03d}"))
                    owners[task] = (st, trial, values, spec)
                    tasks.append(task)
            if tasks:
                return tasks
            st.tell_round()
        return []

    def finished(task, outcome):
        st, trial, values, spec = owners.pop(task)
        record = _trial_record(trial.number, values, spec, task, outcome)
        with atomic_open(st.trial_path(trial.number), "w") as f:  # the driver alone writes records
            json.dump(record, f, indent=2)
        st.outcomes[trial.number] = record
        log(_describe(st.job, record))
        if any(recorded is None and t.number not in st.outcomes for t, _, recorded in st.round):
            return None  # the round's other trials still run
        st.tell_round()
        return next_round(st)

    for _ in executor.map([task for st in studies for task in next_round(st)], more=finished):
        pass
    return {st.job.name: freeze(st) for st in studies}


def same_values(recorded, proposed):
    """Whether a recorded trial's values are the ones proposed now: equal, floats within
    ``SAME_VALUE_REL_TOL`` (a machine's rounding, not a new setting)."""
    if isinstance(recorded, float) or isinstance(proposed, float):
        return (isinstance(recorded, (int, float)) and isinstance(proposed, (int, float))
                and not isinstance(recorded, bool) and not isinstance(proposed, bool)
                and math.isclose(recorded, proposed, rel_tol=SAME_VALUE_REL_TOL, abs_tol=0.0))
    if isinstance(recorded, dict) and isinstance(proposed, dict):
        return recorded.keys() == proposed.keys() and all(same_values(recorded[k], proposed[k]) for k in recorded)
    if isinstance(recorded, (list, tuple)) and isinstance(proposed, (list, tuple)):
        return len(recorded) == len(proposed) and all(map(same_values, recorded, proposed))
    return recorded == proposed


def _shown_overrides(overrides):
    """Override values as strings, absolute paths relative to the repository: a committed trial record or
    space.json names no machine's folders."""
    return {k: shown_arg(str(v)) for k, v in overrides.items()}


def _trial_record(number, values, spec, task, outcome):
    record = {"number": number, "params": values, "state": "failed", "valid_curve": [],
              "best_valid_score": None, "best_valid_result": None, "wall_seconds": outcome["wall"],
              "overrides": _shown_overrides(spec["overrides"])}
    if outcome["ok"]:
        result = outcome["result"]
        record.update({k: result[k] for k in ("state", "valid_curve", "best_valid_score",
                                              "best_valid_result", "valid_metric")})
        record["resumed"] = result.get("resumed")
        record["wall_seconds"] += earlier_seconds(result)
        record["log_file"] = (shown_path(os.path.join(task.workdir, result["log_file"]))
                              if result.get("log_file") else None)
    else:
        record["error"] = outcome["tail"]
    return record


def _describe(job, record):
    if record["state"] == "failed":
        return f"trial  {job.name} #{record['number']} FAILED:\n{record.get('error', '')}"
    values = ", ".join(f"{k}={_short(v)}" for k, v in record["params"].items())
    epochs = len(record["valid_curve"])
    return (f"trial  {job.name} #{record['number']} {record['state']} after {epochs} validation(s): best "
            f"{record['valid_metric']} {record['best_valid_score']:.4f} ({values}) in {record['wall_seconds']:.0f}s")


def _short(value):
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def freeze(st):
    """Write the best trial's settings as ``tuned.yaml`` (usable as ``--config_files``), with the space's
    hash, the budget and the best validation score under the ``tuning`` key. Returns its path."""
    from recbole_psrq.tune.space import apply_values

    job, best = st.job, st.best()
    if best is None:
        return None
    settings = apply_values(best["params"], job.base_config)
    pruned = sum(r["state"] == "pruned" for r in st.records.values())
    failed = sum(r["state"] == "failed" for r in st.records.values())
    frozen = {**settings, "tuning": {
        "experiment": job.name, "model": job.model, "dataset": job.dataset,
        "chosen": best["params"], "best_trial": best["number"],
        "best_valid": {"metric": best["valid_metric"], "score": best["best_valid_score"]},
        "trials": st.budget, "pruned": pruned, "failed": failed, "seed": job.seed, "batch": job.batch,
        "space_hash": job.space.hash(), "space": job.space.describe(),
        "sampler": (f"grid: all {len(st.grid)} combinations of the finite space" if st.grid else
                    "optuna TPESampler(seed, n_startup_trials=min(4, trials // 2))")
                   + f"; MedianPruner({PRUNER['n_startup_trials']} finished trials, {PRUNER['n_warmup_steps']} "
                   "warm-up epochs), on validation only",
        "fixed": {k: str(v) for k, v in job.overrides.items() if k not in _WHERE_KEYS}}}
    path = os.path.join(job.folder, FROZEN_NAME)
    with atomic_open(path, "w") as f:
        f.write(f"# Frozen by the tuner: trial {best['number']} of {st.budget} for {job.name} "
                f"(validation only). Use with --config_files.\n")
        yaml.safe_dump(_plain_yaml(frozen), f, sort_keys=False)
    return path


def _plain_yaml(value):
    if isinstance(value, dict):
        return {str(k): _plain_yaml(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_yaml(v) for v in value]
    return value


def _write_json(path, data):
    with atomic_open(path, "w") as f:
        json.dump(data, f, indent=2)


def read_frozen(path):
    """The ``tuning`` summary of a frozen yaml (for reports)."""
    with open(path) as f:
        return yaml.safe_load(f)["tuning"]


SMALLER_IS_BETTER = {"logloss", "mae", "rmse"}


def make_job(name, model, dataset, trials, root, overrides=None, config_files=(), seed=0, batch=2,
             space_file=None):
    """A :class:`TuneJob` for ``model``: its space (``space_file``, else ``properties/hyper``), minus every
    key ``overrides`` fixes; the study folder under ``root``."""
    from recbole_psrq import quick_start
    from recbole_psrq.tune.space import default_space, read_space

    if int(trials) < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}.")
    overrides = {**(overrides or {}), "seed": seed}
    overrides.setdefault("sid_seed", seed)
    model_class = quick_start.resolve_model(model)
    protocol = overrides.get("protocol") or quick_start.default_protocol(model_class)
    files = quick_start.config_file_list(model, dataset, protocol, config_files)
    base = {**quick_start._merged_yaml(files), **_parsed(overrides)}
    if space_file:
        space = read_space(space_file)
    else:
        space = default_space(model, bool(base.get("sid_modalities")), base.get("sid_quantizer", "psrq"))
    space = space.without(overrides)
    if not len(space):
        raise ConfigError(f"The search space of {name} is empty (every key is fixed by its settings); "
                          "nothing to tune.")
    metric = str(base.get("valid_metric", "AUC")).lower()
    folder = job_folder(root, model, space, int(trials), seed, int(batch), overrides)
    return TuneJob(name=name, model=model, dataset=dataset, space=space, trials=int(trials), folder=folder,
                   overrides=overrides, config_files=tuple(config_files), seed=seed, batch=int(batch),
                   base_config=base, valid_metric=metric,
                   direction="minimize" if metric.split("@")[0] in SMALLER_IS_BETTER else "maximize")


def _parsed(overrides):
    """Command-line override strings as the values RecBole will see (dicts for dotted-key merging)."""
    parsed = {}
    for key, value in overrides.items():
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                pass
        parsed[key] = value
    return parsed
