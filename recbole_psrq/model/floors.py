"""Training-free reference rows ("floors") for every CTR table: what a table's models must beat.

They are registered models (``--model=PopularityFloor`` / ``--model=ContentFloor``), so they go through
exactly the dataset, protocol, splits, test rows and evaluator that every other model does. Both are
``SequentialRecommender``s on the ctr protocol, like MCCA: their rows are the same candidate rows with
the same positive-only histories (``item_id_list`` / ``item_length``, :mod:`recbole_psrq.data.history`).
Nothing is learned: a dummy parameter with zero loss lets RecBole's trainer run its one epoch
(``epochs: 1`` in their model yaml; more epochs would only repeat it), after which validation, the
checkpoint and the test evaluation run as for any model. The statistics they take from the training
split (popularity counts, the content floor's neutral score) are saved in the checkpoint, so a
re-evaluated checkpoint scores with them.

Scores lie in (0, 1) and only their order is meaningful: AUC, the ColdAUC buckets and UserAUC compare
with models; LogLoss of a floor is not that of a calibrated probability.
"""
import os

import numpy as np
import torch
import torch.nn as nn

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_psrq.data.embeddings import load_item_embeddings
from recbole_psrq.errors import ConfigError
from recbole_psrq.evaluation import split_train_item_counts
from recbole_psrq.model.layers import length_mask


class _Floor(SequentialRecommender):
    """A model with nothing to train (module docstring)."""

    input_type = InputType.POINTWISE
    protocol = "ctr"  # the runner's default protocol for this model
    training_free = True  # nothing to tune: the tuner skips it

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # RecBole's optimizer needs one parameter; its gradient is always 0, so it never moves
        self.dummy = nn.Parameter(torch.zeros(1))

    def calculate_loss(self, interaction):
        return self.dummy.sum() * 0.0


class PopularityFloor(_Floor):
    """Score = the candidate's training popularity: its number of **label-1 rows in the training
    split** (valid/test rows never count). The score is (count + 1) / (max count + 2), increasing in the
    count: items with equal counts tie (AUC counts a tie 1/2), and an item without a label-1 training
    row (never seen, or seen only as a negative) scores 1 / (max count + 2), tied with every such item,
    below all others. The history is not used.

    The counts are the training split's even when the model is built on another split
    (:func:`recbole_psrq.evaluation.split_train_item_counts`); RecBole's run flow builds it on the
    training split.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.register_buffer("train_positive_count", split_train_item_counts(dataset, "positive").clone())

    def _all_scores(self):
        counts = self.train_positive_count.double()
        return ((counts + 1.0) / (counts.max() + 2.0)).float()

    def predict(self, interaction):
        return self._all_scores()[interaction[self.POS_ITEM_ID]]

    def full_sort_predict(self, interaction):
        rows = interaction[self.ITEM_SEQ].shape[0]
        return self._all_scores().repeat(rows, 1)  # a copy per row: RecBole's full sort writes into it


class ContentFloor(_Floor):
    """Score = cosine of the candidate's content embedding with the mean content embedding of the row's
    history items (the ctr protocol's positive-only history), mapped to (1 + cos) / 2.

    * Embeddings: ``content_floor_modality`` (default ``text``) names the entry of the dataset's
      ``sid_embedding_files`` to read (a path relative to the dataset folder, as for the SID hook),
      matched to the dataset's item ids through RecBole's remapping (``field2id_token``), never by row
      position. The mean is over the raw (not re-normalised) embeddings of the history items that have
      one. They are re-read from the file at every construction, not stored in checkpoints.
    * Neutral score: a row whose candidate has no embedding, or none of whose history items has one
      (e.g. an empty history), or whose history mean is the zero vector, gets ``neutral_score``: the
      median (lower middle) score of the rows that do have a score in the dataset the model is built
      on (the training split in RecBole's run flow; saved in the checkpoint), or 0.5 (cosine 0) when no
      row has one. So rows the floor cannot score sit in the middle of its ranking, not at one end.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        embedding, has_embedding = self._item_embeddings(config, dataset)
        self.register_buffer("content_embedding", embedding, persistent=False)
        self.register_buffer("has_embedding", has_embedding, persistent=False)
        self.register_buffer("neutral_score", torch.tensor(self._median_score(dataset)))

    def _item_embeddings(self, config, dataset):
        modality = config["content_floor_modality"] or "text"
        files = config["sid_embedding_files"] or {}
        if modality not in files:
            raise ConfigError(
                f"ContentFloor reads the '{modality}' item embeddings (content_floor_modality), but the "
                f"dataset config's sid_embedding_files has no '{modality}' entry (it has "
                f"{sorted(files) or 'none'}). Add {{{modality}: <dataset>.{modality}.npz}} to "
                "sid_embedding_files in the dataset yaml, or set content_floor_modality to one it has.")
        path = os.path.join(config["data_path"], files[modality])  # data_path: the dataset folder
        file_ids, matrix = load_item_embeddings(path)
        row_of = {item: row for row, item in enumerate(file_ids)}
        tokens = dataset.field2id_token[dataset.iid_field]  # internal id -> raw token (0 = padding)
        rows = np.array([row_of.get(str(token), -1) if i else -1 for i, token in enumerate(tokens)])
        has_embedding = rows >= 0
        if not has_embedding.any():
            raise ConfigError(
                f"{path}: none of the dataset's items has a {modality} embedding (dataset ids like "
                f"{list(tokens[1:4])}, file ids like {file_ids[:3].tolist()}); the file's 'item_id' "
                "array must hold the dataset's raw item tokens.")
        embedding = np.zeros((len(tokens), matrix.shape[1]), dtype=np.float32)
        embedding[has_embedding] = matrix[rows[has_embedding]]
        return torch.from_numpy(embedding), torch.from_numpy(has_embedding)

    def _history_mean(self, item_seq, item_seq_len):
        """(B, d) mean embedding of the history items that have one, and (B,) whether any has."""
        valid = length_mask(item_seq_len, item_seq.shape[1]) & self.has_embedding[item_seq]
        total = (self.content_embedding[item_seq] * valid.unsqueeze(-1)).sum(1)
        return total / valid.sum(1, keepdim=True).clamp(min=1), valid.any(1)

    def _cosine(self, item_seq, item_seq_len, items, cross=False):
        """Cosine per row (B,), or per (row, item) (B, C) with ``cross``; and where it is defined."""
        history, has_history = self._history_mean(item_seq, item_seq_len)
        target = self.content_embedding[items]
        has_target = self.has_embedding[items]
        if cross:
            dots = history @ target.T
            norms = history.norm(dim=-1, keepdim=True) * target.norm(dim=-1).unsqueeze(0)
            defined = has_history.unsqueeze(1) & has_target.unsqueeze(0)
        else:
            dots = (history * target).sum(-1)
            norms = history.norm(dim=-1) * target.norm(dim=-1)
            defined = has_history & has_target
        return dots / norms.clamp(min=torch.finfo(norms.dtype).tiny), defined & (norms > 0)

    def _scores(self, item_seq, item_seq_len, items, cross=False):
        cosine, defined = self._cosine(item_seq, item_seq_len, items, cross)
        return torch.where(defined, (1.0 + cosine) / 2.0, self.neutral_score)

    def _median_score(self, dataset, chunk=4096):
        inter, found = dataset.inter_feat, []
        for start in range(0, len(inter), chunk):
            rows = inter[start:start + chunk]
            cosine, defined = self._cosine(rows[self.ITEM_SEQ], rows[self.ITEM_SEQ_LEN],
                                           rows[self.POS_ITEM_ID])
            found.append((1.0 + cosine[defined]) / 2.0)
        found = torch.cat(found) if found else torch.empty(0)
        return float(found.median()) if found.numel() else 0.5

    def predict(self, interaction):
        return self._scores(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN],
                            interaction[self.POS_ITEM_ID])

    def full_sort_predict(self, interaction):
        items = torch.arange(self.n_items, device=self.content_embedding.device)
        return self._scores(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], items, cross=True)
