"""RecBole dataset classes with the semantic-ID hook and the protocol checks, and the project's
``create_dataset``.

:class:`SIDFieldsMixin` overrides ``Dataset._load_data``: after RecBole has read the atomic files (raw
tokens, before remapping and filtering), it adds the item fields ``<modality>_sid`` (e.g. ``text_sid``,
``audio_sid``) and ``joint_sid`` as level-prefixed ``token_seq`` features (see
:mod:`recbole_psrq.data.sid_fields`), so RecBole remaps, filters and serves them like any loaded item
feature. Config keys (defaults in ``properties/overall.yaml``):

    sid_embedding_files: {text: x.text.npz, audio: x.audio.npz}   # declares the modalities, any names;
                                                                  # relative to the dataset folder
    sid_modalities: [text, audio, joint]   # which SID fields to add; all = every declared + joint; [] = none
    sid_joint_modalities: ~                # what the joint SID concatenates; ~ = every declared modality
    sid_quantizer: psrq                    # psrq | rq_kmeans | rq_vae | vq | pq | opq
    sid_levels: 3
    sid_codebook_size: 64
    sid_seed: 2025
    sid_quantizer_options: {}              # e.g. {niter: 20, prefix_weight: 1.0}
    sid_quantizer_files: {}                # {modality: fitted quantizer .npz} -> encode only
    sid_cache_dir: saved/sid_cache
    sid_report_label_column: genre         # .item column for the drift report (optional)
    sid_max_missing_fraction: 0.5
    sid_fit: True                          # False: a missing cache entry is an error (evaluation)

:class:`ProtocolMixin` checks the evaluation protocol when RecBole builds (splits) the dataset and
records ``protocol_report``: the test rows' count and digest (:func:`rows_digest`; equal digests = the
same candidate rows) and, under ``protocol: ctr``, the checks that every loaded row is a candidate and
that histories hold only earlier positive rows (:func:`recbole_psrq.data.history.check_histories`).
A failed check stops the run.

:func:`create_dataset` builds every model's data through these classes, including the models RecBole
gives a dataset class of its own (DIEN, and the knowledge-graph models), so every model gets the same
protocol and the SID fields.
"""
import hashlib
import importlib
import os

import numpy as np
import torch
from recbole.data.dataset import (DIENDataset, Dataset, GRU4RecKGDataset, KnowledgeBasedDataset,
                                  KSRDataset, SequentialDataset)
from recbole.utils import FeatureSource, FeatureType, ModelType

from recbole_psrq.data.atomic import read_header
from recbole_psrq.data.history import DIENHistoryMixin, PositiveHistoryMixin, check_histories
from recbole_psrq.data.sid_fields import compute_sid_tokens, read_item_labels
from recbole_psrq.errors import ConfigError, DataFormatError


class SIDFieldsMixin:
    """Adds semantic-ID item fields while RecBole loads the data (see module docstring)."""

    def _load_data(self, token, dataset_path):
        super()._load_data(token, dataset_path)
        if self.config["user_fraction"] is not None:
            self._keep_user_fraction(float(self.config["user_fraction"]))
        modalities = self.config["sid_modalities"]
        if modalities:
            self._add_sid_fields(modalities, token, dataset_path)

    def _keep_user_fraction(self, fraction):
        """``user_fraction: f`` keeps the users whose id hashes below ``f`` (sha256 of the raw token), with
        all their rows: the same users for every model, run and seed, so a cheaper copy of a study (e.g.
        its tuning trials, benchmark ``--tune-user-fraction``) treats every model alike."""
        if fraction == 1:
            return
        uid = self.uid_field
        users = self.inter_feat[uid].astype(str)
        unique = users.unique()
        kept = hashed_users(unique, fraction, "user_fraction")
        if not kept:
            raise ConfigError(f"user_fraction {fraction} keeps none of the {len(unique)} users of "
                              f"'{self.dataset_name}'; use a larger fraction.")
        self.inter_feat = self.inter_feat[users.isin(kept).to_numpy()].reset_index(drop=True)
        if self.user_feat is not None:
            self.user_feat = self.user_feat[self.user_feat[uid].astype(str).isin(kept).to_numpy()] \
                .reset_index(drop=True)
        self.logger.info(f"user_fraction {fraction}: kept {len(kept)} of {len(unique)} users "
                         f"({len(self.inter_feat)} rows)")

    def _add_sid_fields(self, modalities, token, dataset_path):
        import pandas as pd

        config = self.config
        iid = self.iid_field
        item_ids = pd.unique(self.inter_feat[iid].astype(str))
        if self.item_feat is not None:
            item_ids = pd.unique(np.concatenate([item_ids, self.item_feat[iid].astype(str)]))
        embedding_files = {m: path and os.path.join(dataset_path, path)
                           for m, path in (config["sid_embedding_files"] or {}).items()}
        labels = None
        label_column = config["sid_report_label_column"]
        item_file = os.path.join(dataset_path, f"{token}.item")
        if label_column and os.path.isfile(item_file):
            labels = read_item_labels(item_file, label_column, iid, config["field_separator"])
        n_levels = config["sid_levels"]
        fields = compute_sid_tokens(
            item_ids, embedding_files, modalities, joint_modalities=config["sid_joint_modalities"],
            quantizer=config["sid_quantizer"], n_levels=n_levels,
            codebook_size=config["sid_codebook_size"], seed=config["sid_seed"],
            quantizer_options=config["sid_quantizer_options"],
            quantizer_files=config["sid_quantizer_files"],
            cache_dir=config["sid_cache_dir"], dataset_name=token, labels=labels,
            allow_fit=config["sid_fit"],
            max_missing_fraction=config["sid_max_missing_fraction"],
        )
        frame = pd.DataFrame({iid: item_ids})
        for field, tokens in fields.items():
            frame[field] = [np.array(t.split(" ")) for t in tokens]
            self.set_field_property(field, FeatureType.TOKEN_SEQ, FeatureSource.ITEM,
                                    max(len(t) for t in frame[field]))
        if self.item_feat is None:
            self.item_feat = frame
        else:
            clash = [f for f in fields if f in self.item_feat.columns]
            if clash:
                raise ConfigError(f"{item_file} already has column(s) {clash}; remove them from "
                                  "load_col or from sid_modalities.")
            self.item_feat = self.item_feat.astype({iid: str}).merge(frame, on=iid, how="left")
        self.logger.info(f"SID fields added to the item features: {sorted(fields)} "
                         f"({config['sid_quantizer']}, L={n_levels}, k={config['sid_codebook_size']})")


MAX_RANKED_TIMES = 2 ** 24 + 1  # the ranks 0..2**24 are float32 numbers, 2**24 + 1 is not


class ProtocolMixin:
    """Checks the protocol when the dataset is built and records ``protocol_report`` (module docstring).

    Both protocols order each user's rows by time and read the 0/1 label, so both columns must be loaded
    as numbers. RecBole stores float fields as float32, exact up to 2**24 only (194 days in seconds):
    times it cannot hold exactly (e.g. unix seconds) are replaced by their rank as loaded (float64), which
    keeps their order and ties; ``file_times`` maps a stored time back to the file's value."""

    def _load_data(self, token, dataset_path):
        super()._load_data(token, dataset_path)
        inter_file = os.path.join(dataset_path, f"{token}.inter")
        self._check_protocol_column(inter_file, "TIME_FIELD", self.time_field)
        self._check_protocol_column(inter_file, "LABEL_FIELD", self.config["LABEL_FIELD"])
        self.time_ranks_of = self._rank_times(inter_file)

    def _check_protocol_column(self, inter_file, key, field):
        if not field:
            raise ConfigError(f"{key} is unset; the protocol orders each user's rows by time and reads their 0/1 "
                              f"label, so set {key} to a column of {inter_file}.")
        if field in self.inter_feat.columns:
            if self.field2type[field] != FeatureType.FLOAT:
                raise DataFormatError(
                    f"{inter_file}: column '{field}' ({key}) is declared {self.field2type[field].value}; the "
                    f"protocol reads it as a number: declare it '{field}:float' in the header.")
            return
        columns = [name for name, _ in read_header(inter_file, self.config["field_separator"],
                                                   self.config["encoding"])]
        if field in columns:
            raise DataFormatError(
                f"{inter_file}: column '{field}' ({key}) is not loaded (load_col's inter columns: "
                f"{(self.config['load_col'] or {}).get('inter')}); the protocol orders each user's rows by "
                f"time and reads their 0/1 label under both protocols: add '{field}' to load_col.")
        raise DataFormatError(
            f"{inter_file} has no column '{field}' ({key}); its columns are {columns}. The protocol orders each "
            f"user's rows by time and reads their 0/1 label under both protocols: add the column (and to "
            f"load_col, if set), or set {key} to the column that holds it.")

    def _rank_times(self, inter_file):
        """Replace times float32 cannot hold by their dense rank; returns the sorted distinct file times
        (what rank r stands for), or None when the times are kept."""
        field = self.time_field
        times = self.inter_feat[field].to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(times))
        if len(bad):
            raise DataFormatError(
                f"{inter_file}, data row {bad[0] + 1} (line {bad[0] + 2}): '{field}' is {times[bad[0]]} "
                f"({len(bad)} such rows); RecBole would fill in the column's mean. Write each row's time.")
        if (times.astype(np.float32) == times).all():
            return None
        distinct, ranks = np.unique(times, return_inverse=True)
        if len(distinct) > MAX_RANKED_TIMES:
            raise DataFormatError(
                f"{inter_file}: '{field}' has {len(distinct)} distinct times; RecBole stores times as float32, "
                f"which holds at most {MAX_RANKED_TIMES} distinct ranks exactly: coarsen the times (e.g. to "
                "minutes).")
        self.inter_feat[field] = ranks.astype(np.float64)
        self.logger.info(f"{field}: {len(distinct)} distinct times that float32 (RecBole's float fields) cannot "
                         f"all hold exactly, replaced by their rank 0-{len(distinct) - 1} (order and ties kept)")
        return distinct

    def build(self):
        fields = [self.uid_field, self.iid_field, self.time_field]
        loaded = self.inter_feat[fields].copy()  # still the loaded rows (RecBole augments in build)
        loaded[self.time_field] = loaded[self.time_field].astype(np.float32)  # as RecBole stores it
        datasets = super().build()
        checks = {}
        if self.config["protocol"] == "ctr":
            if isinstance(self, SequentialDataset):
                checks.update(check_histories(self))
            checks["every_row_a_candidate"] = self._check_candidates(loaded, fields)
        if self.config["valid_user_fraction"] is not None:
            datasets[1] = self._keep_valid_users(datasets[1], self.config["valid_user_fraction"])
        test = datasets[-1]
        self.protocol_report = {"test_rows": len(test), "test_digest": rows_digest(test),
                                "checks": checks}
        return datasets

    def _keep_valid_users(self, valid, fraction):
        """``valid_user_fraction: f`` validates on the users whose id hashes below ``f`` only (model
        selection and early stopping; training and test keep every user): a full sort over every item
        for every validation user is what makes MCCA's top-k validation expensive."""
        uid = self.uid_field
        tokens = self.field2id_token[uid][valid.inter_feat[uid].numpy()]
        unique = np.unique(tokens)
        kept = hashed_users(unique, fraction, "valid_user_fraction")
        if not kept:
            raise ConfigError(f"valid_user_fraction {fraction} keeps none of the {len(unique)} validation "
                              f"users of '{self.dataset_name}'; use a larger fraction.")
        mask = np.isin(tokens, list(kept))
        valid = valid.copy(valid.inter_feat[torch.from_numpy(mask)])
        self.logger.info(f"valid_user_fraction {fraction}: validating on {len(kept)} of {len(unique)} "
                         f"users ({len(valid)} rows)")
        return valid

    def _check_candidates(self, loaded, fields):
        if len(self.inter_feat) == len(loaded):
            return "passed"
        kept = self.inter_feat.interaction
        kept = {tuple(row) for row in zip(*(kept[f].numpy().tolist() for f in fields))}
        missing = next(row for row in loaded.itertuples(index=False) if tuple(row) not in kept)
        example = ", ".join(f"{f} {self.id2token(f, v) if f != self.time_field else file_times(self, [v])[0]}"
                            for f, v in zip(fields, missing))
        raise ConfigError(
            f"Protocol check 'every_row_a_candidate' failed: {len(loaded) - len(self.inter_feat)} of the "
            f"{len(loaded)} loaded rows of '{self.dataset_name}' are no candidate row, e.g. ({example}). "
            f"Under the ctr protocol every model scores every row, so that all models are compared on "
            f"the same test rows: history_min_length must be 0 or unset (it is "
            f"{self.config['history_min_length']}; DIEN gets a padded history instead) and "
            f"history_positive_only True (it is {self.config['history_positive_only']}).")


def hashed_users(tokens, fraction, key):
    """The user tokens whose sha256 hashes below ``fraction`` (of 2**64): a fixed subset, the same for
    every model, run and seed, and nested (a smaller fraction keeps a subset of a larger one's users)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ConfigError(f"{key} must be a number in (0, 1], got {fraction!r}.")
    return {u for u in tokens
            if int.from_bytes(hashlib.sha256(u.encode()).digest()[:8], "big") < fraction * 2 ** 64}


def file_times(dataset, stored):
    """The file's times of times as ``dataset`` stores them (float32, or their rank: ProtocolMixin)."""
    stored = np.asarray(stored, dtype=np.float64)
    distinct = dataset.time_ranks_of
    return stored if distinct is None else distinct[stored.astype(np.int64)]


def rows_digest(dataset):
    """sha256 of a dataset's rows as (user, item, time, label) in raw tokens and the file's values, sorted:
    two runs score the same candidate rows exactly when their test digests are equal."""
    inter = dataset.inter_feat
    columns = [dataset.field2id_token[f][inter[f].numpy()] for f in (dataset.uid_field, dataset.iid_field)]
    columns.append([repr(float(v)) for v in file_times(dataset, inter[dataset.time_field].numpy())])
    columns.append([repr(float(v)) for v in inter[dataset.config["LABEL_FIELD"]].numpy()])
    lines = sorted("\t".join(row) for row in zip(*columns))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


class SIDDataset(SIDFieldsMixin, ProtocolMixin, Dataset):
    """RecBole ``Dataset`` (general and context-aware models) with SID item fields."""


class SIDSequentialDataset(SIDFieldsMixin, ProtocolMixin, PositiveHistoryMixin, SequentialDataset):
    """RecBole ``SequentialDataset`` with SID item fields and, with ``history_positive_only`` (the CTR
    protocol), histories built from the user's earlier positive rows only."""


class SIDDIENDataset(SIDFieldsMixin, ProtocolMixin, DIENHistoryMixin, PositiveHistoryMixin, DIENDataset):
    """RecBole's ``DIENDataset`` under the project's protocol: positive-only histories, padded when
    empty, and negatives sampled outside the user's positives (recbole_psrq/data/history.py)."""


class SIDKnowledgeBasedDataset(SIDFieldsMixin, ProtocolMixin, KnowledgeBasedDataset):
    """RecBole ``KnowledgeBasedDataset`` (knowledge-aware models) with SID item fields."""


class SIDGRU4RecKGDataset(SIDFieldsMixin, ProtocolMixin, PositiveHistoryMixin, GRU4RecKGDataset):
    """RecBole's ``GRU4RecKGDataset`` with SID item fields and positive-only histories."""


class SIDKSRDataset(SIDFieldsMixin, ProtocolMixin, PositiveHistoryMixin, KSRDataset):
    """RecBole's ``KSRDataset`` with SID item fields and positive-only histories."""


# RecBole's dataset class (what recbole.data.create_dataset would build) -> the project's subclass.
PROJECT_DATASETS = {
    "Dataset": SIDDataset,
    "SequentialDataset": SIDSequentialDataset,
    "DIENDataset": SIDDIENDataset,
    "KnowledgeBasedDataset": SIDKnowledgeBasedDataset,
    "GRU4RecKGDataset": SIDGRU4RecKGDataset,
    "KSRDataset": SIDKSRDataset,
}
_RECBOLE_TYPE_CLASSES = {  # as in recbole.data.utils.create_dataset
    ModelType.GENERAL: "Dataset",
    ModelType.SEQUENTIAL: "SequentialDataset",
    ModelType.CONTEXT: "Dataset",
    ModelType.KNOWLEDGE: "KnowledgeBasedDataset",
    ModelType.TRADITIONAL: "Dataset",
    ModelType.DECISIONTREE: "Dataset",
}


def recbole_dataset_class(model_name, model_type):
    """Name of the class ``recbole.data.create_dataset`` builds: ``<Model>Dataset`` if RecBole has one,
    else the class of the model type."""
    recbole_datasets = importlib.import_module("recbole.data.dataset")
    special = model_name + "Dataset"
    return special if hasattr(recbole_datasets, special) else _RECBOLE_TYPE_CLASSES[model_type]


def create_dataset(config):
    """Like ``recbole.data.create_dataset``, but every class it could pick is replaced by the project's
    subclass with the SID hook and the protocol (``PROJECT_DATASETS``)."""
    name = recbole_dataset_class(config["model"], config["MODEL_TYPE"])
    if name not in PROJECT_DATASETS:
        raise ConfigError(
            f"{config['model']} needs RecBole's {name}, which has behaviour of its own that the project's "
            "protocol does not cover yet; add a subclass with SIDFieldsMixin and ProtocolMixin to "
            "PROJECT_DATASETS in recbole_psrq/data/dataset.py.")
    return PROJECT_DATASETS[name](config)
