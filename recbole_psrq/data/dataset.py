"""RecBole dataset classes with the semantic-ID hook, and the project's ``create_dataset``.

:class:`SIDFieldsMixin` overrides ``Dataset._load_data``: after RecBole has read the atomic files (raw
tokens, before remapping and filtering), it adds the item fields ``text_sid`` / ``audio_sid`` /
``joint_sid`` as level-prefixed ``token_seq`` features (see :mod:`recbole_psrq.data.sid_fields`), so
RecBole remaps, filters and serves them like any loaded item feature. Config keys (defaults in
``properties/overall.yaml``):

    sid_modalities: [text, audio, joint]   # which SID fields to add; [] = none
    sid_embedding_files: {text: x.text.npz, audio: x.audio.npz}   # relative to the dataset folder
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
"""
import importlib
import os

import numpy as np
from recbole.data.dataset import Dataset, SequentialDataset
from recbole.utils import FeatureSource, FeatureType, ModelType

from recbole_psrq.data.history import PositiveHistoryMixin
from recbole_psrq.data.sid_fields import compute_sid_tokens, read_item_labels
from recbole_psrq.errors import ConfigError


class SIDFieldsMixin:
    """Adds semantic-ID item fields while RecBole loads the data (see module docstring)."""

    def _load_data(self, token, dataset_path):
        super()._load_data(token, dataset_path)
        modalities = list(self.config["sid_modalities"] or [])
        if modalities:
            self._add_sid_fields(modalities, token, dataset_path)

    def _add_sid_fields(self, modalities, token, dataset_path):
        import pandas as pd

        config = self.config
        iid = self.iid_field
        item_ids = pd.unique(self.inter_feat[iid].astype(str))
        if self.item_feat is not None:
            item_ids = pd.unique(np.concatenate([item_ids, self.item_feat[iid].astype(str)]))
        embedding_files = {m: os.path.join(dataset_path, path)
                           for m, path in (config["sid_embedding_files"] or {}).items()}
        labels = None
        label_column = config["sid_report_label_column"]
        item_file = os.path.join(dataset_path, f"{token}.item")
        if label_column and os.path.isfile(item_file):
            labels = read_item_labels(item_file, label_column, iid, config["field_separator"])
        n_levels = config["sid_levels"]
        fields = compute_sid_tokens(
            item_ids, embedding_files, modalities,
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


class SIDDataset(SIDFieldsMixin, Dataset):
    """RecBole ``Dataset`` (general and context-aware models) with SID item fields."""


class SIDSequentialDataset(SIDFieldsMixin, PositiveHistoryMixin, SequentialDataset):
    """RecBole ``SequentialDataset`` with SID item fields and, with ``history_positive_only`` (the CTR
    protocol), histories built from the user's earlier positive rows only."""


def create_dataset(config):
    """Like ``recbole.data.create_dataset``, with the SID hook for general, context-aware and
    sequential models. RecBole's model-specific dataset classes are kept; they get no SID fields."""
    recbole_datasets = importlib.import_module("recbole.data.dataset")
    special = getattr(recbole_datasets, config["model"] + "Dataset", None)
    if special is not None:
        if config["sid_modalities"]:
            raise ConfigError(f"{config['model']} uses RecBole's {special.__name__}, which the SID "
                              "hook does not extend; set sid_modalities: [] for this model.")
        return special(config)
    model_type = config["MODEL_TYPE"]
    if model_type == ModelType.SEQUENTIAL:
        return SIDSequentialDataset(config)
    if model_type in (ModelType.GENERAL, ModelType.CONTEXT, ModelType.TRADITIONAL):
        return SIDDataset(config)
    if config["sid_modalities"]:
        raise ConfigError(f"SID fields are not supported for {model_type.name} models; set "
                          "sid_modalities: [].")
    from recbole.data import create_dataset as recbole_create_dataset

    return recbole_create_dataset(config)
