"""Resumable training. A run given ``resume_file`` saves its whole training state after every validation:
the weights, the optimizer, the early-stopping counters, the best validation result, the validation curve
and every random generator training draws from (Python's, NumPy's, torch's and the dataloaders'). Started
again with the same settings, it continues from the last saved validation and computes exactly what an
uninterrupted run computes (tests/test_resume.py compares them number for number). A killed process or
an ended session then costs at most one validation interval instead of the whole run: a seeded DIEN run
on MPD-5k trains for hours.

The state is written atomically (an interrupted save leaves the previous one), and so is RecBole's
best-model checkpoint while resuming is on. A state written by a run with other settings is refused,
never mixed in. Only RecBole's own ``Trainer.fit`` loop is resumable, in one process (not under DDP).
"""
import os
import random
import time
from logging import getLogger

import numpy as np
import torch

from recbole_psrq.errors import ConfigError
from recbole_psrq.io import atomic_open

FORMAT = 1


def supports(trainer):
    """Whether ``trainer`` trains with RecBole's ``Trainer.fit``, the loop this module resumes."""
    from recbole.trainer import Trainer

    return isinstance(trainer, Trainer) and type(trainer).fit is Trainer.fit


def signature(config, model, train_data):
    """What must match for a saved state to belong to this run: every setting (the state's own path
    aside), the number of training rows and the shape of every weight."""
    settings = {key: repr(value) for key, value in config.final_config_dict.items() if key != "resume_file"}
    shapes = {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
    return {"settings": settings, "train_rows": len(train_data.dataset), "shapes": shapes}


def fit(trainer, train_data, valid_data, resume_file, saved=True, show_progress=False, callback_fn=None):
    """``trainer.fit(...)`` that saves its state to ``resume_file`` after every validation and, when the
    file holds the state of this same run, continues from it. ``callback_fn(epoch, score)`` sees every
    validation once per process: on resuming, the saved ones are replayed to it first, in order (so a
    callback that builds a curve or asks a pruner ends up as in an uninterrupted run). Returns what
    ``Trainer.fit`` returns, and sets ``trainer.resumed``: None, or ``{"from_epoch", "earlier_seconds"}``
    (the training time the earlier processes spent up to their last saved validation, so that a resumed
    run's cost can be reported whole)."""
    started = time.time()
    run_signature = signature(trainer.config, trainer.model, train_data)
    _save_checkpoints_atomically(trainer)
    curve = []
    finished = False
    earlier_seconds = 0.0
    trainer.resumed = None
    state = load(resume_file, run_signature, trainer.device)
    if state is not None:
        curve = [list(point) for point in state["valid_curve"]]
        finished = state["finished"]
        earlier_seconds = state["seconds"]
        trainer.resumed = {"from_epoch": state["epoch"] + 1, "earlier_seconds": round(earlier_seconds, 1)}
        _restore(trainer, train_data, valid_data, state)
        getLogger().info(f"resumed from {resume_file}: epochs 0-{state['epoch']} were trained before "
                         f"({len(curve)} validations); next epoch {trainer.start_epoch}"
                         + (", training had already stopped" if finished else ""))
        if callback_fn is not None:
            for epoch, score in curve:
                callback_fn(epoch, score)

    def after_validation(epoch, score):
        curve.append([int(epoch), float(score)])
        stopped = trainer.cur_step > trainer.stopping_step or epoch + 1 >= trainer.epochs
        seconds = earlier_seconds + time.time() - started
        _save(resume_file, trainer, train_data, valid_data, run_signature, epoch, curve, stopped, seconds)
        if callback_fn is not None:
            callback_fn(epoch, score)

    if finished:  # RecBole's fit would start by overwriting the best checkpoint with the last weights
        trainer.eval_collector.data_collect(train_data)  # as fit does: the evaluation needs its counts
        return trainer.best_valid_score, trainer.best_valid_result
    return trainer.fit(train_data, valid_data, saved=saved, show_progress=show_progress,
                       callback_fn=after_validation)


def load(path, run_signature, device="cpu"):
    """The state saved at ``path`` (None when there is none); ConfigError when it belongs to another run
    or cannot be read."""
    if not os.path.exists(path):
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=False)  # written by this module
    except Exception as e:
        raise ConfigError(f"The training state {path} cannot be read ({type(e).__name__}: {e}). Delete it to "
                          "start this run over.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a training state of this version of recbole_psrq. Delete it to "
                          "start this run over, or set resume_file to another path.")
    differences = _differences(state["signature"], run_signature)
    if differences:
        raise ConfigError(f"{path} holds the training state of a run with other settings ({'; '.join(differences)}), "
                          "and resumes only that run. Delete it to start this run over, or set resume_file "
                          "to another path.")
    return state


def _differences(saved, current, shown=5):
    found = []
    for key in sorted(set(saved["settings"]) | set(current["settings"])):
        old, new = saved["settings"].get(key, "unset"), current["settings"].get(key, "unset")
        if old != new:
            found.append(f"{key}: {old} there, {new} here")
    if saved["train_rows"] != current["train_rows"]:
        found.append(f"training rows: {saved['train_rows']} there, {current['train_rows']} here")
    if saved["shapes"] != current["shapes"]:
        found.append("the model's weights have other names or shapes")
    return found[:shown] + ([f"and {len(found) - shown} more"] if len(found) > shown else [])


def _save(path, trainer, train_data, valid_data, run_signature, epoch, curve, finished, seconds):
    state = {
        "format": FORMAT, "signature": run_signature, "seconds": float(seconds),
        "epoch": int(epoch), "finished": bool(finished), "valid_curve": curve,
        "cur_step": trainer.cur_step, "best_valid_score": trainer.best_valid_score,
        "best_valid_result": trainer.best_valid_result, "saved_model_file": trainer.saved_model_file,
        "model": trainer.model.state_dict(), "other_parameter": _other_parameters(trainer.model),
        "optimizer": trainer.optimizer.state_dict(),
        "random": {"python": random.getstate(), "numpy": np.random.get_state(),
                   "torch": torch.get_rng_state(),
                   "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
                   "train_loader": _generator_state(train_data), "valid_loader": _generator_state(valid_data)},
    }
    with atomic_open(path) as f:
        torch.save(state, f)


def _restore(trainer, train_data, valid_data, state):
    trainer.model.load_state_dict(state["model"])
    for name, value in state["other_parameter"].items():
        setattr(trainer.model, name, value)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.start_epoch = state["epoch"] + 1
    trainer.cur_step = state["cur_step"]
    trainer.best_valid_score = state["best_valid_score"]
    trainer.best_valid_result = state["best_valid_result"]
    trainer.saved_model_file = state["saved_model_file"]  # the best weights so far, maybe from before
    rng = state["random"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    for loader, saved_state in ((train_data, rng["train_loader"]), (valid_data, rng["valid_loader"])):
        if saved_state is not None:
            loader.generator.set_state(saved_state.cpu())


def _other_parameters(model):
    """The model's ``other_parameter()`` that its state dict does not hold already. Modules are left out:
    RecBole's ``load_other_parameter`` would replace them (DIN's embedding layer) by unpickled copies that
    the optimizer does not update, so a resumed DIN would silently stop training its embeddings."""
    found = model.other_parameter() or {}
    return {name: value for name, value in found.items()
            if not isinstance(value, (torch.nn.Module, torch.nn.Parameter))}


def _generator_state(loader):
    generator = getattr(loader, "generator", None)
    return generator.get_state() if generator is not None else None


def _save_checkpoints_atomically(trainer):
    """RecBole writes the best model in place; here it goes to a temporary file renamed over it, so the
    checkpoint a resumed run evaluates is never half-written."""
    write = trainer._save_checkpoint

    def save_checkpoint(epoch, verbose=True, **kwargs):
        final = kwargs.pop("saved_model_file", trainer.saved_model_file)
        temporary = f"{final}.{os.getpid()}.tmp"  # next to it: os.replace stays on one file system
        try:
            write(epoch, verbose=False, saved_model_file=temporary, **kwargs)
            os.replace(temporary, final)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
        if verbose:
            getLogger().info(f"Saving current: {final}")

    trainer._save_checkpoint = save_checkpoint
