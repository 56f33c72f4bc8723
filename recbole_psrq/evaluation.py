"""CTR metrics the paper reports beyond RecBole's AUC / LogLoss, for every model (ours and built-ins).

Metrics (value-type: labeled evaluation, ``eval_args.mode: labeled``; put them in ``metrics``):

``ColdAUC`` (result keys: per cold bucket ``<name>``, ``<name>_rows``, ``<name>_share``)
    Cold-start AUC over **buckets** of evaluated rows, chosen by how often the row's item occurs in the
    **training split**. Config ``cold_buckets`` maps a bucket name to ``{max_count: N, count: MODE}``
    (or just ``N``): the bucket holds the rows whose item has **at most N** training rows, counted as
    MODE -- ``all`` (every training row of the item) or ``positive`` (its label-1 rows only, for data
    whose negatives are sampled, e.g. MPD); MODE defaults to the config's ``cold_count``. Items never
    seen in training count 0. For each bucket the metric reports its AUC (``<name>``), the number of
    evaluated rows it covers (``<name>_rows``) and their share of all evaluated rows (``<name>_share``),
    so a "cold" AUC always comes with how much of the test set it describes. A bucket without rows, or
    whose rows hold one label only, has AUC NaN and a logged warning saying which. Defaults
    (``properties/overall.yaml``; :data:`DEFAULT_COLD_BUCKETS` when the key is absent):

    * ``coldauc``: ``max_count: 29`` -- the paper's Cold AUC (< 30 interactions), the same key and rows
      as earlier results; on sparse data it covers most test rows (78% of MPD-5k's);
    * ``coldauc_strict``: ``max_count: 5`` -- items seen at most a handful of times;
    * ``coldauc_unseen``: ``max_count: 0, count: all`` -- items in no training row at all, labelled or
      not (their ID embeddings never got a gradient): only content can score them.

    "Training rows" are the rows of the training split's dataset (for a sequential dataset: its target
    rows; with the ctr protocol's positive-only histories that is every training row, with RecBole's own
    augmentation each user's first row is not one). ``cold_item_threshold`` (the former single
    threshold, "< N") is replaced by ``cold_buckets``; a value that disagrees with the ``coldauc``
    bucket is an error rather than silently ignored.
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
  ``USER_ID_FIELD`` / ``ITEM_ID_FIELD``) and ``data.train_item_count`` (the training split's counts per
  item id, one row per mode of :data:`COLD_COUNT_MODES`). ``get_data_struct`` is wrapped to reset the
  per-row ones after each evaluation, like RecBole does for ``rec.score``.
* the training counts come from ``Collector.data_collect(train_data)`` (called by ``Trainer.fit``).
  When a model is evaluated without ``fit`` (re-evaluating a checkpoint), they come from the split:
  ``Dataset.build`` is wrapped to attach the training split's counts to every split it returns, and
  ``Trainer.evaluate`` is wrapped to hand those of the evaluated split to the collector.
"""
import functools
import re
from logging import getLogger

import numpy as np
import torch

from recbole.evaluator import register as _register
from recbole.evaluator.base_metric import AbstractMetric
from recbole.utils import EvaluatorType

COLD_COUNT_MODES = ("all", "positive")
# bucket name -> {max_count, count}; mirrored by cold_buckets in properties/overall.yaml (module docstring)
DEFAULT_COLD_BUCKETS = {
    "coldauc": {"max_count": 29},
    "coldauc_strict": {"max_count": 5},
    "coldauc_unseen": {"max_count": 0, "count": "all"},
}
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


def bucket_mask(item_ids, train_item_count, max_count):
    """True for rows whose item has <= max_count training rows in ``train_item_count`` (a count per item
    id; items beyond the table, i.e. unknown to the training split, count 0)."""
    item_ids = torch.as_tensor(item_ids).long().ravel()
    counts = torch.as_tensor(train_item_count).long().ravel()
    known = item_ids < counts.numel()
    row_counts = torch.zeros_like(item_ids)
    row_counts[known] = counts[item_ids[known]]
    return (row_counts <= max_count).numpy()


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


def split_train_item_counts(dataset, mode="all"):
    """The **training split's** per-item counts for any split ``Dataset.build`` returned (the build
    wrapper attaches them to every split, so a model built on the test split still sees training
    counts); a dataset not made by ``build`` is counted itself and must then be the training split."""
    attached = getattr(dataset, _SPLIT_COUNTS_ATTR, None)
    return attached[_cold_count_mode(mode)] if attached else train_item_counts(dataset, mode)


def _cold_count_mode(mode):
    mode = mode or "all"
    if mode not in COLD_COUNT_MODES:
        from recbole_psrq.errors import ConfigError

        raise ConfigError(f"cold_count must be one of {', '.join(COLD_COUNT_MODES)}, got {mode!r} "
                          "(all = every training row of the item, positive = its label-1 rows).")
    return mode


class ColdBucket:
    """Evaluated rows whose item has at most ``max_count`` training rows, counted as ``count``."""

    _NAME = re.compile(r"^[a-z][a-z0-9_]*$")

    def __init__(self, name, max_count, count):
        self.name, self.max_count, self.count = name, max_count, count

    @classmethod
    def from_config(cls, name, spec, default_count):
        from recbole_psrq.errors import ConfigError

        spec = {"max_count": spec} if isinstance(spec, int) and not isinstance(spec, bool) else spec
        if not isinstance(spec, dict) or set(spec) - {"max_count", "count"} or \
                not isinstance(spec.get("max_count"), int) or isinstance(spec["max_count"], bool) or \
                spec["max_count"] < 0:
            raise ConfigError(f"cold_buckets: bucket {name!r} must be {{max_count: N}} or "
                              f"{{max_count: N, count: all|positive}} with an integer N >= 0 (rows whose "
                              f"item has at most N training rows), got {spec!r}.")
        if not isinstance(name, str) or not cls._NAME.match(name) or \
                (name in _register.metrics_dict and name != "coldauc"):
            raise ConfigError(f"cold_buckets: bucket name {name!r} must be lower-case letters, digits and "
                              "'_' and must not be another metric's name (its AUC is reported under it).")
        return cls(name, spec["max_count"], _cold_count_mode(spec.get("count", default_count)))


def cold_buckets(config):
    """The configured :class:`ColdBucket` list (module docstring)."""
    from recbole_psrq.errors import ConfigError

    spec = config["cold_buckets"]
    spec = DEFAULT_COLD_BUCKETS if spec is None else spec
    if not isinstance(spec, dict) or not spec:
        raise ConfigError("cold_buckets must map bucket names to {max_count: N[, count: all|positive]}, "
                          f"e.g. {DEFAULT_COLD_BUCKETS}; got {spec!r}.")
    buckets = [ColdBucket.from_config(name, value, config["cold_count"]) for name, value in spec.items()]
    legacy = config["cold_item_threshold"]
    named = {b.name: b for b in buckets}
    if legacy is not None and ("coldauc" not in named or named["coldauc"].max_count != int(legacy) - 1):
        at_most = int(legacy) - 1  # "fewer than N" = "at most N - 1"
        raise ConfigError(
            f"cold_item_threshold ({legacy}) is replaced by cold_buckets and disagrees with it: set "
            f"cold_buckets: {{coldauc: {{max_count: {at_most}}}, ...}} instead (buckets hold items with AT "
            "MOST max_count training rows) and remove cold_item_threshold.")
    return buckets


# ---------------------------------------------------------------------- metrics
class ColdAUC(AbstractMetric):
    """AUC, row count and row share of every cold bucket (module docstring)."""

    metric_type = EvaluatorType.VALUE
    metric_need = ["rec.score", "data.label", IID_NEED, COUNT_NEED]

    def __init__(self, config):
        super().__init__(config)
        self.buckets = cold_buckets(config)

    def calculate_metric(self, dataobject):
        scores = dataobject.get("rec.score").squeeze(-1).numpy()
        labels = dataobject.get("data.label").squeeze(-1).numpy()
        items = dataobject.get(IID_NEED)
        counts = dataobject.get(COUNT_NEED)
        result = {}
        for bucket in self.buckets:
            mask = bucket_mask(items, counts[COLD_COUNT_MODES.index(bucket.count)], bucket.max_count)
            rows = int(mask.sum())
            value = binary_auc(scores[mask], labels[mask])
            if np.isnan(value):
                held = "no evaluated row" if rows == 0 else \
                    f"its {rows} evaluated rows all have label {int(labels[mask][0] > 0.5)}"
                getLogger().warning(
                    f"ColdAUC: bucket '{bucket.name}' (items with <= {bucket.max_count} training rows, "
                    f"counting {bucket.count} rows) has {held}; its AUC is NaN.")
            result[bucket.name] = round(value, self.decimal_place)
            result[f"{bucket.name}_rows"] = rows
            share = rows / labels.size if labels.size else float("nan")
            result[f"{bucket.name}_share"] = round(share, self.decimal_place)
        return result


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
    """``counts``: {mode: per-item counts} -> one (len(COLD_COUNT_MODES), n_items) tensor."""
    stacked = torch.stack([torch.as_tensor(counts[mode]).long() for mode in COLD_COUNT_MODES])
    collector.data_struct.set(COUNT_NEED, stacked.cpu())


def _wrap_data_collect(original):
    @functools.wraps(original)
    def data_collect(self, train_data):
        original(self, train_data)
        if self.register.need(COUNT_NEED):
            dataset = getattr(train_data, "_dataset", None)
            dataset = train_data.dataset if dataset is None else dataset
            _set_counts(self, {mode: split_train_item_counts(dataset, mode) for mode in COLD_COUNT_MODES})
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
            _set_counts(collector, attached)
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
