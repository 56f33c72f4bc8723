"""Run any model (ours first, then every RecBole built-in) on a dataset with the project's protocol.

Used by ``run_recbole_psrq.py``, the benchmark runner and the tests. Config layering, lowest priority
first (RecBole's own internal defaults sit below all of them):

    properties/overall.yaml
    properties/protocol/<protocol>.yaml      ctr (AUC/LogLoss, labeled) or topk (full-sort ranking)
    properties/dataset/<dataset>.yaml        when it exists
    properties/model/<Model>.yaml            when it exists (our models' hyper-parameters)
    --config_files a.yaml b.yaml             the user's files
    --key=value                              overrides
"""
import contextlib
import difflib
import importlib
import json
import logging
import os
import sys
import uuid
from logging import getLogger
from unittest import mock

import yaml

from recbole_psrq.errors import ConfigError, DataFormatError
from recbole_psrq.io import atomic_open

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROPERTIES_DIR = os.path.join(PROJECT_ROOT, "properties")
DEFAULT_DATASET = "synthetic_music"
DEFAULT_DATA_PATH = os.path.join(PROJECT_ROOT, "dataset")
PROTOCOLS = ("ctr", "topk")
# RecBole's DIN/DIEN are SEQUENTIAL by type but CTR models by task (BCE on labels, AUC/LogLoss).
_CTR_SEQUENTIAL_MODELS = {"DIN", "DIEN"}
_RECBOLE_MODEL_PACKAGES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
)


def our_models():
    """Models this project registers: name -> class."""
    from recbole_psrq.model import MODELS

    return dict(MODELS)


def recbole_models():
    """Every RecBole built-in model class: name -> class."""
    from recbole.model.abstract_recommender import AbstractRecommender

    import recbole_psrq.model  # noqa: F401  (imports recbole.model and resets anomaly detection)

    found = {}
    for package in _RECBOLE_MODEL_PACKAGES:
        module = importlib.import_module(f"recbole.model.{package}")
        for name, obj in vars(module).items():
            if isinstance(obj, type) and issubclass(obj, AbstractRecommender) and \
                    obj.__module__.startswith(f"recbole.model.{package}."):
                found[name] = obj
    return found


def available_models():
    return sorted(set(our_models()) | set(recbole_models()))


def resolve_model(name):
    """Return the model class for ``name``: ours first, then RecBole's built-ins."""
    ours = our_models()
    if name in ours:
        return ours[name]
    builtins = recbole_models()
    if name in builtins:
        return builtins[name]
    names = sorted(set(ours) | set(builtins))
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    lowered = [n for n in names if n.lower() == str(name).lower()]
    hint = f" Did you mean {', '.join(lowered or close)}?" if (lowered or close) else ""
    raise ConfigError(
        f"Unknown model '{name}'.{hint} Model names are case-sensitive. Available models: "
        f"ours: {', '.join(sorted(ours))}; RecBole built-ins: {', '.join(sorted(builtins))}."
    )


def default_protocol(model_class):
    """ctr for click-through-rate models (context-aware, DIN/DIEN, ours), topk for the rest."""
    from recbole.utils import ModelType

    explicit = getattr(model_class, "protocol", None)
    if explicit:
        return explicit
    if model_class.__name__ in _CTR_SEQUENTIAL_MODELS or model_class.type == ModelType.CONTEXT:
        return "ctr"
    return "topk"


def config_file_list(model_name, dataset, protocol, extra_files=()):
    files = [os.path.join(PROPERTIES_DIR, "overall.yaml"),
             os.path.join(PROPERTIES_DIR, "protocol", f"{protocol}.yaml")]
    for optional in (os.path.join(PROPERTIES_DIR, "dataset", f"{dataset}.yaml"),
                     os.path.join(PROPERTIES_DIR, "model", f"{model_name}.yaml")):
        if os.path.isfile(optional):
            files.append(optional)
    for path in extra_files:
        if not os.path.isfile(path):
            raise ConfigError(f"Config file not found: {path}. Pass existing yaml files to "
                              "--config_files, separated by spaces.")
        files.append(path)
    return files


def _merged_yaml(files):
    merged = {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            merged.update(yaml.safe_load(f) or {})
    return merged


def _resolve_data_path(files, overrides):
    """The folder that holds ``<dataset>/``: overrides, then the yaml files, then ``dataset/``.
    A relative path is taken from the current directory if it exists there, else from the project."""
    data_path = overrides.get("data_path") or _merged_yaml(files).get("data_path") or DEFAULT_DATA_PATH
    if not os.path.isabs(data_path) and not os.path.isdir(data_path):
        data_path = os.path.join(PROJECT_ROOT, data_path)
    return os.path.abspath(data_path)


def _loss_type(model_class, files, overrides):
    import recbole

    builtin_yaml = os.path.join(os.path.dirname(recbole.__file__), "properties", "model",
                                f"{model_class.__name__}.yaml")
    layered = [builtin_yaml] if os.path.isfile(builtin_yaml) else []
    return {**_merged_yaml(layered + files), **overrides}.get("loss_type")


def check_dataset_exists(dataset, data_path):
    folder = os.path.join(data_path, dataset)
    inter = os.path.join(folder, f"{dataset}.inter")
    if os.path.isfile(inter):
        return folder
    raise ConfigError(
        f"Dataset '{dataset}' not found: looked for {inter}. Create it first: the embedded default "
        f"is regenerated with `python -m recbole_psrq.convert synthetic --out {DEFAULT_DATA_PATH}`; "
        "real music data is converted with `python -m recbole_psrq.convert <format> --src <your download> "
        "--out converted/<name>`, then "
        "`--config_files=converted/<name>/<name>.yaml`. Or point --data_path at the folder that contains "
        f"'{dataset}/{dataset}.inter'."
    )


@contextlib.contextmanager
def _isolated_argv():
    # RecBole's Config parses --key=value from sys.argv by itself; overrides are passed explicitly,
    # so hide the caller's argv (pytest's, the benchmark's) from it.
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def build_config(model, dataset=None, config_files=(), overrides=None):
    """Resolve the model and dataset, layer the yaml files, and return a RecBole ``Config``."""
    from recbole.config import Config

    overrides = dict(overrides or {})
    if dataset is None:  # a converter's <name>.yaml names its dataset
        named = _merged_yaml([p for p in config_files if os.path.isfile(p)]).get("dataset")
        dataset = overrides.pop("dataset", None) or named or DEFAULT_DATASET
    model_class = resolve_model(model)
    protocol = overrides.pop("protocol", None) or default_protocol(model_class)
    if protocol not in PROTOCOLS:
        raise ConfigError(f"Unknown protocol '{protocol}'; use one of {', '.join(PROTOCOLS)}.")
    files = config_file_list(model, dataset, protocol, config_files)
    overrides["data_path"] = _resolve_data_path(files, overrides)
    check_dataset_exists(dataset, overrides["data_path"])
    if _loss_type(model_class, files, overrides) == "CE":
        # a CE model needs train_neg_sample_args None (RecBole refuses sampled negatives for it)
        overrides.setdefault("train_neg_sample_args", None)
    with _isolated_argv():
        config = Config(model=model_class, dataset=dataset, config_file_list=files,
                        config_dict=overrides)
    config["protocol"] = protocol
    return config


def validate_inputs(config):
    """Fail early, with file/line/fix, on malformed atomic files (see recbole_psrq.data.atomic)."""
    from recbole_psrq.data.atomic import validate_dataset_folder

    labeled = "labeled" in config["eval_args"]["mode"].values()
    return validate_dataset_folder(
        config["data_path"], config["dataset"], config["field_separator"],
        config["seq_separator"], config["encoding"],
        label_field=config["LABEL_FIELD"] if labeled else None,
    )


def create_dataset(config):
    """Validate the input files, then build the dataset (with the SID hook, see data/dataset.py)."""
    from recbole_psrq.data.dataset import create_dataset as sid_create_dataset

    validate_inputs(config)
    return sid_create_dataset(config)


def new_run_id():
    """Names one run's log, result JSON and checkpoint: the time to the second (as RecBole), the process
    id and a random part, so that runs started in the same second never share a file."""
    from recbole.utils import get_local_time

    return f"{get_local_time()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _make_run_dirs(config):
    # RecBole makes ./log/<model> (init_logger) and checkpoint_dir (the trainer) with "if not exists:
    # makedirs": runs started together in one folder (a study's --jobs, DDP ranks) race there and one
    # dies of FileExistsError. Made first, idempotently, the race is gone.
    for path in (os.path.join("log", config["model"]), config["checkpoint_dir"]):
        os.makedirs(path, exist_ok=True)


def _init_logger(config, run_id):
    import recbole.utils.logger as recbole_logger

    _make_run_dirs(config)
    # RecBole's init_logger uses logging.basicConfig, which is a no-op once the root logger has
    # handlers: drop ours from a previous run so each run logs to its own file.
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    # it names the log <model>-<dataset>-<time to the second>-<config hash>.log (also the tensorboard
    # folder): the run id replaces the time, so equal settings started together get separate logs
    with mock.patch.object(recbole_logger, "get_local_time", lambda: run_id):
        recbole_logger.init_logger(config)
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler):
            return handler.baseFilename
    return None


def run(model, dataset=None, config_files=(), overrides=None, saved=True, distributed=None):
    """Train ``model`` on ``dataset``, select on validation, evaluate on test.

    Returns a dict with ``test_result``, ``best_valid_result``, ``best_valid_score``, ``checkpoint``,
    ``log_file``, ``run_id``, ``seeds``, ``protocol_checks`` (the test rows' count and digest and the
    protocol checks, see data/dataset.py) and ``result_file`` (the JSON written next to the log).

    ``distributed``: None (one process) or, inside one process of a DDP group started by
    :func:`recbole_psrq.distributed.launch`, ``{nproc, world_size, ip, port, group_offset, local_rank}``
    (see recbole_psrq/distributed.py). Then only rank 0 logs to a file and writes the checkpoint and the
    JSON; the test metrics are computed once, on rank 0, over every test row.
    """
    from recbole.data import data_preparation
    from recbole.utils import get_trainer, init_seed

    config = build_config(model, dataset, config_files, overrides)
    if distributed is not None and config["resume_file"]:
        raise ConfigError("resume_file is not supported in distributed (DDP) runs: each process would need "
                          "its own state. Leave resume_file unset with --nproc.")
    with torch_settings(config):
        ddp = None
        if distributed is not None:
            from recbole_psrq.distributed import Context

            ddp = Context(distributed).setup(config)
        try:
            return _run(config, saved, ddp, data_preparation, get_trainer, init_seed)
        finally:
            if ddp is not None:
                ddp.teardown()


def _run(config, saved, ddp, data_preparation, get_trainer, init_seed):
    main = ddp is None or ddp.is_main
    init_seed(config["seed"], config["reproducibility"])
    run_id = new_run_id() if ddp is None else ddp.broadcast(new_run_id())
    if main:
        log_file = _init_logger(config, run_id)
    else:
        log_file = None
        _make_run_dirs(config)
        ddp.quiet_logging()
    logger = getLogger()
    logger.info(config)

    data = create_dataset(config) if ddp is None else ddp.build_dataset(lambda: create_dataset(config))
    logger.info(data)
    train_data, valid_data, test_data = data_preparation(config, data)
    _require_protocol_report(config, data)
    if ddp is not None and hasattr(getattr(train_data, "sampler", None), "seed"):
        train_data.sampler.seed = int(config["seed"])  # RecBole leaves its DistributedSampler at seed 0

    # as RecBole, a seed per process (the global rank: processes of different machines differ too)
    init_seed(config["seed"] + (ddp.rank if ddp is not None else config["local_rank"]),
              config["reproducibility"])
    model_obj = resolve_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(model_obj)
    trainer_class = get_trainer(config["MODEL_TYPE"], config["model"])
    if ddp is None:
        trainer = trainer_class(config, model_obj)
    else:
        from recbole_psrq.distributed import distributed_trainer

        trainer = distributed_trainer(trainer_class, config, model_obj, ddp)
    # RecBole names it <model>-<time to the second>.pth: runs started together would share it
    trainer.saved_model_file = os.path.join(config["checkpoint_dir"], f"{config['model']}-{run_id}.pth")
    best_valid_score, best_valid_result = _fit(config, trainer, train_data, valid_data, saved)
    saved_ok = not saved or (os.path.isfile(trainer.saved_model_file) if main else None)
    in_sync = None
    if ddp is not None:
        in_sync = ddp.weights_in_sync(trainer.model)
        if not in_sync:
            logger.warning("DDP: the ranks' weights differ after training (the gradients were not averaged "
                           "exactly); the checkpoint and the test metrics are rank 0's.")
        saved_ok = ddp.all_ok(saved_ok)  # rank 0 holds the checkpoint; every rank stops together
    if not saved_ok:
        # RecBole saves only on an improved validation score; a NaN score (e.g. AUC on a valid split that
        # holds one label only) never improves, and its evaluate() would fail deep inside torch.load
        raise ConfigError(
            f"No checkpoint was saved: the validation metric {config['valid_metric']} was never a finite "
            "number (NaN in every epoch), so no model could be selected. The valid split of "
            f"'{config['dataset']}' is probably too small or holds one label only; use more data per user "
            "or another valid_metric.")
    test_result = trainer.evaluate(test_data, load_best_model=saved,
                                   show_progress=config["show_progress"])
    result = {
        "model": config["model"],
        "dataset": config["dataset"],
        "protocol": config["protocol"],
        "seed": config["seed"],
        "seeds": {"seed": config["seed"],
                  "sid_seed": config["sid_seed"] if config["sid_modalities"] else None},
        "protocol_checks": data.protocol_report,
        "run_id": run_id,
        # None when no validation ran (eval_step 0): RecBole leaves -inf there, which is not valid JSON
        "best_valid_score": _plain(best_valid_score) if best_valid_result is not None else None,
        "best_valid_result": _plain(best_valid_result),
        "test_result": _plain(test_result),
        "checkpoint": os.path.abspath(trainer.saved_model_file) if saved else None,
        "log_file": log_file,
        "resumed": getattr(trainer, "resumed", None),  # set by recbole_psrq.resume (resume_file)
    }
    if ddp is not None:
        result["distributed"] = {"world_size": ddp.world_size, "backend": ddp.backend,
                                 "weights_in_sync": in_sync}
        if not main:
            return result
    result["result_file"] = _write_result(result, log_file)
    logger.info(f"test result: {result['test_result']}")
    if config["resume_file"] and os.path.exists(config["resume_file"]):
        os.remove(config["resume_file"])  # finished: a rerun trains again rather than re-evaluating
    return result


def _fit(config, trainer, train_data, valid_data, saved, callback_fn=None):
    """``trainer.fit``, through :mod:`recbole_psrq.resume` when ``resume_file`` is set."""
    from recbole_psrq import resume

    show_progress = config["show_progress"]
    if config["resume_file"] and not resume.supports(trainer):
        getLogger().warning(f"resume_file is ignored: {config['model']} trains with "
                            f"{type(trainer).__name__}, whose own training loop cannot be resumed.")
    elif config["resume_file"]:
        return resume.fit(trainer, train_data, valid_data, config["resume_file"], saved=saved,
                          show_progress=show_progress, callback_fn=callback_fn)
    return trainer.fit(train_data, valid_data, saved=saved, show_progress=show_progress,
                       callback_fn=callback_fn)


def _require_protocol_report(config, data):
    if not hasattr(data, "protocol_report"):
        # RecBole's data_preparation does not build the dataset when it finds saved dataloaders
        saved = config["dataloaders_save_path"] or os.path.join(
            config["checkpoint_dir"], f"{config['dataset']}-for-{config['model']}-dataloader.pth")
        raise ConfigError(
            f"The dataset was not built, so the protocol checks did not run: RecBole loaded the saved "
            f"dataloaders {saved}, which another run may have written. Delete that file and set "
            "save_dataloaders: False.")


@contextlib.contextmanager
def torch_settings(config):
    """A run's torch settings, and the process's back afterwards: a run in a process must not inherit what
    the run before it set.

    ``torch_threads: N`` pins torch's intra-op threads (unset: the process's setting). A run's numbers
    depend on the count (a DIN epoch on the tests' tiny data: validation AUC 0.582122 on 1 thread,
    0.582254 on 2).

    ``flush_denormal: True`` computes with subnormal floats flushed to zero (x86 FTZ/DAZ), then torch's
    default (off) again. Weight decay can shrink a layer until the products through it are subnormal, which
    the CPU computes tens of times slower (RecBole's DIEN: benchmarks/bench_denormal.py). Numbers change
    in the last bits, as with another thread count, so give every model of a comparison the same setting.
    torch sets it for the calling thread only (its intra-op workers keep subnormals): it needs 1 thread."""
    import torch

    previous = torch.get_num_threads()
    if config["torch_threads"]:
        torch.set_num_threads(int(config["torch_threads"]))
    flush = bool(config["flush_denormal"])
    try:
        if flush and torch.get_num_threads() != 1:
            raise ConfigError(
                f"flush_denormal: True with {torch.get_num_threads()} torch threads: torch flushes subnormals "
                "on the calling thread only, so its other intra-op threads would still compute them. Set "
                "torch_threads: 1 (or flush_denormal: False).")
        if flush and not torch.set_flush_denormal(True):
            raise ConfigError("flush_denormal: True is not supported by this CPU (torch.set_flush_denormal "
                              "needs x86 with SSE3 or ARM64). Set flush_denormal: False.")
        yield
    finally:
        if flush:
            torch.set_flush_denormal(False)
        torch.set_num_threads(previous)


def evaluate_checkpoint(checkpoint_path, overrides=None):
    """Rebuild data and model from a checkpoint written by :func:`run` and evaluate it on test, at the
    run's ``torch_threads`` and ``flush_denormal``."""
    import torch
    from recbole.data import data_preparation
    from recbole.utils import get_trainer, init_seed

    if not os.path.isfile(checkpoint_path):
        raise ConfigError(f"Checkpoint not found: {checkpoint_path}. Checkpoints are written to "
                          "the checkpoint_dir of the run (default saved/).")
    import recbole_psrq.model  # noqa: F401  (NumPy aliases, anomaly detection off, our models)

    from recbole_psrq.distributed import single_process_config, strip_module_prefix

    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    config = single_process_config(checkpoint["config"])  # a DDP run's checkpoint: one process here
    config["sid_fit"] = False  # evaluation reuses the cached SIDs of training, never refits
    for key, value in (overrides or {}).items():
        config[key] = _override_value(value)
    with torch_settings(config):
        init_seed(config["seed"], config["reproducibility"])
        _init_logger(config, new_run_id())
        data = create_dataset(config)
        _, _, test_data = data_preparation(config, data)
        _require_protocol_report(config, data)
        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        model_obj = resolve_model(config["model"])(config, test_data._dataset).to(config["device"])
        model_obj.load_state_dict(strip_module_prefix(checkpoint["state_dict"]))
        model_obj.load_other_parameter(checkpoint.get("other_parameter"))
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model_obj)
        return _plain(trainer.evaluate(test_data, load_best_model=False, show_progress=False))


def _override_value(value):
    """A command-line override's text as the value it writes (4096 -> int, "['a']" -> list), as RecBole's
    Config reads --key=value; text that is no Python literal stays a string (e.g. a model name)."""
    import ast

    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _plain(value):
    """OrderedDicts of numpy floats -> JSON-able plain dicts of floats."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _write_result(result, log_file):
    if not log_file:
        return None
    path = os.path.splitext(log_file)[0] + ".json"
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return path


def format_metrics(metrics):
    return "  ".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}"
                     for k, v in metrics.items())


__all__ = ["run", "evaluate_checkpoint", "build_config", "resolve_model", "available_models",
           "create_dataset", "ConfigError", "DataFormatError"]
