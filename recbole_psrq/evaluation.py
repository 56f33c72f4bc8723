"""CTR metrics the paper reports beyond RecBole's AUC / LogLoss, for every model (ours and built-ins).

Metrics (value-type: labeled evaluation, ``eval_args.mode: labeled``; put them in ``metrics``):

``ColdAUC`` (result key ``coldauc``)
    AUC over the evaluated rows whose item has fewer than ``cold_item_threshold`` (default 30)
    interactions in the **training split**. ``cold_count: all`` (default) counts every training row of
    the item, ``cold_count: positive`` only its label-1 rows (for data whose negatives are sampled,
    e.g. MPD). Items never seen in training count 0 (cold). NaN, with a warning, when the cold rows do
    not hold both classes. "Training rows" are the rows of the training split's dataset (for a
    sequential dataset: its target rows; with the ctr protocol's positive-only histories that is
    every training row, with RecBole's own augmentation each user's first row is not one).
``UserAUC`` (result key ``userauc``) -- the CTR literature's "GAUC"
    Per-user AUC averaged over users, each weighted by the user's number of evaluated rows. Users whose
    evaluated rows are all one class have no AUC and are skipped (the weights are renormalised over the
    remaining users); NaN when no user has both classes. Ties count 1/2 (as in AUC).

Why not the name ``GAUC``: RecBole already registers ``gauc`` as a *ranking* metric (full-sort,
weighted by positives), and Config refuses to mix ranking and value metrics, so it can never sit next to
AUC. Replacing it would silently change a RecBole built-in (``[Recall, GAUC]`` under full sort would then
raise), so ours is registered under a new name.

How it is wired into RecBole (``install()``, run when ``recbole_psrq.model`` is imported, i.e. before the
runner builds a Config):

* the metric classes are added to RecBole's metric registry dicts (``recbole.evaluator.register``:
  ``metrics_dict``, ``metric_types``, ``metric_information``) -- the same dict objects ``Config`` and
  ``Evaluator`` read, so the names are accepted and instantiated like built-ins;
* RecBole value metrics only receive ``rec.score`` and ``data.label``. Three more collector needs are
  added by wrapping methods of ``recbole.evaluator.collector.Collector`` in place (so the ``Collector``
  that ``recbole.trainer.Trainer`` instantiates, and hence DIN, DeepFM, ... all get them):
  ``data.uid`` / ``data.iid`` (user / item id of every evaluated row, from the eval interaction's
  ``USER_ID_FIELD`` / ``ITEM_ID_FIELD``) and ``data.train_item_count`` (per item id, the training-split
  count chosen by ``cold_count``). ``get_data_struct`` is wrapped to reset the per-row ones after each
  evaluation, like RecBole does for ``rec.score``.
* the training counts come from ``Collector.data_collect(train_data)`` (called by ``Trainer.fit``).
  When a model is evaluated without ``fit`` (re-evaluating a checkpoint), they come from the split:
  ``Dataset.build`` is wrapped to attach the training split's counts to every split it returns, and
  ``Trainer.evaluate`` is wrapped to hand those of the evaluated split to the collector.
"""
import functools
from logging import getLogger

import numpy as np
import torch

from recbole.evaluator import register as _register
from recbole.evaluator.base_metric import AbstractMetric
from recbole.utils import EvaluatorType

COLD_COUNT_MODES = ("all", "positive")
DEFAULT_COLD_THRESHOLD = 30
UID_NEED, IID_NEED, COUNT_NEED = "data.uid", "data.iid", "data.train_item_count"
_PER_EVAL_KEYS = (UID_NEED, IID_NEED)
_SPLIT_COUNTS_ATTR = "_psrq_train_item_counts"


# ---------------------------------------------------------------------- plain functions
def binary_auc(scores, labels):
    """ROC AUC (Mann-Whitney U with average ranks: ties count 1/2); NaN without both classes."""
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel() > 0.5
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def user_auc(scores, labels, users):
    """Row-weighted mean of per-user AUC over users having both classes (see the module docstring).
    Returns (value, number of users used, number of users skipped)."""
    import pandas as pd

    frame = pd.DataFrame({"u": np.asarray(users).ravel(),
                          "s": np.asarray(scores, dtype=np.float64).ravel(),
                          "y": (np.asarray(labels).ravel() > 0.5).astype(np.int64)})
    frame["r"] = frame.groupby("u")["s"].rank(method="average")
    frame["rp"] = frame["r"] * frame["y"]
    per_user = frame.groupby("u").agg(n=("y", "size"), p=("y", "sum"), rp=("rp", "sum"))
    per_user["q"] = per_user["n"] - per_user["p"]
    valid = per_user[(per_user["p"] > 0) & (per_user["q"] > 0)]
    if valid.empty:
        return float("nan"), 0, len(per_user)
    auc = (valid["rp"] - valid["p"] * (valid["p"] + 1) / 2.0) / (valid["p"] * valid["q"])
    value = float((auc * valid["n"]).sum() / valid["n"].sum())
    return value, len(valid), len(per_user) - len(valid)


def cold_mask(item_ids, train_item_count, threshold):
    """True for rows whose item has < threshold training interactions (unknown items count 0)."""
    item_ids = torch.as_tensor(item_ids).long().ravel()
    counts = torch.as_tensor(train_item_count).long().ravel()
    known = item_ids < counts.numel()
    row_counts = torch.zeros_like(item_ids)
    row_counts[known] = counts[item_ids[known]]
    return (row_counts < threshold).numpy()


def train_item_counts(dataset, mode="all"):
    """Per item id (index), the number of rows of ``dataset`` (a training split) holding it:
    every row (``all``) or label-positive rows only (``positive``; a dataset without a label field
    counts every row, i.e. all rows are positives)."""
    mode = _cold_count_mode(mode)
    inter = dataset.inter_feat
    items = torch.as_tensor(np.asarray(inter[dataset.iid_field])).long().ravel()
    if mode == "positive":
        label_field = dataset.config["LABEL_FIELD"]
        if label_field and label_field in inter:
            items = items[torch.as_tensor(np.asarray(inter[label_field])).ravel() > 0.5]
    return torch.bincount(items, minlength=dataset.item_num)


def _cold_count_mode(mode):
    mode = mode or "all"
    if mode not in COLD_COUNT_MODES:
        from recbole_psrq.errors import ConfigError

        raise ConfigError(f"cold_count must be one of {', '.join(COLD_COUNT_MODES)}, got {mode!r} "
                          "(all = every training row of the item, positive = its label-1 rows).")
    return mode


def _cold_threshold(config):
    value = config["cold_item_threshold"]
    return DEFAULT_COLD_THRESHOLD if value is None else int(value)


# ---------------------------------------------------------------------- metrics
class ColdAUC(AbstractMetric):
    """AUC over rows whose item has < ``cold_item_threshold`` training interactions (module docstring)."""

    metric_type = EvaluatorType.VALUE
    metric_need = ["rec.score", "data.label", IID_NEED, COUNT_NEED]

    def __init__(self, config):
        super().__init__(config)
        self.threshold = _cold_threshold(config)

    def calculate_metric(self, dataobject):
        scores = dataobject.get("rec.score").squeeze(-1).numpy()
        labels = dataobject.get("data.label").squeeze(-1).numpy()
        mask = cold_mask(dataobject.get(IID_NEED), dataobject.get(COUNT_NEED), self.threshold)
        value = binary_auc(scores[mask], labels[mask])
        if np.isnan(value):
            getLogger().warning(
                f"ColdAUC: the {int(mask.sum())} evaluated rows with items of < {self.threshold} "
                "training interactions do not hold both labels; ColdAUC is NaN.")
        return {"coldauc": round(value, self.decimal_place)}


class UserAUC(AbstractMetric):
    """GAUC: per-user AUC weighted by the user's number of evaluated rows (module docstring)."""

    metric_type = EvaluatorType.VALUE
    metric_need = ["rec.score", "data.label", UID_NEED]

    def calculate_metric(self, dataobject):
        value, _, _ = user_auc(dataobject.get("rec.score").squeeze(-1).numpy(),
                               dataobject.get("data.label").squeeze(-1).numpy(),
                               dataobject.get(UID_NEED).numpy())
        if np.isnan(value):
            getLogger().warning("UserAUC: no evaluated user has both labels; UserAUC is NaN.")
        return {"userauc": round(value, self.decimal_place)}


METRICS = {"coldauc": ColdAUC, "userauc": UserAUC}


# ---------------------------------------------------------------------- RecBole wiring
def _set_counts(collector, counts):
    collector.data_struct.set(COUNT_NEED, torch.as_tensor(counts).long().cpu())


def _wrap_data_collect(original):
    @functools.wraps(original)
    def data_collect(self, train_data):
        original(self, train_data)
        if self.register.need(COUNT_NEED):
            dataset = getattr(train_data, "_dataset", None)
            dataset = train_data.dataset if dataset is None else dataset
            mode = _cold_count_mode(self.config["cold_count"])
            attached = getattr(dataset, _SPLIT_COUNTS_ATTR, None)
            counts = attached[mode] if attached else train_item_counts(dataset, mode)
            _set_counts(self, counts)
    return data_collect


def _wrap_eval_batch_collect(original):
    @functools.wraps(original)
    def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
        original(self, scores_tensor, interaction, positive_u, positive_i)
        if self.register.need(UID_NEED):
            self.data_struct.update_tensor(UID_NEED, interaction[self.config["USER_ID_FIELD"]].cpu())
        if self.register.need(IID_NEED):
            self.data_struct.update_tensor(IID_NEED, interaction[self.config["ITEM_ID_FIELD"]].cpu())
    return eval_batch_collect


def _wrap_get_data_struct(original):
    @functools.wraps(original)
    def get_data_struct(self):
        if self.register.need(COUNT_NEED) and COUNT_NEED not in self.data_struct:
            raise RuntimeError(
                "ColdAUC needs the training split's item counts, but the collector has none: call "
                "trainer.eval_collector.data_collect(train_data) before trainer.evaluate (Trainer.fit "
                "does this), or build the splits with Dataset.build / data_preparation.")
        returned = original(self)
        for key in _PER_EVAL_KEYS:
            if key in self.data_struct:
                del self.data_struct[key]
        return returned
    return get_data_struct


def _wrap_build(original):
    @functools.wraps(original)
    def build(self):
        datasets = original(self)
        try:
            train = datasets[0]
            counts = {mode: train_item_counts(train, mode) for mode in COLD_COUNT_MODES}
        except Exception:  # noqa: BLE001 -- a dataset shape we don't know: fall back to data_collect
            return datasets
        for split in datasets:
            setattr(split, _SPLIT_COUNTS_ATTR, counts)
        return datasets
    return build


def _wrap_evaluate(original):
    @functools.wraps(original)
    def evaluate(self, eval_data, *args, **kwargs):
        collector = getattr(self, "eval_collector", None)
        attached = getattr(getattr(eval_data, "_dataset", None), _SPLIT_COUNTS_ATTR, None)
        if collector is not None and attached and collector.register.need(COUNT_NEED):
            _set_counts(collector, attached[_cold_count_mode(self.config["cold_count"])])
        return original(self, eval_data, *args, **kwargs)
    return evaluate


def _patch(owner, name, wrapper):
    current = getattr(owner, name)
    if getattr(current, "_psrq_wrapped", False):
        return
    wrapped = wrapper(current)
    wrapped._psrq_wrapped = True
    setattr(owner, name, wrapped)


def install():
    """Register ColdAUC / UserAUC with RecBole and extend its Collector (idempotent)."""
    from recbole.data.dataset import Dataset
    from recbole.evaluator.collector import Collector
    from recbole.trainer.trainer import Trainer

    for name, cls in METRICS.items():
        _register.metrics_dict[name] = cls
        _register.metric_types[name] = cls.metric_type
        _register.metric_information[name] = cls.metric_need
        if cls.smaller and name not in _register.smaller_metrics:
            _register.smaller_metrics.append(name)
    _patch(Collector, "data_collect", _wrap_data_collect)
    _patch(Collector, "eval_batch_collect", _wrap_eval_batch_collect)
    _patch(Collector, "get_data_struct", _wrap_get_data_struct)
    _patch(Dataset, "build", _wrap_build)
    _patch(Trainer, "evaluate", _wrap_evaluate)


install()
