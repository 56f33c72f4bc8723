"""Item embedding files: one matrix per modality, aligned to item tokens by an explicit id column.

Format (``<dataset>.<modality>.npz``, written by :func:`save_item_embeddings`):
    ``item_id``   1-d array of str, the raw item tokens of the ``.item`` / ``.inter`` files
    ``embedding`` 2-d float array (N, d), row i belongs to ``item_id[i]``
Rows are never matched by position alone: readers always go through ``item_id``.

A modality is a name (``text``, ``audio``, ``image``, ``lyrics``, ...) that becomes the item field
``<name>_sid``; :func:`check_modality_name` is the rule, shared by the SID hook and the encoders.
"""
import os
import re
import zipfile

import numpy as np

from recbole_psrq.errors import ConfigError, DataFormatError
from recbole_psrq.io import atomic_open

_MODALITY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*$")
# "joint" is the joint SID, "id" MCCA's item-ID branch
RESERVED_MODALITIES = ("joint", "id")


def check_modality_name(name, where):
    """Raise a :class:`ConfigError` naming ``where`` unless ``name`` can be a modality."""
    if not isinstance(name, str) or not _MODALITY_NAME.match(name) or name in RESERVED_MODALITIES:
        raise ConfigError(
            f"{where}: {name!r} cannot be a modality name: a name becomes the item field '<name>_sid', so it "
            f"must start with a letter and hold only letters, digits and '_', and {list(RESERVED_MODALITIES)} "
            "are reserved (the joint SID, MCCA's ID branch). Use e.g. text, audio, image or lyrics."
        )


def save_item_embeddings(path, item_ids, embedding, dtype=np.float16):
    """Write ``(item_ids, embedding)`` atomically. float16 keeps shipped files small; readers upcast."""
    item_ids = np.asarray([str(i) for i in item_ids])
    embedding = np.asarray(embedding)
    if embedding.ndim != 2 or embedding.shape[0] != len(item_ids):
        raise DataFormatError(
            f"{path}: embedding has shape {embedding.shape} but there are {len(item_ids)} item ids; "
            "pass one row per item id."
        )
    _check_unique(item_ids, path)
    with atomic_open(path) as f:
        _write_npz_deterministic(f, {"item_id": item_ids, "embedding": embedding.astype(dtype)})


def _write_npz_deterministic(fileobj, arrays):
    # np.savez stamps the current time into the zip entries; a fixed timestamp makes regenerated files
    # byte-identical for identical content (the synthetic dataset's reproducibility test relies on it).
    with zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asarray(array), allow_pickle=False)


def load_item_embeddings(path):
    """Return ``(item_ids: ndarray[str], embedding: float32 ndarray (N, d))`` from an ``.npz`` file."""
    if not os.path.isfile(path):
        raise DataFormatError(
            f"Embedding file not found: {path}. Create it with "
            "recbole_psrq.data.embeddings.save_item_embeddings(path, item_ids, matrix) "
            "or point the config's sid_embedding_files at an existing file."
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"item_id", "embedding"} - set(data.files)
            if missing:
                raise DataFormatError(
                    f"{path}: missing array(s) {sorted(missing)}; an item embedding file needs "
                    "'item_id' (item tokens) and 'embedding' (N x d)."
                )
            item_ids = data["item_id"].astype(str)
            embedding = data["embedding"].astype(np.float32)
    except (OSError, ValueError) as e:
        if isinstance(e, DataFormatError):
            raise
        raise DataFormatError(f"{path}: not a readable .npz embedding file ({e}).") from e
    if embedding.ndim != 2 or embedding.shape[0] != len(item_ids):
        raise DataFormatError(
            f"{path}: 'embedding' has shape {embedding.shape} but 'item_id' has {len(item_ids)} "
            "entries; they must have one row per id."
        )
    _check_unique(item_ids, path)
    return item_ids, embedding


def _check_unique(item_ids, path):
    uniq, counts = np.unique(item_ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][:5].tolist()
        raise DataFormatError(
            f"{path}: duplicate item ids {dup} ({int((counts > 1).sum())} in all); "
            "each item must have exactly one embedding row."
        )
