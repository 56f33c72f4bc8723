"""Positive-only user histories for sequential CTR models (DIN, DIEN, MCCA) on labeled data, and the
checks that they hold.

RecBole's ``SequentialDataset.data_augmentation`` turns a user's time-ordered rows r_1..r_n into targets
r_2..r_n, each with the history of *all* earlier rows (label 0 included: then ``label_list`` holds the
labels) and drops r_1. The PSRQ paper's protocol instead uses the user's <= 20 most recent earlier
**positive** interactions as the history while every row, label 0 or 1, is a candidate to score.

:class:`PositiveHistoryMixin` implements that. Compose it before ``SequentialDataset``::

    class MyDataset(PositiveHistoryMixin, SequentialDataset): ...

With config ``history_positive_only: True`` (set by ``properties/protocol/ctr.yaml``), for each row i of
user u (rows sorted by user, then ``TIME_FIELD``, as RecBole does):

* ``item_id_list`` (and every other ``<field>_list``: ``timestamp_list``, ``label_list``, ...) holds the
  user's rows with label > 0 (label = 1 for 0/1 labels) and a time strictly before row i's, at most
  ``MAX_ITEM_LIST_LENGTH``, the most recent ones, oldest first, zero-padded on the right;
  ``item_length`` is their number. Rows sharing row i's timestamp are never in its history;
* every row stays a target row (label 0 rows too), including rows with an empty history
  (``item_length`` 0; DIN and MCCA mask all positions then and score from the target alone).
  ``history_min_length: k`` (default 0) drops rows with fewer than k earlier positives; the ctr
  protocol refuses it (every model scores the same rows, see :mod:`recbole_psrq.data.dataset`).

:class:`DIENHistoryMixin` adapts this to RecBole's DIEN, whose GRU cannot take an empty history and
whose auxiliary loss needs one negative item per history position (``neg_item_id_list``): an empty
history becomes a length-1 history of the padding item 0, and the negatives are sampled uniformly,
seeded by ``seed``, from the items that are not among the user's positives up to that history row.

:func:`check_histories` verifies on a built dataset that no history entry is at or after its target's
time and none has label 0. With ``history_positive_only`` False/absent RecBole's own augmentation runs
unchanged.
"""
import numpy as np
import torch

from recbole.data.interaction import Interaction

from recbole_psrq.errors import ConfigError, DataFormatError


def positive_history_index(uids, positive, max_len, times=None):
    """Indices of each row's history rows.

    Args:
        uids: (n,) user ids, rows grouped by user and time-ordered within a user.
        positive: (n,) bool, rows that may enter a history.
        max_len: M, the maximum history length.
        times: (n,) row times; rows sharing a time (of the same user) are not in each other's
            history. None: every row has its own time (row order alone).
    Returns:
        index (n, M) int64 row indices (0 where invalid), valid (n, M) bool, length (n,) int64.
    """
    uids = np.asarray(uids)
    positive = np.asarray(positive, dtype=bool)
    n = uids.shape[0]
    before = np.cumsum(positive) - positive                      # positives strictly before row i
    new_user = np.ones(n, dtype=bool)
    new_user[1:] = uids[1:] != uids[:-1]
    new_time = np.ones(n, dtype=bool)
    if times is not None:
        times = np.asarray(times)
        new_time[1:] = new_user[1:] | (times[1:] != times[:-1])
    rows = np.arange(n)
    user_first = np.maximum.accumulate(np.where(new_user, rows, 0))
    time_first = np.maximum.accumulate(np.where(new_time, rows, 0))
    before = before[time_first]                                  # ... and before row i's timestamp
    earlier = before - before[user_first]                        # earlier positives of the same user
    length = np.minimum(earlier, max_len).astype(np.int64)
    positions = np.arange(max_len)
    valid = positions[None, :] < length[:, None]
    ordinal = (before - length)[:, None] + positions[None, :]    # into the list of positive rows
    positive_rows = np.flatnonzero(positive)
    if positive_rows.size == 0:
        index = np.zeros((n, max_len), dtype=np.int64)
    else:
        index = positive_rows[np.clip(ordinal, 0, positive_rows.size - 1)]
        index = np.where(valid, index, 0).astype(np.int64)
    return index, valid, length


class PositiveHistoryMixin:
    """``data_augmentation`` with positive-only histories and every row a target (module docstring)."""

    def data_augmentation(self):
        if not self.config["history_positive_only"]:
            return super().data_augmentation()
        self.logger.debug("data_augmentation (positive-only histories)")
        self._aug_presets()
        self._check_field("uid_field", "time_field")
        label_field = self.config["LABEL_FIELD"]
        if not label_field or label_field not in self.inter_feat:
            raise ConfigError(
                f"history_positive_only is True but the interactions have no label field "
                f"'{label_field}'. Load the 0/1 label column (load_col.inter) and set LABEL_FIELD, or "
                "set history_positive_only: False to keep RecBole's all-rows histories.")
        max_len = int(self.config["MAX_ITEM_LIST_LENGTH"])
        min_len = int(self.config["history_min_length"] or 0)

        self.sort(by=[self.uid_field, self.time_field], ascending=True)
        uids = self.inter_feat[self.uid_field].numpy()
        positive = self.inter_feat[label_field].numpy() > 0
        times = self.inter_feat[self.time_field].numpy()
        index, valid, length = positive_history_index(uids, positive, max_len, times)
        keep = np.flatnonzero(length >= min_len)
        index, valid, length = (torch.from_numpy(index[keep]), torch.from_numpy(valid[keep]),
                                torch.from_numpy(length[keep]))

        new_data = self.inter_feat[torch.from_numpy(keep)]
        new_dict = {self.item_list_length_field: length}
        for field in self.inter_feat:
            if field == self.uid_field:
                continue
            list_field = getattr(self, f"{field}_list_field")
            values = self.inter_feat[field][index]                # (n, M, ...)
            values[~valid] = 0
            new_dict[list_field] = values
        self._complete_history(new_dict, index, valid)
        new_data.update(Interaction(new_dict))
        self.inter_feat = new_data

    def _complete_history(self, lists, index, valid):
        """Hook for model-specific datasets: add to or change the list fields ``lists`` (history row
        ``index`` (n, M), ``valid`` mask) before they replace the interactions."""


class DIENHistoryMixin:
    """Positive-only histories for RecBole's ``DIENDataset``: compose before :class:`PositiveHistoryMixin`.

    Under ``history_positive_only`` an empty history becomes the padding item 0 with length 1 (DIEN's
    GRU packs sequences and rejects length 0), so DIEN scores exactly the rows every other model scores;
    ``neg_item_id_list`` holds one sampled negative per history position (:func:`sample_history_negatives`).
    Without it RecBole's own DIEN augmentation runs.
    """

    def _complete_history(self, lists, index, valid):
        lists[self.item_list_length_field].clamp_(min=1)
        negatives = torch.from_numpy(sample_history_negatives(
            self.inter_feat[self.uid_field].numpy(), self.inter_feat[self.iid_field].numpy(),
            self.inter_feat[self.config["LABEL_FIELD"]].numpy() > 0,
            self.inter_feat[self.time_field].numpy(), self.item_num, self.config["seed"]))
        neg_lists = negatives[index]
        neg_lists[~valid] = 0
        lists[self.neg_item_list_field] = neg_lists


def sample_history_negatives(uids, items, positive, times, n_items, seed):
    """One negative item per row, uniform over the items 1..n_items-1 that the row's user has no
    positive row for at or before the row's time: never the row's own item when it is positive, and
    the sample depends on the past only (a later positive of the user may be drawn)."""
    rng = np.random.default_rng(seed)
    uids, items, times = (np.asarray(a) for a in (uids, items, times))
    positive = np.asarray(positive, dtype=bool)
    key = uids.astype(np.int64) * n_items + items
    pos_key, pos_time = key[positive], times[positive]
    order = np.lexsort((pos_time, pos_key))
    known, first = np.unique(pos_key[order], return_index=True)
    first_time = pos_time[order][first]                          # when each (user, item) became positive
    negatives = rng.integers(1, n_items, size=len(uids))
    todo = np.arange(len(uids))
    for _ in range(1000):
        candidate = uids[todo].astype(np.int64) * n_items + negatives[todo]
        at = np.searchsorted(known, candidate)
        found = at < len(known)
        clash = np.zeros(len(todo), dtype=bool)
        clash[found] = (known[at[found]] == candidate[found]) & \
            (first_time[at[found]] <= times[todo[found]])
        todo = todo[clash]
        if todo.size == 0:
            return negatives
        negatives[todo] = rng.integers(1, n_items, size=todo.size)
    raise DataFormatError(
        f"Cannot sample DIEN's history negatives: user id {int(uids[todo[0]])} has a positive row for "
        f"(almost) every one of the {n_items - 1} items. Remove such users from the dataset.")


def check_histories(dataset):
    """The ctr protocol's history checks on a built sequential dataset (module docstring).

    Raises DataFormatError naming the check and an example row; returns ``{check: "passed"}``.
    """
    inter = dataset.inter_feat
    label_field, time_field = dataset.config["LABEL_FIELD"], dataset.time_field
    length = inter[dataset.item_list_length_field].numpy()
    items = inter[getattr(dataset, f"{dataset.iid_field}_list_field")].numpy()
    # the padding item 0 is no entry (DIEN's length-1 empty history)
    entry = (np.arange(items.shape[1])[None, :] < length[:, None]) & (items > 0)
    times = inter[time_field].numpy()
    history_times = inter[getattr(dataset, f"{time_field}_list_field")].numpy()
    history_labels = inter[getattr(dataset, f"{label_field}_list_field")].numpy()
    violations = {
        "history_before_target": (entry & (history_times >= times[:, None]),
                                  "holds a row at or after its target's time: the model sees the future"),
        "history_positive_only": (entry & ~(history_labels > 0),
                                  "holds a label-0 row: the model sees the candidates' labels"),
    }
    for check, (bad, what) in violations.items():
        if bad.any():
            row, position = np.argwhere(bad)[0]
            tok = dataset.id2token
            raise DataFormatError(
                f"Protocol check '{check}' failed: {int(bad.sum())} history entries in "
                f"{int(bad.any(axis=1).sum())} of {len(inter)} rows of '{dataset.dataset_name}', e.g. the "
                f"row (user {tok(dataset.uid_field, int(inter[dataset.uid_field][row]))}, item "
                f"{tok(dataset.iid_field, int(inter[dataset.iid_field][row]))}, time {float(times[row])}, "
                f"label {float(inter[label_field][row])}), whose history position {int(position)} holds item "
                f"{tok(dataset.iid_field, int(items[row, position]))} at time "
                f"{float(history_times[row, position])} with label {float(history_labels[row, position])}. "
                f"Under the ctr protocol a history holds only the user's label-1 rows strictly before the "
                f"target; this one {what}. The dataset class that built it ({type(dataset).__name__}) "
                "bypassed recbole_psrq.data.history: build it with history_positive_only: True through "
                "recbole_psrq.data.dataset.create_dataset.")
    return {check: "passed" for check in violations}
