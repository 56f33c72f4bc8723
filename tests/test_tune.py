"""Validation-only tuning (recbole_psrq.tune): search-space files, the trial that never touches the test
split, pruning, seeded studies that resume and freeze a configuration that reproduces its trial."""
import json
import math
import os

import pytest
import yaml

from recbole_psrq.benchmark.executor import LocalExecutor
from recbole_psrq.errors import ConfigError
from recbole_psrq.tune import space as space_mod
from recbole_psrq.tune.space import Space, apply_values, parse_entry, read_space
from tests.conftest import one_epoch


def test_project_space_files_parse_every_kind(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("learning_rate: loguniform(1e-4, 1e-2)\ndropout_prob: uniform(0.0, 0.3)\n"
                    "n_layers: int(1, 3)\nreg: quniform(0, 1, 0.25)\nmlp_hidden_size: choice([[256, 128], [64]])\n"
                    "sid_quantizer_options.prefix_weight: choice([0.5, auto])\n")
    space = read_space(str(path))
    assert space.describe() == {"learning_rate": "loguniform(0.0001, 0.01)", "dropout_prob": "uniform(0, 0.3)",
                                "n_layers": "int(1, 3)", "reg": "quniform(0, 1, 0.25)",
                                "mlp_hidden_size": "choice([[256, 128], [64]])",
                                "sid_quantizer_options.prefix_weight": 'choice([0.5, "auto"])'}
    dist = space.distributions()
    assert dist["learning_rate"].log and dist["learning_rate"].low == 1e-4
    assert not dist["dropout_prob"].log and dist["reg"].step == 0.25
    n_layers = dist["n_layers"]
    assert type(n_layers).__name__ == "IntDistribution" and (n_layers.low, n_layers.high) == (1, 3)
    # a list choice goes to Optuna as text and comes back as the list
    assert space.values({**{k: None for k in space.params}, "mlp_hidden_size": "[64]", "learning_rate": 0.001,
                         "dropout_prob": 0.1, "n_layers": 2, "reg": 0.5,
                         "sid_quantizer_options.prefix_weight": '"auto"'})["mlp_hidden_size"] == [64]


def test_recbole_hyper_files_keep_recboles_meaning(tmp_path):
    path = tmp_path / "model.hyper"
    path.write_text("# RecBole's run_hyper.py format\nlearning_rate loguniform -8,0\n"
                    "embedding_size choice [64,96]\nreg_weight quniform 0,1,0.1\n")
    space = read_space(str(path))
    lr = space.params["learning_rate"]
    assert lr.kind == "loguniform" and math.isclose(lr.low, math.exp(-8)) and lr.high == 1.0
    assert space.params["embedding_size"].values == [64, 96]
    assert space.params["reg_weight"].step == 0.1


def test_recbole_hyper_files_read_every_kind_with_spaces_inside_a_choice(tmp_path):
    path = tmp_path / "model.hyper"
    path.write_text("mlp_hidden_size choice [[256, 128], [64]]\ndropout_prob uniform 0.0,0.5\n"
                    "reg_weight quniform 0,1,0.1\nlearning_rate loguniform -8,0\n")
    space = read_space(str(path))
    assert space.describe() == {"mlp_hidden_size": "choice([[256, 128], [64]])",
                                "dropout_prob": "uniform(0, 0.5)", "reg_weight": "quniform(0, 1, 0.1)",
                                "learning_rate": "loguniform(0.000335463, 1)"}  # e^-8 .. e^0
    assert space.sources == [str(path)]


@pytest.mark.parametrize("line, needle", [
    ("learning_rate", "expected 'key type args' (e.g. 'learning_rate loguniform -8,0'), got 'learning_rate'."),
    ("embedding_size choice [64, 96", "choice for 'embedding_size' needs a Python list, got '[64, 96'."),
    ("dropout_prob normal 0,1", "unsupported 'normal 0,1' for 'dropout_prob'; RecBole hyper files use choice "
                                "[..], uniform a,b, quniform a,b,q or loguniform a,b (natural-log bounds)."),
    ("dropout_prob uniform 0,0.5,0.1", "unsupported 'uniform 0,0.5,0.1' for 'dropout_prob'"),
    ("reg_weight quniform 0,1", "unsupported 'quniform 0,1' for 'reg_weight'"),
    ("learning_rate loguniform -8,0,1", "unsupported 'loguniform -8,0,1' for 'learning_rate'"),
    ("dropout_prob uniform a,0.5", "'a' is not a number."),
    ("dropout_prob uniform 0.5,0.1", "the lower bound must be below the upper bound, got 0.5 and 0.1."),
    ("reg_weight quniform 1,0,0.1", "the lower bound must be below the upper bound, got 1 and 0."),
    ("learning_rate loguniform 0,-1", "the lower bound must be below the upper bound, got 1.0 and "),
])
def test_bad_recbole_hyper_lines_name_the_file_and_line(tmp_path, line, needle):
    path = tmp_path / "model.hyper"
    path.write_text(f"# a comment, a blank line, an indented comment\n\n  # {line}\n{line}\n")
    with pytest.raises(ConfigError) as error:
        read_space(str(path))
    assert str(error.value).startswith(f"{path}, line 4: ") and needle in str(error.value)


@pytest.mark.parametrize("text, needle", [
    ("learning_rate: loguniform(0, 1e-2)", "bounds > 0"),
    ("learning_rate: uniform(0.5, 0.1)", "lower bound must be below"),
    ("dropout_prob: uniform(0.3, 0.3)", "lower bound must be below the upper bound, got 0.3 and 0.3."),
    ("n: int(1.5, 3)", "whole numbers"),
    ("n: choice([])", "non-empty list"),
    ("n: normal(0, 1)", "'n: normal(0, 1)' is not a distribution; write one of loguniform(low, high), "
                        "uniform(low, high), quniform(low, high, step), int(low, high), choice([a, b, ...])."),
    ("reg: quniform(0, 1)", "quniform for 'reg' takes 3 numbers, got '0, 1'."),
    ("n: uniform(a, 1)", "'a' is not a number"),
])
def test_bad_space_entries_name_the_file_and_key(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as error:
        read_space(str(path))
    assert needle in str(error.value) and str(path) in str(error.value)
    assert f"key '{text.split(':')[0]}'" in str(error.value)


@pytest.mark.parametrize("text, needle", [
    ("learning_rate: [0.001", "is not valid yaml: "),
    ("- learning_rate\n", ": a search space maps config keys to distributions."),
])
def test_a_space_file_that_is_no_mapping_is_named(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        read_space(str(path))
    assert str(error.value).startswith(f"{path}") and needle in str(error.value)


def test_keys_an_experiment_fixes_leave_the_space():
    space = Space([parse_entry("sid_levels", "choice([2, 3])", "x"), parse_entry("learning_rate",
                  "loguniform(1e-4, 1e-2)", "x"), parse_entry("sid_quantizer_options.prefix_weight",
                                                              "choice([1.0, auto])", "x")])
    assert list(space.without({"sid_levels": 1, "seed": 0}).params) == ["learning_rate",
                                                                        "sid_quantizer_options.prefix_weight"]
    # fixing the whole dict setting fixes the keys inside it
    assert list(space.without({"sid_quantizer_options": "{}"}).params) == ["sid_levels", "learning_rate"]
    assert space.without({"sid_levels": 1}).hash() != space.hash()
    named = Space(list(space.params.values()), ["a.yaml", "sid.yaml"])
    assert named.without({"sid_levels": 1}).sources == ["a.yaml", "sid.yaml"]


def test_space_hashes_are_stable_across_commits():
    # a tuning study resumes only under its space's hash, and the MPD study's frozen configurations and
    # report name these two: how a space is hashed must not change
    assert read_space(os.path.join(space_mod.HYPER_DIR, "DIN.yaml")).hash() == "ed97ab4950f3"
    assert read_space(os.path.join(space_mod.HYPER_DIR, "topk_lr.yaml")).hash() == "0ebd9f07e2a7"


def test_a_missing_space_file_is_named_and_yml_is_yaml(tmp_path):
    with pytest.raises(ConfigError, match=rf"^Search space file not found: {tmp_path}/none\.yaml\.$"):
        read_space(str(tmp_path / "none.yaml"))
    path = tmp_path / "s.yml"
    path.write_text("learning_rate: choice([0.001, 0.003])\n")
    assert read_space(str(path)).describe() == {"learning_rate": "choice([0.001, 0.003])"}


def test_dotted_keys_update_the_dict_setting_and_keep_its_other_entries():
    overrides = apply_values({"sid_quantizer_options.prefix_weight": "auto", "learning_rate": 0.01},
                             {"sid_quantizer_options": {"niter": 30}})
    assert overrides == {"sid_quantizer_options": {"niter": 30, "prefix_weight": "auto"}, "learning_rate": 0.01}
    # two keys inside one dict setting: both updates stay
    both = apply_values({"sid_quantizer_options.prefix_weight": 2.0, "sid_quantizer_options.niter": 10},
                        {"sid_quantizer_options": {"niter": 30, "seed": 1}})
    assert both == {"sid_quantizer_options": {"niter": 10, "prefix_weight": 2.0, "seed": 1}}


def test_the_default_spaces_add_sid_settings_only_with_sids_and_prefix_weight_only_for_psrq():
    hyper = os.path.join(space_mod.HYPER_DIR, "{}.yaml").format
    plain = space_mod.default_space("DIN", uses_sids=False, quantizer="psrq")
    assert plain.describe() == read_space(hyper("DIN")).describe()  # the model's own file
    assert "mlp_hidden_size" in plain.params and not any(k.startswith("sid_") for k in plain.params)
    with_psrq = space_mod.default_space("MCCA", uses_sids=True, quantizer="psrq")
    assert {"sid_codebook_size", "sid_levels", "sid_quantizer_options.prefix_weight"} <= set(with_psrq.params)
    assert with_psrq.sources == [hyper("MCCA"), hyper("sid")]
    with_pq = space_mod.default_space("DIN", uses_sids=True, quantizer="pq")
    assert "sid_codebook_size" in with_pq.params and "sid_quantizer_options.prefix_weight" not in with_pq.params
    # a model without a file of its own gets the default space
    assert set(space_mod.default_space("FM", False, "psrq").params) == {"learning_rate", "weight_decay"}


def test_the_median_pruner_stops_a_clearly_worse_trial_only_after_the_warm_up():
    from recbole_psrq.tune.trial import pruning_rule

    history = [{"curve": [[0, 0.70], [1, 0.72], [2, 0.73], [3, 0.74]], "value": 0.74},
               {"curve": [[0, 0.69], [1, 0.71], [2, 0.72], [3, 0.73]], "value": 0.73}]
    spec = {"direction": "maximize", "history": history,
            "pruner": {"n_startup_trials": 2, "n_warmup_steps": 2}}
    stop = pruning_rule(spec)
    assert [stop(e, 0.55) for e in range(4)] == [False, False, True, True]  # warm-up: epochs 0 and 1
    good = pruning_rule(spec)
    assert not any(good(e, s) for e, s in [(0, 0.71), (1, 0.73), (2, 0.74), (3, 0.75)])
    # minimising: a high LogLoss is the bad one
    low = pruning_rule({**spec, "direction": "minimize",
                        "history": [{"curve": [[e, 0.5] for e in range(4)], "value": 0.5}] * 2})
    assert [low(e, 0.9) for e in range(4)] == [False, False, True, True]
    assert pruning_rule({**spec, "history": []}) is None  # nothing finished yet: nothing to compare with


@pytest.mark.slow
def test_a_trial_never_builds_the_test_dataloader_nor_reports_test_metrics(workdir, tiny_data_path,
                                                                           monkeypatch):
    from recbole.data.dataloader.abstract_dataloader import AbstractDataLoader
    from recbole.data.dataset import Dataset
    from recbole.trainer import Trainer

    import recbole_psrq.evaluation  # noqa: F401 -- its patches of build/evaluate go under the spies, or
    # they would be installed on top of them here and undone with them (then lost for later tests)
    from recbole_psrq.tune.trial import train_and_validate

    splits, wrapped, evaluated = [], [], []
    build, init, evaluate = Dataset.build, AbstractDataLoader.__init__, Trainer.evaluate

    def spy_build(self):
        built = build(self)
        splits.append(built)
        return built

    def spy_init(self, config, dataset, *args, **kwargs):
        wrapped.append(dataset)
        return init(self, config, dataset, *args, **kwargs)

    def spy_evaluate(self, eval_data, *args, **kwargs):
        evaluated.append(eval_data._dataset)
        return evaluate(self, eval_data, *args, **kwargs)

    monkeypatch.setattr(Dataset, "build", spy_build)
    monkeypatch.setattr(AbstractDataLoader, "__init__", spy_init)
    monkeypatch.setattr(Trainer, "evaluate", spy_evaluate)
    record = train_and_validate("DIN", overrides=one_epoch(tiny_data_path, epochs=2))
    (train, valid, test), = splits
    assert len(test) > 0 and evaluated and all(d is valid for d in evaluated)
    assert not any(d is test for d in wrapped)  # the test rows are never put in a dataloader
    assert any(d is train for d in wrapped) and any(d is valid for d in wrapped)
    assert record["state"] == "complete" and [e for e, _ in record["valid_curve"]] == [0, 1]
    assert "test_result" not in record and record["best_valid_score"] == max(s for _, s in record["valid_curve"])
    assert record["best_valid_result"]["auc"] == record["best_valid_score"]


class CountingExecutor(LocalExecutor):
    def __init__(self):
        super().__init__(1)
        self.ran = []

    def map(self, tasks, more=None):
        tasks = list(tasks)
        self.ran += [t.key for t in tasks]

        def counted(task, outcome):
            further = list(more(task, outcome) or ())
            self.ran += [t.key for t in further]
            return further

        return super().map(tasks, counted)


@pytest.mark.slow
def test_a_study_freezes_a_configuration_that_reproduces_its_trials_validation_score(workdir, tiny_data_path):
    from recbole_psrq.tune.study import make_job, read_frozen, tune
    from recbole_psrq.tune.trial import train_and_validate

    # the trials run in subprocesses and the check below in this process: one thread in both, as every
    # study pins (the validation AUC differs in the 4th decimal between 1 thread and 2)
    overrides = {**one_epoch(tiny_data_path, epochs=2, eval_step=1), "sid_cache_dir": str(workdir / "sid"),
                 "torch_threads": 1}
    job = make_job("DIN", "DIN", "synthetic_music", 3, str(workdir / "tuning"), overrides, seed=3)
    executor = CountingExecutor()
    frozen = tune([job], executor)["DIN"]
    assert len(executor.ran) == 3
    records = [json.load(open(os.path.join(job.folder, "trials", f"trial{n:03d}.json"))) for n in range(3)]
    assert all("test_result" not in r and r["state"] == "complete" for r in records)
    assert len({json.dumps(r["params"], sort_keys=True) for r in records}) == 3  # the sampler explores
    info = read_frozen(frozen)
    best = max(records, key=lambda r: (r["best_valid_score"], -r["number"]))
    assert info["best_trial"] == best["number"] and info["best_valid"]["score"] == best["best_valid_score"]
    assert info["trials"] == 3 and info["space_hash"] == job.space.hash()
    space_sources = json.load(open(os.path.join(job.folder, "space.json")))["sources"]
    assert space_sources and not any(os.path.isabs(s) for s in space_sources)  # committed: no machine paths
    with open(frozen) as f:
        settings = yaml.safe_load(f)
    assert {k: settings[k] for k in best["params"]} == best["params"]

    # the frozen yaml, read as a config file with the study's fixed settings, gives the same validation
    again = train_and_validate("DIN", config_files=[frozen], overrides=job.overrides)
    assert again["valid_curve"] == best["valid_curve"]
    assert again["best_valid_score"] == best["best_valid_score"]

    # resuming replays the records (no trial reruns) and freezes the same configuration
    frozen_text = open(frozen).read()
    os.remove(os.path.join(job.folder, "trials", "trial002.json"))
    rerun = CountingExecutor()
    tune([make_job("DIN", "DIN", "synthetic_music", 3, str(workdir / "tuning"), overrides, seed=3)], rerun)
    assert rerun.ran == ["DIN trial 2"]
    assert json.load(open(os.path.join(job.folder, "trials", "trial002.json")))["params"] == records[2]["params"]
    assert open(frozen).read() == frozen_text

    # a record written on a machine that rounds the sampler's arithmetic differently in the last bits is the
    # same trial: replayed as recorded, nothing rerun
    path = os.path.join(job.folder, "trials", "trial000.json")
    rounded = {**records[0], "params": {**records[0]["params"],
                                        "learning_rate": records[0]["params"]["learning_rate"] * (1 + 4e-16)}}
    json.dump(rounded, open(path, "w"))
    again_rerun = CountingExecutor()
    tune([make_job("DIN", "DIN", "synthetic_music", 3, str(workdir / "tuning"), overrides, seed=3)], again_rerun)
    assert again_rerun.ran == []
    stored = [json.load(open(os.path.join(job.folder, "trials", f"trial{n:03d}.json"))) for n in range(3)]
    assert read_frozen(frozen)["chosen"] == stored[info["best_trial"]]["params"]  # the values it ran with

    # a record that no longer matches what the seeded sampler proposes is refused, not mixed in
    tampered = {**records[0], "params": {**records[0]["params"], "weight_decay": 0.5}}
    json.dump(tampered, open(path, "w"))
    with pytest.raises(ConfigError, match="proposes"):
        tune([make_job("DIN", "DIN", "synthetic_music", 3, str(workdir / "tuning"), overrides, seed=3)],
             CountingExecutor())


def test_a_replayed_trial_matches_its_record_up_to_a_machines_rounding_only():
    from recbole_psrq.tune.study import same_values

    recorded = {"learning_rate": 0.00010237669925750045, "mlp_hidden_size": [128, 64], "embedding_size": 64}
    assert same_values(recorded, {**recorded, "learning_rate": 0.00010237669925750063})  # seen across machines
    assert not same_values(recorded, {**recorded, "learning_rate": 0.000102377})
    assert not same_values(recorded, {**recorded, "mlp_hidden_size": [128]})
    assert not same_values(recorded, {**recorded, "embedding_size": 96})
    assert not same_values(recorded, {k: v for k, v in recorded.items() if k != "embedding_size"})
    assert not same_values({"flag": True}, {"flag": 1.0})
    assert same_values({"reg": 0.0}, {"reg": 0.0}) and not same_values({"reg": 0.0}, {"reg": 1e-300})


def test_trial_records_name_no_machine_folders():
    from recbole_psrq.quick_start import PROJECT_ROOT
    from recbole_psrq.tune.study import _shown_overrides

    shown = _shown_overrides({"data_path": os.path.join(os.path.dirname(PROJECT_ROOT), "elsewhere", "converted"),
                              "sid_cache_dir": os.path.join(PROJECT_ROOT, "results", "x", "sid_cache"),
                              "learning_rate": 0.001, "mlp_hidden_size": [64]})
    assert shown == {"data_path": os.path.join("..", "elsewhere", "converted"),
                     "sid_cache_dir": os.path.join("results", "x", "sid_cache"),
                     "learning_rate": "0.001", "mlp_hidden_size": "[64]"}


def test_an_empty_space_and_a_zero_budget_are_refused(tmp_path):
    from recbole_psrq.tune.study import make_job

    space = tmp_path / "lr.yaml"
    space.write_text("learning_rate: loguniform(1e-4, 1e-2)\n")
    with pytest.raises(ConfigError, match="empty"):
        make_job("DIN", "DIN", "synthetic_music", 2, str(tmp_path), {"learning_rate": 0.001},
                 space_file=str(space))
    with pytest.raises(ConfigError, match="at least 1"):
        make_job("DIN", "DIN", "synthetic_music", 0, str(tmp_path), {})


class ScriptedExecutor:
    """Runs no training: each trial's validation curve is a function of its values, and the outcomes of
    the tasks started together come back in reverse order (as a pool or a cluster may return them)."""

    def __init__(self, score, reverse=True):
        self.score, self.specs, self.reverse = score, [], reverse

    def map(self, tasks, more):
        started = list(tasks)
        while started:
            outcomes = [(task, self.outcome(task)) for task in started]
            started = []
            for task, outcome in reversed(outcomes) if self.reverse else outcomes:
                started += more(task, outcome) or []
                yield task, outcome

    def outcome(self, task):
        spec = json.loads(task.argv[task.argv.index("--spec") + 1])
        self.specs.append(spec)
        value = self.score(spec["overrides"])
        curve = [[0, value - 0.01], [1, value]]
        return {"ok": True, "wall": 0.0, "tail": "", "returncode": 0, "result": {
            "state": "complete", "valid_curve": curve, "best_valid_score": value,
            "best_valid_result": {"auc": value}, "valid_metric": "auc", "log_file": None}}


def _job(root, trials, space_text, name="DIN", batch=2):
    from recbole_psrq.tune.study import make_job

    os.makedirs(root, exist_ok=True)
    space = os.path.join(root, "space.yaml")
    with open(space, "w") as f:
        f.write(space_text)
    return make_job(name, "DIN", "synthetic_music", trials, os.path.join(root, "tuning"), {"epochs": 2},
                    seed=0, batch=batch, space_file=space)


def test_a_finite_space_within_the_budget_is_searched_exhaustively(tmp_path):
    from recbole_psrq.tune.study import read_frozen, tune

    executor = ScriptedExecutor(lambda o: 0.6 + o["learning_rate"] + (0.05 if o["dropout_prob"] == 0.1 else 0))
    job = _job(str(tmp_path), 8, "learning_rate: choice([0.001, 0.003])\ndropout_prob: choice([0.0, 0.1])\n")
    frozen = tune([job], executor, log=lambda m: None)["DIN"]
    tried = sorted((s["overrides"]["learning_rate"], s["overrides"]["dropout_prob"]) for s in executor.specs)
    assert tried == [(0.001, 0.0), (0.001, 0.1), (0.003, 0.0), (0.003, 0.1)]  # each once, budget 4 not 8
    # a trial killed with the driver continues from its state in its own working folder when rerun
    assert all(s["overrides"]["resume_file"] == "resume.pth" for s in executor.specs)
    info = read_frozen(frozen)
    assert info["chosen"] == {"learning_rate": 0.003, "dropout_prob": 0.1} and info["trials"] == 4
    assert info["sampler"].startswith("grid")


def test_sampled_values_do_not_depend_on_the_order_trials_finish_in(tmp_path):
    from recbole_psrq.tune.study import tune

    space = "learning_rate: loguniform(1e-4, 1e-2)\ndropout_prob: uniform(0.0, 0.3)\n"

    def values(root, reverse):
        executor = ScriptedExecutor(lambda o: 0.7 - abs(o["learning_rate"] - 0.003) - o["dropout_prob"] / 10,
                                    reverse)
        job = _job(root, 6, space)
        tune([job], executor, log=lambda m: None)
        return [json.load(open(os.path.join(job.folder, "trials", f"trial{n:03d}.json")))["params"]
                for n in range(6)]

    first = values(str(tmp_path / "a"), reverse=True)
    assert first == values(str(tmp_path / "b"), reverse=False)
    assert len({p["learning_rate"] for p in first}) == 6
    # the pruner history a trial gets holds only trials finished in earlier rounds
    executor = ScriptedExecutor(lambda o: 0.6)
    tune([_job(str(tmp_path / "c"), 6, space)], executor, log=lambda m: None)
    assert [len(s["history"]) for s in executor.specs] == [0, 0, 2, 2, 4, 4]


class SlowStudyExecutor(ScriptedExecutor):
    """A trial of the study named ``slow`` finishes only when no other trial is running."""

    def map(self, tasks, more):
        running = list(tasks)
        while running:
            task = next((t for t in running if not t.key.startswith("slow ")), running[0])
            running.remove(task)
            outcome = self.outcome(task)
            running += more(task, outcome) or []
            yield task, outcome


def test_a_slow_study_never_holds_back_the_rounds_of_another(tmp_path):
    from recbole_psrq.tune.study import read_frozen, tune

    space = "learning_rate: loguniform(1e-4, 1e-2)\ndropout_prob: uniform(0.0, 0.3)\n"

    def score(o):
        return 0.7 - abs(o["learning_rate"] - 0.003) - o["dropout_prob"] / 10

    def trials(job):
        return [json.load(open(os.path.join(job.folder, "trials", f"trial{n:03d}.json")))["params"]
                for n in range(6)]

    together = [_job(str(tmp_path / "together" / name), 6, space, name=name) for name in ("fast", "slow")]
    finished = []
    frozen = tune(together, SlowStudyExecutor(score), log=finished.append)
    # the fast study's next round starts when its own round ends: all its trials finish before a slow one
    assert [line.split()[1] for line in finished] == ["fast"] * 6 + ["slow"] * 6
    for job in together:  # and each study is the one it is when tuned alone
        alone = _job(str(tmp_path / "alone" / job.name), 6, space, name=job.name)
        alone_frozen = tune([alone], ScriptedExecutor(score), log=lambda m: None)
        assert trials(alone) == trials(job)
        assert read_frozen(alone_frozen[job.name]) == read_frozen(frozen[job.name])
