"""Runtime fixes RecBole 1.2.1 needs with today's torch / NumPy (see the README, "Compatibility").

Applied once when ``recbole_psrq`` is imported; each fix is idempotent and leaves other code alone.
"""
import logging
import os

import numpy as np


def apply():
    _allow_recbole_checkpoint_loading()
    _install_numpy_aliases()
    _quiet_faiss_loader()


def _allow_recbole_checkpoint_loading():
    # torch >= 2.6 defaults torch.load to weights_only=True, but RecBole checkpoints pickle the Config,
    # so trainer.evaluate(load_best_model=True) and load_data_and_model() would raise UnpicklingError.
    # torch reads this variable on every torch.load call; a user's explicit setting wins.
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


def _install_numpy_aliases():
    # RecBole's Config re-creates np.float/np.int/... and ray uses np.bool8; NumPy 1.24+ removed the
    # short aliases. Restoring them here lets load_data_and_model() run before any Config exists.
    for alias, target in (("float", float), ("int", int), ("bool", bool), ("object", object),
                          ("str", str), ("complex", complex), ("long", int), ("unicode", str)):
        if alias not in np.__dict__:
            setattr(np, alias, target)
    if not hasattr(np, "bool8"):
        np.bool8 = np.bool_


def _quiet_faiss_loader():
    # faiss's loader logs at INFO each instruction set it tries ("Could not load library with AVX512
    # support due to: ModuleNotFoundError ...") before it succeeds; RecBole's logger shows INFO, so every
    # run's log would open with what reads like an error. Its warnings still come through.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def disable_recbole_anomaly_detection():
    """Undo ``torch.autograd.set_detect_anomaly(True)`` that RecBole runs when its sequential models are
    imported (recbole/model/sequential_recommender/sine.py); it makes every training step ~1.8x slower.
    Call after importing ``recbole.model``."""
    import torch

    torch.autograd.set_detect_anomaly(False)
