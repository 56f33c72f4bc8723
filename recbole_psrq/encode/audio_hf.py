"""Audio embeddings from a local Hugging Face audio encoder (offline, CPU).

Method ``"hf"``: any Hugging Face audio encoder from a local folder
    ``AutoFeatureExtractor`` + ``AutoModel`` ``.from_pretrained(folder, local_files_only=True)`` (offline,
    ``trust_remote_code`` off unless asked: MERT-v1, the paper's encoder, ships custom code and needs it;
    MERT-v0 is a plain HuBERT), audio resampled to the feature extractor's ``sampling_rate``, run on CPU
    in fp32 (or bf16) with ``output_hidden_states=True``. Segment vector = mean over time of the selected
    hidden states, averaged over the selected layers: ``layers="all"`` (every entry of ``hidden_states``,
    embedding output included), ``"last"`` (= ``last_hidden_state``) or a list of indices into
    ``hidden_states`` (negative allowed). Only segments of exactly equal length share a batch, so no
    padding ever enters a model and an item's vector does not depend on the batch it landed in
    (use ``segment_seconds`` to make most segments equal-length and the batches full).
"""
import json
import os

import numpy as np

from recbole_psrq.encode.audio_io import _one_line
from recbole_psrq.errors import ConfigError


def resolve_model_path(model_path):
    if model_path is None:
        raise ConfigError(
            "method='hf' needs model_path= / --model-path: a local Hugging Face audio model folder "
            "(config.json, preprocessor_config.json, weights), e.g. a snapshot of m-a-p/MERT-v1-95M "
            "(add trust_remote_code=True for MERT-v1). Models are never downloaded. Or use the weight-free "
            "method='descriptor'.")
    folder = os.path.abspath(os.fspath(model_path))
    if not os.path.isdir(folder) or not os.path.isfile(os.path.join(folder, "config.json")):
        raise ConfigError(
            f"Audio model folder not found or incomplete: {folder} (needs config.json, "
            "preprocessor_config.json and weights of a Hugging Face audio model). Pass --model-path / "
            "model_path= pointing at a local model folder; models are never downloaded.")
    return folder


_MODEL_CACHE = {}
_DTYPES = ("float32", "bfloat16")


def _load_model(folder, trust_remote_code=False, dtype="float32"):
    """``(feature_extractor, model)`` loaded offline on CPU in eval mode (kept in memory per folder/options)."""
    key = (folder, bool(trust_remote_code), dtype)
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    import torch

    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from transformers import AutoFeatureExtractor, AutoModel

    hint = ("" if trust_remote_code else " If the model ships its own code (e.g. MERT-v1), pass "
            "trust_remote_code=True / --trust-remote-code, after checking that code.")
    try:
        fe = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(
            f"Could not load the feature extractor of {folder} offline ({_one_line(e)}); the folder needs a "
            f"preprocessor_config.json (with sampling_rate).{hint}") from e
    try:
        model = AutoModel.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(
            f"Could not load the audio model from {folder} offline ({_one_line(e)}). Point --model-path at a "
            f"complete local Hugging Face model folder.{hint}") from e
    if not getattr(fe, "sampling_rate", None):
        raise ConfigError(f"{folder}: the feature extractor has no sampling_rate; add it to preprocessor_config.json.")
    model.eval()
    model.to("cpu")
    if dtype == "bfloat16":
        model.to(torch.bfloat16)
    _MODEL_CACHE[key] = (fe, model)
    return fe, model


def _model_sampling_rate(folder):
    """``sampling_rate`` from the folder's preprocessor_config.json without loading anything (None if absent)."""
    try:
        with open(os.path.join(folder, "preprocessor_config.json"), encoding="utf-8") as f:
            rate = json.load(f).get("sampling_rate")
    except (OSError, ValueError, AttributeError):
        return None
    return int(rate) if isinstance(rate, (int, float)) and rate > 0 else None


def _layer_indices(layers, n_hidden):
    """Indices into ``hidden_states`` (length ``n_hidden``) for ``layers``."""
    if layers == "all":
        return list(range(n_hidden))
    if layers == "last":
        return [n_hidden - 1]
    out = []
    for i in layers:
        if not isinstance(i, (int, np.integer)) or not -n_hidden <= int(i) < n_hidden:
            raise ConfigError(f"layers: index {i!r} out of range for a model with {n_hidden} hidden states "
                              f"(embedding output + {n_hidden - 1} layers); use 'all', 'last' or ints in "
                              f"[{-n_hidden}, {n_hidden - 1}].")
        out.append(int(i) % n_hidden)
    return out


def _check_layers(layers):
    if layers in ("all", "last"):
        return layers
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise ConfigError(f"layers must be 'all', 'last' or a list of hidden-state indices, got {layers!r}.")
    layers = list(layers)
    if not layers or not all(isinstance(i, (int, np.integer)) for i in layers):
        raise ConfigError(f"layers must be a non-empty list of integers, got {layers!r}.")
    return [int(i) for i in layers]


def embed_segments_hf(segments, feature_extractor, model, layers="all"):
    """(B, hidden) float32 for a batch of equal-length mono segments at the extractor's rate: the mean over
    time of the selected ``hidden_states``, averaged over those layers."""
    import torch

    sr = int(feature_extractor.sampling_rate)
    inputs = feature_extractor([np.asarray(s, dtype=np.float32) for s in segments], sampling_rate=sr,
                               return_tensors="pt", padding=True)
    dtype = next(model.parameters()).dtype
    inputs = {k: (v.to(dtype) if torch.is_floating_point(v) else v) for k, v in inputs.items()}
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    hidden = out.hidden_states
    if hidden is None:
        raise ConfigError(f"{type(model).__name__} returned no hidden_states; use an encoder model "
                          "that supports output_hidden_states.")
    idx = _layer_indices(layers, len(hidden))
    pooled = torch.stack([hidden[i].float().mean(dim=1) for i in idx]).mean(dim=0)
    return pooled.numpy().astype(np.float32)


def _run_hf(segs, fe, model, layers, batch_size):
    """Vectors for ``{index: [segments]}``: equal-length segments are batched together; a batch that fails
    is retried one segment at a time so only the offending items are reported."""
    by_len = {}
    for i, seg_list in segs.items():
        for s in seg_list:
            by_len.setdefault(len(s), []).append((i, s))
    sums, errors = {}, {}
    for length in sorted(by_len):
        group = by_len[length]
        for b in range(0, len(group), batch_size):
            batch = group[b:b + batch_size]
            try:
                rows = embed_segments_hf([s for _, s in batch], fe, model, layers)
                results = list(zip(batch, rows))
            except ConfigError:
                raise
            except Exception:  # noqa: BLE001 - isolate the failing item(s)
                results = []
                for item in batch:
                    try:
                        results.append((item, embed_segments_hf([item[1]], fe, model, layers)[0]))
                    except ConfigError:
                        raise
                    except Exception as e:  # noqa: BLE001
                        errors[item[0]] = f"model failed on this audio ({_one_line(e)})"
            for (i, _), row in results:
                sums.setdefault(i, []).append(row)
    out = {i: np.mean(rows, axis=0).astype(np.float32) for i, rows in sums.items() if i not in errors}
    return out, errors
