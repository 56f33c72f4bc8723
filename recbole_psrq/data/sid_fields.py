"""Item -> semantic-ID tokens for the modal-specific and joint SID fields, with a cache.

This is the data side of stage 1, independent of RecBole: :class:`~recbole_psrq.data.dataset.SIDFieldsMixin`
calls :func:`compute_sid_tokens` while RecBole loads a dataset.

* **Token format.** An item's SID (a_1..a_L) becomes the level-prefixed tokens ``"l1_a1 l2_a2 ..."`` of
  a RecBole ``token_seq`` field, so every level keeps its own vocabulary after RecBole's remapping and
  feature-aware models that pool a token_seq (DIN, DeepFM, SASRecF, FDSA) still see which level a
  code came from.
* **Modalities are names.** ``sid_embedding_files`` declares them, ``{name: file}`` in any number and
  order (``text``, ``audio``, ``image``, ``lyrics``, ...); modality ``name`` becomes the field
  ``<name>_sid``, its cache folders and its quality report. ``sid_modalities: all`` = every declared
  modality, then ``joint``.
* **Joint SID.** The quantizer runs on ``[l2norm(x_1) ; ... ; l2norm(x_n)]`` over the modalities of
  ``joint_modalities`` (default: every declared one, in declaration order; SPEC: modal-joint IDs), so
  every modality weighs the same whatever its width. The joint SID of a single modality is that
  modality's SID: the same codes, fitted once.
* **Missing modality policy.** An item of the dataset absent from a modality's embedding file gets
  the reserved tokens ``l1_unk .. lL_unk`` for that modality (and for the joint field) and a warning
  with the count and a few ids. If more than ``max_missing_fraction`` of the items are absent (or none
  match), the ids almost surely do not correspond and an error names the file and example ids of both
  sides. Embedding rows for items not in the dataset are ignored (logged).
* **Cache.** Each fit is stored under ``<cache_dir>/<dataset>/<field>-<quantizer>-<key>/`` with the
  fitted quantizer, the item -> codes table, the quality report and, written last, ``manifest.json``
  with the sha256 of each of them; the folder is written under a temporary name and renamed into place
  (atomic). ``key`` hashes the exact fit input (item ids + matrix) and the quantizer config, so a second
  run reuses it and a changed embedding file gets a new entry. An entry is verified against its manifest
  when read: a corrupt one (truncated, edited, no manifest) is refit with a warning. With
  ``allow_fit=False`` (checkpoint evaluation) a missing or corrupt entry is an error, never a refit.
"""
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid

import numpy as np

from recbole_psrq.data.embeddings import check_modality_name, load_item_embeddings
from recbole_psrq.errors import ConfigError, DataFormatError
from recbole_psrq.io import atomic_open, file_digest

JOINT = "joint"
UNKNOWN = "unk"
MANIFEST = "manifest.json"
logger = logging.getLogger(__name__)


def sid_tokens(codes):
    """(N, L) int codes -> list of ``"l1_c1 l2_c2 ..."`` strings."""
    return [" ".join(f"l{j + 1}_{c}" for j, c in enumerate(row)) for row in np.asarray(codes)]


def unknown_tokens(n_levels):
    return " ".join(f"l{j + 1}_{UNKNOWN}" for j in range(n_levels))


def sid_field(modality):
    """The item field of a modality's (or ``joint``'s) semantic ID."""
    return f"{modality}_sid"


def declared_modalities(embedding_files):
    """The modality names ``sid_embedding_files`` declares, in declaration order."""
    names = list(embedding_files or {})
    for name in names:
        check_modality_name(name, "sid_embedding_files (rename the key in the dataset yaml)")
        if not embedding_files[name]:
            raise ConfigError(
                f"sid_embedding_files declares the modality '{name}' without an embedding file. Give its "
                f"file (`{name}: <dataset>.{name}.npz`, relative to the dataset folder; `python -m "
                f"recbole_psrq.encode` writes and registers it) or remove the key."
            )
    return names


def resolve_modalities(modalities, embedding_files, joint_modalities=None):
    """``(modalities, joint_modalities)`` as lists of names, checked against the declared ones.

    ``modalities`` is the value of ``sid_modalities`` (a list of declared names and ``joint``, or
    ``all``); ``joint_modalities`` that of ``sid_joint_modalities`` (``None``: every declared one)."""
    declared = declared_modalities(embedding_files)
    how_to_declare = ("Declare a modality with its embedding file under sid_embedding_files in the dataset "
                      "yaml (e.g. `sid_embedding_files: {lyrics: x.lyrics.npz}`; `python -m "
                      "recbole_psrq.encode` registers the files it writes)")
    if modalities == "all":
        modalities = declared + [JOINT]
    elif isinstance(modalities, str):
        raise ConfigError(f"sid_modalities: {modalities!r} is neither a list of modality names nor 'all'; "
                          f"write e.g. `sid_modalities: [text, joint]` or `sid_modalities: all`.")
    modalities = list(modalities)
    unknown = [m for m in modalities if m != JOINT and m not in declared]
    if unknown:
        raise ConfigError(
            f"sid_modalities: unknown modality {unknown}: sid_embedding_files declares {declared}, and "
            f"'{JOINT}' is the joint SID. {how_to_declare}, or drop {unknown} from sid_modalities."
        )
    if JOINT in modalities and not declared:
        raise ConfigError(
            f"sid_modalities ({modalities}) asks for the joint SID, but sid_embedding_files declares no "
            f"modality. {how_to_declare}, or set `sid_modalities: []` (no SID fields)."
        )
    if joint_modalities is None:
        joint_modalities = declared
    joint_modalities = list(joint_modalities)
    undeclared = [m for m in joint_modalities if m not in declared]
    if undeclared or len(set(joint_modalities)) != len(joint_modalities) or (
            JOINT in modalities and not joint_modalities):
        raise ConfigError(
            f"sid_joint_modalities: {joint_modalities} must list one or more distinct declared modalities "
            f"(sid_embedding_files declares {declared}); the joint SID quantizes their concatenation. "
            f"{how_to_declare}, or fix the list (unset, it is every declared modality)."
        )
    return modalities, joint_modalities


def compute_sid_tokens(item_ids, embedding_files, modalities, joint_modalities=None, quantizer="psrq",
                       n_levels=3, codebook_size=64, seed=0, quantizer_options=None,
                       quantizer_files=None, cache_dir="saved/sid_cache", dataset_name="dataset",
                       labels=None, allow_fit=True, max_missing_fraction=0.5):
    """Return ``{field: [token string per item]}`` aligned with ``item_ids`` for each requested modality.

    ``embedding_files``: ``{modality: path}``, the declared modalities; ``modalities``: some of them
    and ``joint``, or ``all``; ``joint_modalities``: what the joint SID concatenates (default: every
    declared modality); ``quantizer_files``: optional ``{modality: path}`` of already fitted
    quantizers (encode only); ``labels``: optional ``{item_id: label}`` for the quality report.
    """
    modalities, joint_modalities = resolve_modalities(modalities, embedding_files, joint_modalities)
    item_ids = np.asarray([str(i) for i in item_ids])
    needed = list(dict.fromkeys([m for m in modalities if m != JOINT] +
                                (joint_modalities if JOINT in modalities else [])))
    matrices = {m: _aligned_embeddings(item_ids, _embedding_path(embedding_files, m), m,
                                       max_missing_fraction) for m in needed}
    settings = dict(quantizer=quantizer, n_levels=n_levels, codebook_size=codebook_size, seed=seed,
                    options=dict(quantizer_options or {}))
    codes_of = {}  # what was quantized -> (present mask, codes); the joint SID of one modality is its SID
    fields = {}
    for modality in modalities:
        source = modality
        if modality == JOINT and len(joint_modalities) == 1:
            source = joint_modalities[0]
        if source not in codes_of:
            if source == JOINT:
                present = np.logical_and.reduce([matrices[m][0] for m in joint_modalities])
                x = np.concatenate([_l2(matrices[m][1][present[matrices[m][0]]]) for m in joint_modalities],
                                   axis=1)
                _warn_missing(JOINT, item_ids, present, " or ".join(joint_modalities))
            else:
                present, x = matrices[source]
            quantizer_file = (quantizer_files or {}).get(source)
            codes_of[source] = present, _cached_codes(item_ids[present], x, source, settings, quantizer_file,
                                                      cache_dir, dataset_name, labels, allow_fit)
        present, codes = codes_of[source]
        tokens = np.full(len(item_ids), unknown_tokens(codes.shape[1]), dtype=object)
        tokens[present] = sid_tokens(codes)
        fields[sid_field(modality)] = tokens.tolist()
    return fields


def _embedding_path(embedding_files, modality):
    path = embedding_files[modality]
    if not os.path.isfile(path):
        raise ConfigError(
            f"sid_embedding_files: the {modality} embedding file {path} does not exist. Write it (`python -m "
            f"recbole_psrq.encode text|audio|table --dataset <folder>` registers what it writes), fix the "
            f"path (relative to the dataset folder), or remove '{modality}' from sid_embedding_files."
        )
    return path


def _aligned_embeddings(item_ids, path, modality, max_missing_fraction):
    """Rows of ``path`` matched to ``item_ids`` by id. Returns (present mask, matrix of present rows)."""
    file_ids, matrix = load_item_embeddings(path)
    row_of = {item: row for row, item in enumerate(file_ids)}
    rows = np.array([row_of.get(item, -1) for item in item_ids])
    present = rows >= 0
    missing = int((~present).sum())
    if present.sum() == 0 or missing > max_missing_fraction * len(item_ids):
        raise DataFormatError(
            f"{path}: {missing} of the dataset's {len(item_ids)} items have no {modality} "
            f"embedding (dataset ids like {item_ids[:3].tolist()}, file ids like "
            f"{file_ids[:3].tolist()}). The ids probably do not correspond: write the embedding "
            "file with the dataset's raw item tokens in its 'item_id' array (or raise "
            "sid_max_missing_fraction if this many items really lack this modality)."
        )
    _warn_missing(modality, item_ids, present, path)
    extra = len(file_ids) - int(present.sum())
    if extra:
        logger.info(f"{path}: {extra} embedding rows belong to items not in the dataset; ignored.")
    x = matrix[rows[present]]
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        names = item_ids[present][bad]
        raise DataFormatError(
            f"{path}: {int(bad.sum())} item(s) have NaN/inf values in their {modality} embedding, "
            f"e.g. {names[:5].tolist()}. Re-encode those items, or remove their rows from the file "
            "(they then get the reserved unknown SID)."
        )
    return present, x


def _warn_missing(modality, item_ids, present, source):
    missing = int((~present).sum())
    if missing:
        logger.warning(
            f"{missing} of {len(item_ids)} items have no {modality} embedding ({source}), e.g. "
            f"{item_ids[~present][:5].tolist()}; they get the reserved unknown {modality} SID "
            f"'{UNKNOWN}' at every level."
        )


def _l2(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _cache_key(ids, x, modality, settings, quantizer_file):
    from recbole_psrq.quantization import QUANTIZERS

    # the quantizer's option defaults are part of the key: a changed default (e.g. RQ-VAE's epochs) refits
    quantizer = QUANTIZERS.get(settings["quantizer"])
    defaults = quantizer.allowed_options() if quantizer else {}
    h = hashlib.sha256()
    h.update(json.dumps({"modality": modality, **settings, "defaults": defaults}, sort_keys=True,
                        default=str).encode())
    h.update("\n".join(ids).encode())
    h.update(str(x.shape).encode())
    h.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    if quantizer_file:
        with open(quantizer_file, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


def _cached_codes(ids, x, modality, settings, quantizer_file, cache_dir, dataset_name, labels,
                  allow_fit):
    from recbole_psrq.quantization import build_quantizer, load_quantizer, sid_quality_report
    from recbole_psrq.quantization.kmeans import kmeans_gpus

    field = sid_field(modality)
    key = _cache_key(ids, x, modality, settings, quantizer_file)
    entry = os.path.join(cache_dir, dataset_name, f"{field}-{settings['quantizer']}-{key}")
    if os.path.isdir(entry):
        codes, problem = _read_entry(entry, ids)
        if problem is None:
            logger.info(f"{field}: reusing cached SIDs {entry} (no refit)")
            return codes
        if not allow_fit:
            raise ConfigError(
                f"{field}: the cached SIDs in {entry} are corrupt ({problem}), and this run may not fit "
                "quantizers (evaluation never refits, so that test-time SIDs equal training-time SIDs). "
                f"Delete the folder {entry} and rerun the training (it refits and rewrites the entry), "
                "or restore that folder from a copy."
            )
        logger.warning(f"{field}: the cached SIDs in {entry} are corrupt ({problem}); removing the entry "
                       "and refitting.")
        _discard_entry(entry)
    elif not allow_fit:
        raise ConfigError(
            f"{field}: no cached SIDs at {entry}, and this run may not fit quantizers (evaluation "
            "never refits, so that test-time SIDs equal training-time SIDs). Restore that cache "
            "folder (sid_cache_dir) or retrain."
        )

    start = time.time()
    if quantizer_file:
        quantizer = load_quantizer(quantizer_file)
        if quantizer.dim != x.shape[1]:
            raise DataFormatError(
                f"{quantizer_file}: this quantizer was fitted on {quantizer.dim}-d {modality} "
                f"embeddings but the current ones are {x.shape[1]}-d. The embedding model changed "
                "since the quantizer was saved: refit (remove sid_quantizer_files) or restore the "
                "original embeddings."
            )
        action = f"loaded {quantizer_file}"
    else:
        quantizer = build_quantizer(settings["quantizer"], n_levels=settings["n_levels"],
                                    codebook_size=settings["codebook_size"], seed=settings["seed"],
                                    **settings["options"])
        logger.info(f"{field}: fitting {settings['quantizer']} (L={settings['n_levels']}, "
                    f"k={settings['codebook_size']}) on {x.shape[0]} items x {x.shape[1]} dims")
        quantizer.fit(x)
        action = "fitted"
    codes = quantizer.encode(x)
    fit_seconds = time.time() - start
    # items without a label are left out of the label metrics (the report skips None); when no item of
    # this field has one (labels of other items only), the report has no label metrics
    item_labels = np.array([labels.get(i) for i in ids], dtype=object) if labels else None
    if item_labels is not None and all(label is None for label in item_labels):
        logger.warning(f"{field}: no item has a label in the labels given; the quality report has no "
                       "label metrics")
        item_labels = None
    report = sid_quality_report(x, codes, labels=item_labels, quantizer=quantizer, name=field)
    report["fit_seconds"] = fit_seconds
    report["kmeans_device"] = "gpu" if kmeans_gpus() else "cpu"  # GPU centroids differ in the last bits
    logger.info(f"{field}: {action} in {fit_seconds:.1f}s; quality report: "
                f"{json.dumps(_rounded(report))}")
    for warning in report["warnings"]:
        logger.warning(warning)
    _write_entry(entry, quantizer, ids, codes, report, settings, modality)
    return codes


def _read_entry(entry, ids):
    """``(codes, None)`` from a cache entry that matches its manifest, else ``(None, what is wrong)``."""
    try:
        with open(os.path.join(entry, MANIFEST)) as f:
            expected = json.load(f)["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, f"no readable {MANIFEST}: {type(e).__name__}: {e}"
    for name in ("sids.npz", *sorted(expected)):
        path = os.path.join(entry, name)
        if name not in expected or not os.path.isfile(path):
            return None, f"{name} is missing"
        if file_digest(path) != expected[name]:
            return None, f"{name} does not match the sha256 in {MANIFEST}"
    with np.load(os.path.join(entry, "sids.npz"), allow_pickle=False) as data:
        if not np.array_equal(data["item_id"].astype(str), ids):
            return None, "its item ids differ from the dataset's"
        return data["codes"], None


def _discard_entry(entry):
    aside = f"{entry}.corrupt-{uuid.uuid4().hex[:8]}"
    try:
        os.replace(entry, aside)  # out of the way first: a concurrent reader never sees half of it
    except OSError:  # another process moved it already
        return
    shutil.rmtree(aside, ignore_errors=True)


def _write_entry(entry, quantizer, ids, codes, report, settings, modality):
    parent = os.path.dirname(entry)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-")
    try:
        quantizer.save(os.path.join(tmp, "quantizer.npz"))
        np.savez(os.path.join(tmp, "sids.npz"), item_id=ids, codes=codes)
        with open(os.path.join(tmp, "report.json"), "w") as f:
            json.dump({"modality": modality, "settings": settings, "report": report}, f, indent=2,
                      default=float)
        # written last: an entry without a manifest, or whose files differ from it, is never used
        digests = {name: file_digest(os.path.join(tmp, name)) for name in sorted(os.listdir(tmp))}
        with atomic_open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump({"sha256": digests}, f, indent=2)
        try:
            os.replace(tmp, entry)
        except OSError:  # another process wrote the same entry first; both are identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    if isinstance(value, float):
        return round(value, 4)
    return value


def read_item_labels(item_file, column, id_field="item_id", field_separator="\t"):
    """``{item_id: label}`` from a RecBole ``.item`` atomic file's column (for the SID report)."""
    import pandas as pd

    frame = pd.read_csv(item_file, sep=field_separator, dtype=str)
    names = {c.split(":")[0]: c for c in frame.columns}
    if column not in names:
        raise ConfigError(f"sid_report_label_column: '{column}' is not a column of {item_file} "
                          f"(columns: {sorted(names)}).")
    if id_field not in names:
        raise ConfigError(f"{item_file} has no '{id_field}' column to join the labels on.")
    id_column = names[id_field]
    labelled = frame[frame[names[column]].notna()]  # an empty cell: no label, left out of the label metrics
    return dict(zip(labelled[id_column], labelled[names[column]]))
