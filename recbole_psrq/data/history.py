"""Positive-only user histories for sequential CTR models (DIN, MCCA) on labeled data.

RecBole's ``SequentialDataset.data_augmentation`` turns a user's time-ordered rows r_1..r_n into targets
r_2..r_n, each with the history of *all* earlier rows (label 0 included: then ``label_list`` holds the
labels) and drops r_1. The PSRQ paper's protocol instead uses the user's <= 20 most recent earlier
**positive** interactions as the history while every row, label 0 or 1, is a candidate to score.

:class:`PositiveHistoryMixin` implements that. Compose it before ``SequentialDataset``::

    class MyDataset(PositiveHistoryMixin, SequentialDataset): ...

With config ``history_positive_only: True`` (set by ``properties/protocol/ctr.yaml``), for each row i of
user u (rows sorted by user, then ``TIME_FIELD``, as RecBole does):

* ``item_id_list`` (and every other ``<field>_list``: ``timestamp_list``, ``label_list``, ...) holds the
  user's rows *before* i with label > 0 (label = 1 for 0/1 labels), at most ``MAX_ITEM_LIST_LENGTH``,
  the most recent ones, oldest first, zero-padded on the right; ``item_length`` is their number;
* every row stays a target row (label 0 rows too), including rows with an empty history
  (``item_length`` 0; DIN and MCCA mask all positions then and score from the target alone).
  ``history_min_length: k`` (default 0) drops rows with fewer than k earlier positives, e.g. 1 for
  models that cannot take an empty history (RecBole's GRU-based DIEN).

"Before" is the row order after RecBole's stable sort by (user, time): rows sharing a timestamp count in
file order. With ``history_positive_only`` False/absent RecBole's own augmentation runs unchanged.
"""
import numpy as np
import torch

from recbole.data.interaction import Interaction

from recbole_psrq.errors import ConfigError


def positive_history_index(uids, positive, max_len):
    """Indices of each row's history rows.

    Args:
        uids: (n,) user ids, rows grouped by user and time-ordered within a user.
        positive: (n,) bool, rows that may enter a history.
        max_len: M, the maximum history length.
    Returns:
        index (n, M) int64 row indices (0 where invalid), valid (n, M) bool, length (n,) int64.
    """
    uids = np.asarray(uids)
    positive = np.asarray(positive, dtype=bool)
    n = uids.shape[0]
    before = np.cumsum(positive) - positive                      # positives strictly before row i
    new_user = np.ones(n, dtype=bool)
    new_user[1:] = uids[1:] != uids[:-1]
    user_first = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))
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
        index, valid, length = positive_history_index(uids, positive, max_len)
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
        new_data.update(Interaction(new_dict))
        self.inter_feat = new_data
