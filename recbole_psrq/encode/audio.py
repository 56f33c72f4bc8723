"""Offline audio embeddings for items: a weight-free descriptor (default) or any local Hugging Face audio model.

:func:`encode_audio` reads each item's file (:mod:`recbole_psrq.encode.audio_io`: decoding, cropping,
resampling, the silence check, segments), embeds it with the method asked for (``"descriptor"``:
:mod:`recbole_psrq.encode.audio_descriptor`; ``"hf"``: :mod:`recbole_psrq.encode.audio_hf`), caches one
vector per item and writes the project embedding file.

Cache
    One ``.npy`` per item under ``cache_dir`` (default ``$RECBOLE_PSRQ_CACHE/audio_encoder`` or
    ``./cache/audio_encoder``), keyed by a SHA-256 over the file's *content* (SHA-256 of its bytes) and
    every option that changes the vector (method, rates, crop, segments, descriptor settings, resampler,
    model id, layers, dtype). Content digests are remembered in ``file_digests.json`` keyed by
    (path, size, mtime_ns, ctime_ns, inode), so unchanged files are not re-read on later calls; any rewrite
    of a file changes its ctime and forces a re-hash. All cache writes are atomic.

CLI (:mod:`recbole_psrq.encode.cli`)::

    python -m recbole_psrq.encode audio --items converted/x/x.item_audio.tsv --audio-root AUDIO_DIR \\
        --out converted/x/x.audio.npz [--method descriptor|hf] [--model-path DIR] [--layers all|last|0,6,12] \\
        [--max-seconds 30] [--segment-seconds 10 --n-segments 3] [--report x.audio_report.json]

``--items`` is a TAB-separated file with a header holding at least the columns ``item_id`` and ``path``
(relative paths are resolved against ``--audio-root``, default the items file's folder); ``--dataset DIR``
instead embeds the items of a converted dataset and registers the file in its yaml.
"""
import collections
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import sys
import time

import numpy as np

from recbole_psrq.encode import audio_hf
from recbole_psrq.encode.audio_descriptor import DescriptorConfig, compute_descriptor
from recbole_psrq.encode.audio_io import AudioDecodeError, _one_line, _read_segments, resolve_resample_backend
from recbole_psrq.errors import ConfigError, DataFormatError
from recbole_psrq.io import atomic_open, atomic_save_npy, cache_dir, file_digest

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
DEFAULT_MAX_SECONDS = 30.0
DEFAULT_SILENCE_DB = -60.0
DEFAULT_BATCH_SIZE = 8
METHODS = ("descriptor", "hf")


def default_cache_dir():
    """``$RECBOLE_PSRQ_CACHE/audio_encoder`` if set, else ``./cache/audio_encoder`` (git-ignored at the repo root)."""
    return cache_dir("audio_encoder")


# --------------------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------------------

class _DigestIndex:
    """Content digests remembered per (path, size, mtime_ns, ctime_ns, inode) in ``file_digests.json``."""

    def __init__(self, cache_dir, enabled=True):
        self.path = os.path.join(cache_dir, "file_digests.json") if enabled else None
        self.entries, self.dirty = {}, False
        if self.path and os.path.isfile(self.path):
            try:
                with open(self.path, encoding="utf-8") as f:
                    self.entries = dict(json.load(f))
            except (OSError, ValueError, TypeError):
                self.entries = {}  # unreadable index: rebuild

    def digest(self, path):
        st = os.stat(path)
        stamp = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"
        d = self.entries.get(stamp)
        if d is None:
            d = file_digest(path)
            if self.path:
                self.entries[stamp] = d
                self.dirty = True
        return d

    def save(self):
        if self.path and self.dirty:
            with atomic_open(self.path, "w", encoding="utf-8") as f:
                json.dump(self.entries, f, sort_keys=True)
            self.dirty = False


def options_key(options):
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()


def item_cache_key(content_digest, options_digest):
    return hashlib.sha256(f"{content_digest}:{options_digest}".encode()).hexdigest()


def _cache_file(cache_dir, key):
    return os.path.join(cache_dir, key[:2], f"audio-{key[:40]}.npy")


def _load_cached(path, dim):
    try:
        v = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # unreadable entry: recompute and overwrite
    if v.ndim != 1 or (dim is not None and v.shape[0] != dim) or not np.isfinite(v).all():
        return None
    return v.astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------------------
# encode_audio
# --------------------------------------------------------------------------------------------------------

def _standardize(matrix):
    if matrix.shape[0] < 2:
        return matrix
    mean = matrix.mean(axis=0, dtype=np.float64)
    std = matrix.std(axis=0, dtype=np.float64)
    std[std < 1e-8] = 1.0
    return ((matrix - mean) / std).astype(np.float32)


def encode_audio(item_ids, paths, method="descriptor", model_path=None, *, audio_root=None,
                 max_seconds=DEFAULT_MAX_SECONDS, offset_seconds=0.0, segment_seconds=None, n_segments=1,
                 silence_db=DEFAULT_SILENCE_DB, descriptor_config=None, layers="all", dtype="float32",
                 trust_remote_code=False, batch_size=DEFAULT_BATCH_SIZE, standardize=None,
                 resample_backend="auto", cache_dir=None, use_cache=True, out_path=None, progress=True):
    """Embed the audio file of each item; return ``(item_ids ndarray[str], float32 matrix (n, d), report)``.

    Items whose file cannot be used (missing, unreadable, empty, silent, model error) are skipped and listed
    in ``report["failed"]`` as ``{"item_id", "path", "reason"}`` (and logged); the returned ids/matrix and
    the ``out_path`` file (``save_item_embeddings``) hold only the encoded items, in input order. Raises
    :class:`DataFormatError` only for caller mistakes (length mismatch, duplicate ids) or when *no* item
    could be encoded.

    ``method="descriptor"``: the weight-free descriptor (``descriptor_config``: :class:`DescriptorConfig`,
    its ``sample_rate`` is the analysis rate). ``method="hf"``: the local Hugging Face model at
    ``model_path`` (``layers``, ``dtype`` "float32"/"bfloat16", ``trust_remote_code``, ``batch_size``).
    ``standardize`` (default: True for the descriptor, False for hf) z-scores each column over the encoded
    items. ``report`` also holds ``n_items``, ``encoded``, ``cache_hits``, ``computed``, ``dim``,
    ``seconds``, ``sample_rate``, ``method``.
    """
    from recbole_psrq.data.embeddings import save_item_embeddings
    from tqdm.auto import tqdm

    t0 = time.time()
    item_ids = [str(i) for i in item_ids]
    paths = list(paths)
    if len(item_ids) != len(paths):
        raise DataFormatError(f"encode_audio: got {len(item_ids)} item ids but {len(paths)} paths; pass "
                              "exactly one audio path per item id.")
    if len(set(item_ids)) != len(item_ids):
        dup = sorted(i for i, n in collections.Counter(item_ids).items() if n > 1)[:5]
        raise DataFormatError(f"encode_audio: duplicate item ids {dup}; each item needs exactly one audio file.")
    if method not in METHODS:
        raise ConfigError(f"method must be one of {list(METHODS)}, got {method!r}.")
    if segment_seconds is not None and segment_seconds <= 0:
        raise ConfigError(f"segment_seconds must be > 0 or None, got {segment_seconds}.")
    if int(n_segments) < 1:
        raise ConfigError(f"n_segments must be >= 1, got {n_segments}.")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    if dtype not in audio_hf._DTYPES:
        raise ConfigError(f"dtype must be one of {list(audio_hf._DTYPES)}, got {dtype!r}.")
    backend = resolve_resample_backend(resample_backend)
    as_float = (lambda v: None if v is None else float(v))  # 30 and 30.0 must give the same cache key
    options = {"v": CACHE_VERSION, "method": method, "max_seconds": as_float(max_seconds),
               "offset_seconds": float(offset_seconds), "segment_seconds": as_float(segment_seconds),
               "n_segments": int(n_segments) if segment_seconds else 1, "resample": backend}
    fe = model = None
    if method == "descriptor":
        dcfg = descriptor_config or DescriptorConfig()
        if not isinstance(dcfg, DescriptorConfig):
            raise ConfigError("descriptor_config must be a recbole_psrq.encode.audio_descriptor.DescriptorConfig.")
        sample_rate, dim = dcfg.sample_rate, dcfg.dim
        options["descriptor"] = dataclasses.asdict(dcfg)
    else:
        from recbole_psrq.encode.text import model_id

        folder = audio_hf.resolve_model_path(model_path)
        layers = audio_hf._check_layers(layers)
        sample_rate, dim = audio_hf._model_sampling_rate(folder), None
        if sample_rate is None:  # not in preprocessor_config.json: ask the loaded feature extractor
            fe, model = audio_hf._load_model(folder, trust_remote_code=trust_remote_code, dtype=dtype)
            sample_rate = int(fe.sampling_rate)
        options.update({"model": model_id(folder), "layers": layers, "dtype": dtype})
    options["sample_rate"] = sample_rate
    opt_digest = options_key(options)
    if standardize is None:
        standardize = method == "descriptor"

    cache_dir = default_cache_dir() if cache_dir is None else os.fspath(cache_dir)
    digests = _DigestIndex(cache_dir, enabled=use_cache)
    root = None if audio_root is None else os.fspath(audio_root)
    vectors, failed, hits, full_paths = {}, {}, 0, {}
    pending = []  # (index, path, cache_file)
    for i, p in enumerate(paths):
        if p is None or (isinstance(p, float) and math.isnan(p)) or str(p).strip() == "":
            failed[i] = ("" if p is None else str(p), "no audio path given")
            continue
        full = os.fspath(p)
        if root is not None and not os.path.isabs(full):
            full = os.path.join(root, full)
        full_paths[i] = full
        if not os.path.isfile(full):
            failed[i] = (full, "file not found")
            continue
        cfile = None
        if use_cache:
            try:
                cfile = _cache_file(cache_dir, item_cache_key(digests.digest(full), opt_digest))
            except OSError as e:
                failed[i] = (full, f"cannot read file ({_one_line(e)})")
                continue
            if os.path.isfile(cfile):
                v = _load_cached(cfile, dim)
                if v is not None:
                    vectors[i] = v
                    hits += 1
                    continue
        pending.append((i, full, cfile))
    digests.save()

    read = functools.partial(_read_segments, sample_rate=sample_rate, max_seconds=max_seconds,
                             offset_seconds=offset_seconds, segment_seconds=segment_seconds,
                             n_segments=int(n_segments), silence_db=silence_db, resample_backend=backend)
    chunk = max(1, batch_size) * 4 if method == "hf" else 1
    with tqdm(total=len(pending), desc=f"audio encoder ({method})", unit="file", disable=not progress) as bar:
        for start in range(0, len(pending), chunk):
            part = pending[start:start + chunk]
            segs = {}
            for i, full, _ in part:
                try:
                    segs[i] = read(full)
                except AudioDecodeError as e:
                    failed[i] = (full, e.reason)
            if method == "descriptor":
                for i in list(segs):
                    try:
                        vectors[i] = compute_descriptor(segs[i], dcfg)
                    except (RuntimeError, ValueError) as e:
                        failed[i] = (full_paths[i], f"descriptor failed ({_one_line(e)})")
            else:
                if model is None and segs:  # loaded only when some item is not in the cache
                    fe, model = audio_hf._load_model(folder, trust_remote_code=trust_remote_code, dtype=dtype)
                    if int(fe.sampling_rate) != sample_rate:
                        raise ConfigError(f"{folder}: the feature extractor reports sampling_rate "
                                          f"{fe.sampling_rate}, preprocessor_config.json says {sample_rate}.")
                out, errors = audio_hf._run_hf(segs, fe, model, layers, batch_size)
                vectors.update(out)
                for i, reason in errors.items():
                    failed[i] = (full_paths[i], reason)
            for i, _, cfile in part:
                if cfile is not None and i in vectors and np.isfinite(vectors[i]).all():
                    atomic_save_npy(cfile, vectors[i])
                elif i in vectors and not np.isfinite(vectors[i]).all():
                    del vectors[i]
                    failed[i] = (full_paths[i], "non-finite embedding")
            bar.update(len(part))

    order = [i for i in range(len(item_ids)) if i in vectors]
    failures = [{"item_id": item_ids[i], "path": failed[i][0], "reason": failed[i][1]} for i in sorted(failed)]
    for f in failures:
        logger.warning("audio encoder: item %s skipped: %s (%s)", f["item_id"], f["reason"], f["path"])
    if item_ids and not order:
        first = "; ".join(f"{f['item_id']}: {f['reason']}" for f in failures[:3])
        raise DataFormatError(
            f"encode_audio: none of the {len(item_ids)} audio files could be encoded ({first}...). Check the "
            "paths / --audio-root and the file formats (wav, flac, ogg, mp3).")
    if order:
        matrix = np.stack([vectors[i] for i in order]).astype(np.float32)
    else:
        matrix = np.zeros((0, dim or 0), dtype=np.float32)
    if standardize:
        matrix = _standardize(matrix)
    ids = np.asarray([item_ids[i] for i in order])
    dt = time.time() - t0
    report = {"method": method, "n_items": len(item_ids), "encoded": len(order), "failed": failures,
              "cache_hits": hits, "computed": len(order) - hits, "dim": int(matrix.shape[1]),
              "sample_rate": sample_rate, "standardized": bool(standardize), "seconds": round(dt, 3)}
    if progress:
        print(f"[audio encoder] {len(order)}/{len(item_ids)} items encoded ({hits} from cache, "
              f"{len(failures)} skipped) in {dt:.1f}s, {matrix.shape[1]} dims, method {method}", file=sys.stderr)
    if out_path is not None:
        save_item_embeddings(out_path, ids, matrix)
        report["out_path"] = os.fspath(out_path)
    return ids, matrix, report
