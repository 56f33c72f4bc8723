"""Unit tests of recbole_psrq/data/sid_fields.py next to test_sid_hook.py and test_sid_cache.py: every error,
warning and log line word for word, the defaults, what reaches the cache layer, the cache entry's files,
key, verification, discarding and atomic writing, and the item-label reader; then the hook that calls it
(data/dataset.py ``SIDFieldsMixin``) on a stub dataset. All fast: no RecBole dataset is built, so mutation
testing can rerun them for every mutant (TESTING.md)."""
import json
import logging
import os
import re

import numpy as np
import pytest

try:  # the SID report imports scikit-learn lazily (seconds); imported here, mutmut's fork server preloads it
    import sklearn.metrics  # noqa: F401
except ImportError:  # pragma: no cover - the report then uses its numpy NMI
    pass

import recbole_psrq.quantization as quantization
from recbole_psrq.data import sid_fields
from recbole_psrq.data.embeddings import save_item_embeddings
from recbole_psrq.data.sid_fields import (compute_sid_tokens, declared_modalities, read_item_labels,
                                          resolve_modalities)
from recbole_psrq.errors import ConfigError, DataFormatError
from recbole_psrq.io import file_digest

IDS = [f"i{n}" for n in range(60)]
SETTINGS = dict(quantizer="rq_kmeans", n_levels=2, codebook_size=4, seed=0, options={})
HOW_TO_DECLARE = ("Declare a modality with its embedding file under sid_embedding_files in the dataset yaml "
                  "(e.g. `sid_embedding_files: {lyrics: x.lyrics.npz}`; `python -m recbole_psrq.encode` "
                  "registers the files it writes)")


def _x(n, dim, seed=0):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def _save(tmp_path, name, ids, x):
    path = str(tmp_path / name)
    save_item_embeddings(path, ids, x, dtype=np.float32)
    return path


def _tokens(tmp_path, files, modalities, ids=IDS, **kw):
    kw = {"quantizer": "rq_kmeans", "n_levels": 2, "codebook_size": 4, "cache_dir": str(tmp_path / "cache"),
          **kw}
    return compute_sid_tokens(ids, files, modalities, **kw)


def _entry(tmp_path):
    (name,) = os.listdir(tmp_path / "cache" / "dataset")
    return str(tmp_path / "cache" / "dataset" / name)


def _messages(caplog, level):
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name == sid_fields.logger.name]


class _StubQuantizer:
    """What _write_entry needs of a quantizer: ``save``."""

    def __init__(self, error=None):
        self.error = error

    def save(self, path):
        if self.error:
            raise self.error
        np.savez(path, centroids=np.zeros(2))


def _failing_rmtree(path, ignore_errors=False):
    """shutil.rmtree on a folder that cannot be removed (ignore_errors=True: the failure is ignored)."""
    if not ignore_errors:
        raise PermissionError(f"cannot remove {path}")


# ----------------------------------------------------------------- tokens and names
def test_token_strings_by_hand():
    assert sid_fields.sid_tokens(np.array([[3, 0], [1, 12]])) == ["l1_3 l2_0", "l1_1 l2_12"]
    assert sid_fields.sid_tokens([[5]]) == ["l1_5"]
    assert sid_fields.unknown_tokens(3) == "l1_unk l2_unk l3_unk"
    assert sid_fields.unknown_tokens(1) == "l1_unk"
    assert sid_fields.sid_field("lyrics") == "lyrics_sid"


def test_declared_modalities_in_order_and_their_errors_word_for_word():
    assert declared_modalities(None) == [] and declared_modalities({}) == []
    assert declared_modalities({"text": "t.npz", "audio": "a.npz"}) == ["text", "audio"]
    with pytest.raises(ConfigError) as error:
        declared_modalities({"text": "t.npz", "joint": "j.npz"})
    assert str(error.value).startswith(
        "sid_embedding_files (rename the key in the dataset yaml): 'joint' cannot be a modality name: ")
    with pytest.raises(ConfigError) as error:
        declared_modalities({"text": "t.npz", "lyrics": ""})
    assert str(error.value) == (
        "sid_embedding_files declares the modality 'lyrics' without an embedding file. Give its file "
        "(`lyrics: <dataset>.lyrics.npz`, relative to the dataset folder; `python -m recbole_psrq.encode` "
        "writes and registers it) or remove the key.")


def test_resolve_modalities_lists_and_defaults():
    files = {"text": "t.npz", "audio": "a.npz"}
    assert resolve_modalities([], {}) == ([], [])
    assert resolve_modalities([], None, []) == ([], [])
    assert resolve_modalities("all", files) == (["text", "audio", "joint"], ["text", "audio"])
    assert resolve_modalities(("audio",), files) == (["audio"], ["text", "audio"])
    assert resolve_modalities(["joint", "text"], files, ("audio",)) == (["joint", "text"], ["audio"])
    assert resolve_modalities(["text"], files, []) == (["text"], [])  # no joint asked: an empty list is fine


@pytest.mark.parametrize("modalities, joint, expected", [
    ("text", None, "sid_modalities: 'text' is neither a list of modality names nor 'all'; write e.g. "
                   "`sid_modalities: [text, joint]` or `sid_modalities: all`."),
    (["text", "lyrics"], None, "sid_modalities: unknown modality ['lyrics']: sid_embedding_files declares "
                               f"['text'], and 'joint' is the joint SID. {HOW_TO_DECLARE}, or drop ['lyrics'] "
                               "from sid_modalities."),
    (["joint"], ["text", "image"], "sid_joint_modalities: ['text', 'image'] must list one or more distinct "
                                   "declared modalities (sid_embedding_files declares ['text']); the joint SID "
                                   f"quantizes their concatenation. {HOW_TO_DECLARE}, or fix the list (unset, "
                                   "it is every declared modality)."),
    (["text"], ["text", "text"], "sid_joint_modalities: ['text', 'text'] must list one or more distinct "
                                 "declared modalities (sid_embedding_files declares ['text']); the joint SID "
                                 f"quantizes their concatenation. {HOW_TO_DECLARE}, or fix the list (unset, "
                                 "it is every declared modality)."),
    (["joint"], [], "sid_joint_modalities: [] must list one or more distinct declared modalities "
                    "(sid_embedding_files declares ['text']); the joint SID quantizes their concatenation. "
                    f"{HOW_TO_DECLARE}, or fix the list (unset, it is every declared modality)."),
])
def test_resolve_modalities_errors_word_for_word(modalities, joint, expected):
    with pytest.raises(ConfigError) as error:
        resolve_modalities(modalities, {"text": "t.npz"}, joint)
    assert str(error.value) == expected


def test_joint_without_a_declared_modality_word_for_word():
    with pytest.raises(ConfigError) as error:
        resolve_modalities(["joint"], {})
    assert str(error.value) == (
        "sid_modalities (['joint']) asks for the joint SID, but sid_embedding_files declares no modality. "
        f"{HOW_TO_DECLARE}, or set `sid_modalities: []` (no SID fields).")


def test_no_modalities_no_fields(tmp_path):
    assert compute_sid_tokens(IDS, {}, [], cache_dir=str(tmp_path)) == {}
    assert not os.listdir(tmp_path)


def test_a_missing_embedding_file_word_for_word(tmp_path):
    path = str(tmp_path / "t.npz")
    with pytest.raises(ConfigError) as error:
        sid_fields._embedding_path({"text": path}, "text")
    assert str(error.value) == (
        f"sid_embedding_files: the text embedding file {path} does not exist. Write it (`python -m "
        "recbole_psrq.encode text|audio|table --dataset <folder>` registers what it writes), fix the path "
        "(relative to the dataset folder), or remove 'text' from sid_embedding_files.")
    _save(tmp_path, "t.npz", IDS, _x(60, 4))
    assert sid_fields._embedding_path({"text": path}, "text") == path


def test_only_the_files_of_the_requested_fields_are_read(tmp_path):
    """A declared modality whose file is missing only matters once a requested field needs it."""
    files = {"text": _save(tmp_path, "t.npz", IDS, _x(60, 8)), "audio": str(tmp_path / "missing.npz")}
    assert list(_tokens(tmp_path, files, ["text"])) == ["text_sid"]
    fields = _tokens(tmp_path, files, ["text", "joint"], joint_modalities=["text"])
    assert fields["joint_sid"] == fields["text_sid"]
    with pytest.raises(ConfigError, match=r"the audio embedding file .*missing\.npz does not exist"):
        _tokens(tmp_path, files, ["joint"])


# ----------------------------------------------------------------- aligning embedding rows to items by id
def test_rows_are_matched_by_id_and_extra_rows_are_logged(tmp_path, caplog):
    x = _x(63, 4)
    file_ids = list(reversed(IDS)) + ["x1", "x2", "x3"]
    path = _save(tmp_path, "t.npz", file_ids, x)
    with caplog.at_level(logging.INFO):
        present, rows = sid_fields._aligned_embeddings(np.array(IDS), path, "text", 0.5)
    assert present.all() and np.array_equal(rows, x[:60][::-1])  # i59 is the file's first row
    assert _messages(caplog, logging.INFO) == [
        f"{path}: 3 embedding rows belong to items not in the dataset; ignored."]
    assert _messages(caplog, logging.WARNING) == []
    caplog.clear()
    exact = _save(tmp_path, "exact.npz", IDS, x[:60])
    with caplog.at_level(logging.INFO):
        sid_fields._aligned_embeddings(np.array(IDS), exact, "text", 0.5)
    assert _messages(caplog, logging.INFO) == []  # no extra row, no log line


def test_missing_items_are_warned_about_with_the_first_five(tmp_path, caplog):
    path = _save(tmp_path, "a.npz", IDS[:53], _x(53, 4))
    with caplog.at_level(logging.INFO):
        present, rows = sid_fields._aligned_embeddings(np.array(IDS), path, "audio", 0.5)
    assert present.tolist() == [True] * 53 + [False] * 7 and rows.shape == (53, 4)
    assert _messages(caplog, logging.WARNING) == [
        f"7 of 60 items have no audio embedding ({path}), e.g. ['i53', 'i54', 'i55', 'i56', 'i57']; they get "
        "the reserved unknown audio SID 'unk' at every level."]


def test_the_missing_fraction_bound_and_the_error_word_for_word(tmp_path):
    half = _save(tmp_path, "half.npz", IDS[30:], _x(30, 4))
    present, _ = sid_fields._aligned_embeddings(np.array(IDS), half, "text", 0.5)
    assert present.sum() == 30  # exactly the allowed fraction missing: accepted
    fewer = _save(tmp_path, "fewer.npz", IDS[31:], _x(29, 4))
    with pytest.raises(DataFormatError) as error:
        sid_fields._aligned_embeddings(np.array(IDS), fewer, "text", 0.5)
    assert str(error.value) == (
        f"{fewer}: 31 of the dataset's 60 items have no text embedding (dataset ids like ['i0', 'i1', 'i2'], "
        "file ids like ['i31', 'i32', 'i33']). The ids probably do not correspond: write the embedding file "
        "with the dataset's raw item tokens in its 'item_id' array (or raise sid_max_missing_fraction if this "
        "many items really lack this modality).")
    one = _save(tmp_path, "one.npz", ["i5", "z1"], _x(2, 4))
    present, rows = sid_fields._aligned_embeddings(np.array(IDS), one, "text", 1.0)
    assert present.sum() == 1 and present[5] and rows.shape == (1, 4)
    none = _save(tmp_path, "none.npz", ["z1", "z2"], _x(2, 4))
    with pytest.raises(DataFormatError, match=r"none\.npz: 60 of the dataset's 60 items have no text"):
        sid_fields._aligned_embeddings(np.array(IDS), none, "text", 1.0)  # none matches: always an error


def test_the_default_missing_fraction_is_one_half(tmp_path):
    files = {"text": _save(tmp_path, "t.npz", IDS[30:], _x(30, 4))}
    assert sum("unk" in t for t in _tokens(tmp_path, files, ["text"])["text_sid"]) == 30
    files = {"text": _save(tmp_path, "t2.npz", IDS[31:], _x(29, 4))}
    with pytest.raises(DataFormatError, match="31 of the dataset's 60 items have no text embedding"):
        _tokens(tmp_path, files, ["text"])


def test_nonfinite_rows_are_named_up_to_five_and_rows_of_other_items_ignored(tmp_path):
    x = _x(61, 4)
    x[[1, 2, 3, 4, 5, 6], 0] = [np.nan, np.inf, -np.inf, np.nan, np.nan, np.nan]
    x[60] = np.nan  # the row of an item the dataset does not have: never read
    path = _save(tmp_path, "t.npz", IDS + ["other"], x)
    with pytest.raises(DataFormatError) as error:
        sid_fields._aligned_embeddings(np.array(IDS), path, "text", 0.5)
    assert str(error.value) == (
        f"{path}: 6 item(s) have NaN/inf values in their text embedding, e.g. ['i1', 'i2', 'i3', 'i4', 'i5']. "
        "Re-encode those items, or remove their rows from the file (they then get the reserved unknown SID).")
    clean = _save(tmp_path, "c.npz", IDS[7:] + ["other"], x[7:])
    present, rows = sid_fields._aligned_embeddings(np.array(IDS), clean, "text", 0.5)
    assert present.sum() == 53 and np.isfinite(rows).all()


def test_l2_rows_by_hand():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-13, 0.0]])
    np.testing.assert_allclose(sid_fields._l2(x), [[0.6, 0.8], [0.0, 0.0], [0.1, 0.0]], rtol=1e-12)


# ----------------------------------------------------------------- what compute_sid_tokens hands the cache layer
def test_fields_place_each_items_codes_by_id_and_unknown_tokens_for_the_rest(tmp_path, monkeypatch):
    """With ``_cached_codes`` replaced, what compute_sid_tokens passes it and how it places the codes: the
    present items' ids and rows, the settings, the quantizer file of that modality, the joint input
    [l2(text) ; l2(audio)] of the items having both, and long codes (> the unknown token's width)."""
    text, audio = _x(60, 5, seed=1), 100.0 * _x(50, 3, seed=2)
    files = {"text": _save(tmp_path, "t.npz", IDS, text), "audio": _save(tmp_path, "a.npz", IDS[:50], audio)}
    calls = {}

    def cached_codes(ids, x, modality, settings, quantizer_file, cache_dir, dataset_name, labels, allow_fit):
        calls[modality] = dict(ids=list(ids), x=x, settings=settings, quantizer_file=quantizer_file,
                               cache_dir=cache_dir, dataset_name=dataset_name, labels=labels, allow_fit=allow_fit)
        return np.array([[1000 + n, 2000 + n] for n in range(len(ids))])  # wider than "l1_unk l2_unk"

    monkeypatch.setattr(sid_fields, "_cached_codes", cached_codes)
    labels = {"i0": "rock"}
    options = {"niter": 3}
    fields = compute_sid_tokens(IDS, files, ["audio", "text", "joint"], quantizer="vq", n_levels=2,
                                codebook_size=5, seed=9, quantizer_options=options,
                                quantizer_files={"audio": "qa.npz"}, cache_dir="c", dataset_name="ds",
                                labels=labels, allow_fit=False, max_missing_fraction=0.2)
    assert list(fields) == ["audio_sid", "text_sid", "joint_sid"] and list(calls) == ["audio", "text", "joint"]
    settings = dict(quantizer="vq", n_levels=2, codebook_size=5, seed=9, options={"niter": 3})
    for modality, call in calls.items():
        n = 60 if modality == "text" else 50
        assert call["ids"] == IDS[:n] and call["settings"] == settings and call["cache_dir"] == "c"
        assert call["dataset_name"] == "ds" and call["labels"] is labels and call["allow_fit"] is False
        assert call["quantizer_file"] == ("qa.npz" if modality == "audio" else None)
    np.testing.assert_array_equal(calls["text"]["x"], text)
    np.testing.assert_array_equal(calls["audio"]["x"], audio)
    unit = [m / np.linalg.norm(m, axis=1, keepdims=True) for m in (text[:50], audio)]
    np.testing.assert_allclose(calls["joint"]["x"], np.concatenate(unit, axis=1), rtol=1e-6)
    for field in ("audio_sid", "joint_sid"):
        assert fields[field] == [f"l1_{1000 + n} l2_{2000 + n}" for n in range(50)] + ["l1_unk l2_unk"] * 10
    assert fields["text_sid"] == [f"l1_{1000 + n} l2_{2000 + n}" for n in range(60)]


def test_the_joint_warning_names_the_joined_modalities(tmp_path, caplog):
    files = {"text": _save(tmp_path, "t.npz", IDS, _x(60, 8)), "audio": _save(tmp_path, "a.npz", IDS[:50], _x(50, 6))}
    with caplog.at_level(logging.WARNING):
        _tokens(tmp_path, files, ["joint"])
    assert (f"10 of 60 items have no joint embedding (text or audio), e.g. ['i50', 'i51', 'i52', 'i53', "
            "'i54']; they get the reserved unknown joint SID 'unk' at every level.") in _messages(caplog, logging.WARNING)


def test_a_joint_of_one_listed_modality_reuses_that_modalitys_fit(tmp_path):
    files = {"text": _save(tmp_path, "t.npz", IDS, _x(60, 8)), "audio": _save(tmp_path, "a.npz", IDS, _x(60, 6, 1))}
    fields = _tokens(tmp_path, files, ["audio", "joint"], joint_modalities=["text"])
    text = _tokens(tmp_path / "alone", {"text": files["text"]}, ["text"])["text_sid"]
    assert fields["joint_sid"] == text and fields["audio_sid"] != text
    assert [n.split("-")[0] for n in sorted(os.listdir(tmp_path / "cache" / "dataset"))] == ["audio_sid", "text_sid"]


def test_the_defaults_of_compute_sid_tokens(tmp_path, monkeypatch):
    """PSRQ, 3 levels of 64 codes, seed 0, no options, cache under ./saved/sid_cache/dataset/."""
    monkeypatch.chdir(tmp_path)
    ids = [f"t{n}" for n in range(80)]
    path = _save(tmp_path, "t.npz", ids, _x(80, 4))
    tokens = compute_sid_tokens(ids, {"text": path}, ["text"])["text_sid"]
    assert all(re.fullmatch(r"l1_\d+ l2_\d+ l3_\d+", t) for t in tokens)
    (name,) = os.listdir(tmp_path / "saved" / "sid_cache" / "dataset")
    assert re.fullmatch(r"text_sid-psrq-[0-9a-f]{16}", name)
    with open(tmp_path / "saved" / "sid_cache" / "dataset" / name / "report.json") as f:
        assert json.load(f)["settings"] == dict(quantizer="psrq", n_levels=3, codebook_size=64, seed=0, options={})


def test_an_unknown_quantizer_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown quantizer 'kmeans'\. Available quantizers: "):
        _tokens(tmp_path, {"text": _save(tmp_path, "t.npz", IDS, _x(60, 4))}, ["text"], quantizer="kmeans")


# ----------------------------------------------------------------- the cache key
def test_the_cache_key_hashes_ids_matrix_settings_and_the_quantizer_file(tmp_path):
    ids, x = ["a", "b", "c"], _x(3, 4)
    key = sid_fields._cache_key(ids, x, "text", SETTINGS, None)
    assert re.fullmatch(r"[0-9a-f]{16}", key)
    assert sid_fields._cache_key(ids, x.astype(np.float64), "text", SETTINGS, None) == key  # hashed as float32
    other = [sid_fields._cache_key(["a", "b", "d"], x, "text", SETTINGS, None),
             sid_fields._cache_key(["b", "a", "c"], x, "text", SETTINGS, None),
             sid_fields._cache_key(ids, x + 1, "text", SETTINGS, None),
             sid_fields._cache_key(ids, x.reshape(4, 3), "text", SETTINGS, None),
             sid_fields._cache_key(ids, x, "audio", SETTINGS, None)]
    for setting, value in dict(quantizer="psrq", n_levels=3, codebook_size=8, seed=1, options={"niter": 5}).items():
        other.append(sid_fields._cache_key(ids, x, "text", {**SETTINGS, setting: value}, None))
    q1, q2 = tmp_path / "q1.npz", tmp_path / "q2.npz"
    q1.write_bytes(b"one quantizer")
    q2.write_bytes(b"another one")
    other += [sid_fields._cache_key(ids, x, "text", SETTINGS, str(q1)),
              sid_fields._cache_key(ids, x, "text", SETTINGS, str(q2))]
    assert len(set(other + [key])) == len(other) + 1
    assert sid_fields._cache_key(ids, x, "text", SETTINGS, str(q1)) == other[-2]  # the file's bytes, not a stamp
    # an option value JSON cannot hold (a numpy float from a computed config) is keyed by its text
    numpy_option = {**SETTINGS, "options": {"prefix_weight": np.float32(0.5)}}
    assert sid_fields._cache_key(ids, x, "text", numpy_option, None) == sid_fields._cache_key(
        ids, x, "text", {**SETTINGS, "options": {"prefix_weight": "0.5"}}, None)
    # a quantizer name the registry does not know still gets a key (build_quantizer then names the error)
    assert re.fullmatch(r"[0-9a-f]{16}", sid_fields._cache_key(ids, x, "text", {**SETTINGS, "quantizer": "x"}, None))


# ----------------------------------------------------------------- fitting, the entry's files and the log
def test_a_fit_logs_its_input_and_report_and_writes_a_complete_entry(tmp_path, caplog):
    x = _x(60, 8)
    files = {"text": _save(tmp_path, "t.npz", IDS, x)}
    labels = {i: ("a" if n % 2 else "b") for n, i in enumerate(IDS[:40])}
    labels["unknown-item"] = "c"
    with caplog.at_level(logging.INFO):
        tokens = _tokens(tmp_path, files, ["text"], seed=3, labels=labels)["text_sid"]
    entry = _entry(tmp_path)
    assert os.path.basename(entry) == f"text_sid-rq_kmeans-{sid_fields._cache_key(IDS, x, 'text', {**SETTINGS, 'seed': 3}, None)}"
    assert sorted(os.listdir(entry)) == ["manifest.json", "quantizer.npz", "report.json", "sids.npz"]
    with open(os.path.join(entry, "report.json")) as f:
        text = f.read()
    saved = json.loads(text)
    assert text == json.dumps(saved, indent=2)
    assert list(saved) == ["modality", "settings", "report"]
    assert saved["modality"] == "text" and saved["settings"] == {**SETTINGS, "seed": 3}
    report = saved["report"]
    assert report["n_items"] == 60 and report["labelled_items"] == 40 and "recon_mse_by_levels" in report
    assert report["kmeans_device"] == ("gpu" if quantization.kmeans.kmeans_gpus() else "cpu")
    assert 0 <= report["fit_seconds"] < 600
    with open(os.path.join(entry, "manifest.json")) as f:
        text = f.read()
    assert text == json.dumps({"sha256": {name: file_digest(os.path.join(entry, name))
                                          for name in ("quantizer.npz", "report.json", "sids.npz")}}, indent=2)
    assert quantization.load_quantizer(os.path.join(entry, "quantizer.npz")).config["seed"] == 3
    with np.load(os.path.join(entry, "sids.npz")) as data:
        assert data["item_id"].tolist() == IDS
        assert sid_fields.sid_tokens(data["codes"]) == tokens
    info = _messages(caplog, logging.INFO)
    assert "text_sid: fitting rq_kmeans (L=2, k=4) on 60 items x 8 dims" in info
    (done,) = [m for m in info if m.startswith("text_sid: fitted in ")]
    seconds, logged = re.fullmatch(r"text_sid: fitted in (\d+\.\d)s; quality report: (\{.*\})", done).groups()
    assert json.loads(logged) == sid_fields._rounded(report) and float(seconds) == round(report["fit_seconds"], 1)
    assert _messages(caplog, logging.WARNING) == report["warnings"]


@pytest.mark.parametrize("gpus, device", [(0, "cpu"), (1, "gpu")])
def test_a_saved_quantizer_encodes_without_a_fit_and_is_part_of_the_key(gpus, device, tmp_path, monkeypatch,
                                                                       caplog):
    x = _x(60, 8)
    files = {"text": _save(tmp_path, "t.npz", IDS, x)}
    fitted = quantization.build_quantizer("rq_kmeans", n_levels=2, codebook_size=4, seed=5).fit(x)
    fitted.save(str(tmp_path / "q.npz"))
    monkeypatch.setattr(type(fitted), "fit", lambda self, x: pytest.fail("fitted"))
    monkeypatch.setattr("recbole_psrq.quantization.kmeans.kmeans_gpus", lambda: gpus)  # only the report asks
    with caplog.at_level(logging.INFO):
        tokens = _tokens(tmp_path, files, ["text"], quantizer_files={"text": str(tmp_path / "q.npz")})
    assert tokens["text_sid"] == sid_fields.sid_tokens(fitted.encode(x))
    entry = _entry(tmp_path)
    assert os.path.basename(entry) == "text_sid-rq_kmeans-" + sid_fields._cache_key(
        IDS, x, "text", SETTINGS, str(tmp_path / "q.npz"))
    with open(os.path.join(entry, "report.json")) as f:
        assert json.load(f)["report"]["kmeans_device"] == device
    assert any(m.startswith(f"text_sid: loaded {tmp_path / 'q.npz'} in ") for m in _messages(caplog, logging.INFO))


def test_a_quantizer_of_other_dimensions_word_for_word(tmp_path):
    quantization.build_quantizer("rq_kmeans", n_levels=2, codebook_size=4).fit(_x(60, 16)).save(
        str(tmp_path / "q.npz"))
    files = {"text": _save(tmp_path, "t.npz", IDS, _x(60, 8))}
    with pytest.raises(DataFormatError) as error:
        _tokens(tmp_path, files, ["text"], quantizer_files={"text": str(tmp_path / "q.npz")})
    assert str(error.value) == (
        f"{tmp_path / 'q.npz'}: this quantizer was fitted on 16-d text embeddings but the current ones are 8-d. "
        "The embedding model changed since the quantizer was saved: refit (remove sid_quantizer_files) or "
        "restore the original embeddings.")


# ----------------------------------------------------------------- reusing, verifying and discarding entries
def test_reuse_and_refusal_messages_word_for_word(tmp_path, caplog):
    files = {"text": _save(tmp_path, "t.npz", IDS, _x(60, 8))}
    first = _tokens(tmp_path, files, ["text"])
    entry = _entry(tmp_path)
    caplog.clear()  # the fit's lines (captured already when another test set RecBole's logging up)
    with caplog.at_level(logging.INFO):
        assert _tokens(tmp_path, files, ["text"], allow_fit=False) == first
    assert _messages(caplog, logging.INFO) == [f"text_sid: reusing cached SIDs {entry} (no refit)"]
    elsewhere = str(tmp_path / "empty" / "dataset" / os.path.basename(entry))
    with pytest.raises(ConfigError) as error:
        _tokens(tmp_path, files, ["text"], allow_fit=False, cache_dir=str(tmp_path / "empty"))
    assert str(error.value) == (
        f"text_sid: no cached SIDs at {elsewhere}, and this run may not fit quantizers (evaluation never "
        "refits, so that test-time SIDs equal training-time SIDs). Restore that cache folder (sid_cache_dir) "
        "or retrain.")
    with open(os.path.join(entry, "report.json"), "a") as f:
        f.write(" ")
    with pytest.raises(ConfigError) as error:
        _tokens(tmp_path, files, ["text"], allow_fit=False)
    assert str(error.value) == (
        f"text_sid: the cached SIDs in {entry} are corrupt (report.json does not match the sha256 in "
        "manifest.json), and this run may not fit quantizers (evaluation never refits, so that test-time SIDs "
        f"equal training-time SIDs). Delete the folder {entry} and rerun the training (it refits and rewrites "
        "the entry), or restore that folder from a copy.")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert _tokens(tmp_path, files, ["text"]) == first
    assert _messages(caplog, logging.WARNING)[0] == (
        f"text_sid: the cached SIDs in {entry} are corrupt (report.json does not match the sha256 in "
        "manifest.json); removing the entry and refitting.")


def test_read_entry_names_what_is_wrong(tmp_path):
    files = {"text": _save(tmp_path, "t.npz", IDS, _x(60, 8))}
    first = _tokens(tmp_path, files, ["text"])["text_sid"]
    entry = _entry(tmp_path)
    ids = np.array(IDS)
    codes, problem = sid_fields._read_entry(entry, ids)
    assert problem is None and sid_fields.sid_tokens(codes) == first
    assert sid_fields._read_entry(entry, ids[::-1]) == (None, "its item ids differ from the dataset's")
    manifest_path = os.path.join(entry, "manifest.json")
    with open(manifest_path) as f:
        manifest = json.load(f)

    def write_manifest(content):
        with open(manifest_path, "w") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))

    write_manifest({"sha256": {k: v for k, v in manifest["sha256"].items() if k != "sids.npz"}})
    assert sid_fields._read_entry(entry, ids) == (None, "sids.npz is missing")
    write_manifest({"sha256": {**manifest["sha256"], "extra.txt": "0" * 64}})
    assert sid_fields._read_entry(entry, ids) == (None, "extra.txt is missing")  # listed, not on disk
    write_manifest({"sha256": {**manifest["sha256"], "report.json": "0" * 64}})
    assert sid_fields._read_entry(entry, ids) == (None, "report.json does not match the sha256 in manifest.json")
    write_manifest({"sha": manifest["sha256"]})
    assert sid_fields._read_entry(entry, ids) == (None, "no readable manifest.json: KeyError: 'sha256'")
    write_manifest([manifest])
    assert sid_fields._read_entry(entry, ids) == (
        None, "no readable manifest.json: TypeError: list indices must be integers or slices, not str")
    write_manifest('{"sha256": ')
    assert sid_fields._read_entry(entry, ids)[1].startswith("no readable manifest.json: JSONDecodeError: ")
    os.remove(manifest_path)
    assert sid_fields._read_entry(entry, ids) == (
        None, f"no readable manifest.json: FileNotFoundError: [Errno 2] No such file or directory: "
              f"'{manifest_path}'")


def test_a_cache_entry_is_never_unpickled(tmp_path):
    """An entry whose table holds a pickled (object) array is refused even when its manifest matches."""
    entry = tmp_path / "entry"
    entry.mkdir()
    np.savez(entry / "sids.npz", item_id=np.array(IDS[:2], dtype=object), codes=np.zeros((2, 2), dtype=int))
    (entry / "manifest.json").write_text(json.dumps({"sha256": {"sids.npz": file_digest(str(entry / "sids.npz"))}}))
    with pytest.raises(ValueError, match="allow_pickle"):
        sid_fields._read_entry(str(entry), np.array(IDS[:2]))


def test_a_deleted_file_of_an_entry_is_refit_with_a_warning(tmp_path, caplog):
    files = {"text": _save(tmp_path, "t.npz", IDS, _x(60, 8))}
    first = _tokens(tmp_path, files, ["text"])
    entry = _entry(tmp_path)
    os.remove(os.path.join(entry, "quantizer.npz"))
    with caplog.at_level(logging.WARNING):
        assert _tokens(tmp_path, files, ["text"]) == first
    assert (f"text_sid: the cached SIDs in {entry} are corrupt (quantizer.npz is missing); removing the entry "
            "and refitting.") in _messages(caplog, logging.WARNING)
    assert sorted(os.listdir(entry)) == ["manifest.json", "quantizer.npz", "report.json", "sids.npz"]


def test_discard_moves_the_entry_aside_before_removing_it(tmp_path, monkeypatch):
    entry = tmp_path / "text_sid-rq_kmeans-0123456789abcdef"
    entry.mkdir()
    (entry / "sids.npz").write_bytes(b"corrupt")
    removed = []
    monkeypatch.setattr(sid_fields.shutil, "rmtree", lambda path, ignore_errors=False: removed.append(
        (path, ignore_errors, sorted(os.listdir(path)))))
    sid_fields._discard_entry(str(entry))
    [(aside, ignore_errors, content)] = removed
    assert re.fullmatch(re.escape(str(entry)) + r"\.corrupt-[0-9a-f]{8}", aside)
    assert ignore_errors is True and content == ["sids.npz"] and not entry.exists()
    sid_fields._discard_entry(str(entry))  # gone already (another process moved it): nothing to do
    assert len(removed) == 1
    monkeypatch.undo()
    entry.mkdir()
    monkeypatch.setattr(sid_fields.shutil, "rmtree", _failing_rmtree)
    sid_fields._discard_entry(str(entry))  # a folder that cannot be removed does not stop the run
    assert not entry.exists()


def test_write_entry_renames_a_complete_temporary_folder_into_place(tmp_path, monkeypatch):
    entry = str(tmp_path / "cache" / "ds" / "text_sid-x-1")
    ids, codes = np.array(["a", "b"]), np.array([[1, 2], [3, 0]])
    replaced = []
    replace = os.replace

    def spy(src, dst):
        replaced.append((str(src), str(dst), sorted(os.listdir(src)) if os.path.isdir(src) else None))
        return replace(src, dst)

    monkeypatch.setattr(sid_fields.os, "replace", spy)
    report = {"score": np.float32(0.25), "warnings": []}  # numpy scalars are written as JSON numbers
    sid_fields._write_entry(entry, _StubQuantizer(), ids, codes, report, SETTINGS, "text")
    [(src, dst, content)] = [r for r in replaced if r[1] == entry]
    assert os.path.dirname(src) == os.path.dirname(entry) and os.path.basename(src).startswith(".tmp-")
    assert content == ["manifest.json", "quantizer.npz", "report.json", "sids.npz"]
    with open(os.path.join(entry, "report.json")) as f:
        assert json.load(f) == {"modality": "text", "settings": SETTINGS, "report": {"score": 0.25, "warnings": []}}
    codes_read, problem = sid_fields._read_entry(entry, ids)
    assert problem is None and codes_read.tolist() == codes.tolist()
    # a second entry in the same dataset folder
    sid_fields._write_entry(entry + "b", _StubQuantizer(), ids, codes, report, SETTINGS, "text")
    assert sorted(os.listdir(os.path.dirname(entry))) == ["text_sid-x-1", "text_sid-x-1b"]


def test_write_entry_loses_a_race_quietly_and_cleans_up_after_a_failure(tmp_path, monkeypatch):
    parent = tmp_path / "ds"
    entry = parent / "text_sid-x-1"
    entry.mkdir(parents=True)
    (entry / "marker").write_text("the other process's entry")
    ids, codes = np.array(["a", "b"]), np.array([[1, 2], [3, 0]])
    sid_fields._write_entry(str(entry), _StubQuantizer(), ids, codes, {}, SETTINGS, "text")
    assert os.listdir(parent) == ["text_sid-x-1"] and os.listdir(entry) == ["marker"]  # kept, no leftover
    with pytest.raises(RuntimeError, match="disk full"):
        sid_fields._write_entry(str(parent / "other"), _StubQuantizer(RuntimeError("disk full")), ids, codes, {},
                                SETTINGS, "text")
    assert os.listdir(parent) == ["text_sid-x-1"]  # nothing half-written left behind
    # leftovers that cannot be removed neither stop the run nor hide the original error
    monkeypatch.setattr(sid_fields.shutil, "rmtree", _failing_rmtree)
    sid_fields._write_entry(str(entry), _StubQuantizer(), ids, codes, {}, SETTINGS, "text")
    with pytest.raises(RuntimeError, match="disk full"):
        sid_fields._write_entry(str(parent / "other"), _StubQuantizer(RuntimeError("disk full")), ids, codes, {},
                                SETTINGS, "text")


def test_rounded_report_values():
    value = {"a": [0.123456, (1.000049, "x")], "b": 3, "c": None, "d": {"e": 0.00016}}
    assert sid_fields._rounded(value) == {"a": [0.1235, [1.0, "x"]], "b": 3, "c": None, "d": {"e": 0.0002}}


# ----------------------------------------------------------------- item labels for the report
def test_read_item_labels_joins_on_the_id_column_as_strings(tmp_path):
    path = tmp_path / "m.item"
    path.write_text("title:token_seq\titem_id:token\tgenre:token\n"
                    "a b\t007\trock\n"
                    "c\t12\tjazz\n"
                    "d\t13\t\n")  # an empty cell: no label (left out of the report's label metrics)
    assert read_item_labels(str(path), "genre") == {"007": "rock", "12": "jazz"}
    assert read_item_labels(str(path), "title") == {"007": "a b", "12": "c", "13": "d"}
    other = tmp_path / "o.item"
    other.write_text("track:token|genre\nt1|pop\nt2|rock\n")  # read with the separator given, not a guessed one
    assert read_item_labels(str(other), "genre", id_field="track", field_separator="|") == {"t1": "pop", "t2": "rock"}


def test_read_item_labels_errors_word_for_word(tmp_path):
    path = tmp_path / "m.item"
    path.write_text("item_id:token\tgenre:token\ttitle:token_seq\ni1\trock\ta\n")
    with pytest.raises(ConfigError) as error:
        read_item_labels(str(path), "mood")
    assert str(error.value) == (f"sid_report_label_column: 'mood' is not a column of {path} "
                                "(columns: ['genre', 'item_id', 'title']).")
    with pytest.raises(ConfigError) as error:
        read_item_labels(str(path), "genre", id_field="track_id")
    assert str(error.value) == f"{path} has no 'track_id' column to join the labels on."


# ----------------------------------------------------------------- the hook (data/dataset.py SIDFieldsMixin) on a stub
HOOK_CONFIG = {"sid_embedding_files": {"text": "t.npz", "audio": ""}, "sid_report_label_column": "genre",
               "field_separator": "|", "sid_levels": 2, "sid_joint_modalities": ["text"], "sid_quantizer": "vq",
               "sid_codebook_size": 5, "sid_seed": 9, "sid_quantizer_options": {"niter": 3},
               "sid_quantizer_files": {"text": "q.npz"}, "sid_cache_dir": "cache", "sid_fit": False,
               "sid_max_missing_fraction": 0.25}


class _StubDataset:
    """What SIDFieldsMixin._add_sid_fields reads of a RecBole dataset: config, iid_field, inter_feat,
    item_feat, set_field_property and logger."""

    iid_field = "item_id"

    def __init__(self, item_feat=None, **config):
        import pandas as pd

        self.config = {**HOOK_CONFIG, **config}
        self.inter_feat = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u2"], "item_id": ["3", "1", "3", "2"]})
        self.item_feat = item_feat
        self.properties = []
        self.logger = logging.getLogger("recbole_psrq.tests.stub_dataset")

    def set_field_property(self, field, field_type, field_source, field_seqlen):
        self.properties.append((field, field_type, field_source, field_seqlen))


def _hook(stub, tmp_path, monkeypatch, modalities=("text", "joint")):
    from recbole_psrq.data import dataset as project_datasets

    calls = []

    def compute(item_ids, embedding_files, modalities, **kw):
        calls.append(dict(item_ids=list(item_ids), embedding_files=embedding_files, modalities=modalities, **kw))
        return {f"{m}_sid": [f"l1_{i} l2_{m}" for i in item_ids] for m in modalities}

    monkeypatch.setattr(project_datasets, "compute_sid_tokens", compute)
    project_datasets.SIDFieldsMixin._add_sid_fields(stub, list(modalities), "ds", str(tmp_path))
    return calls


def test_the_hook_hands_every_sid_setting_and_the_items_to_compute_sid_tokens(tmp_path, monkeypatch):
    (tmp_path / "ds.item").write_text("item_id:token|genre:token\n1|rock\n2|\n3|jazz\n")
    stub = _StubDataset()
    [call] = _hook(stub, tmp_path, monkeypatch)
    assert call == dict(
        item_ids=["3", "1", "2"], embedding_files={"text": str(tmp_path / "t.npz"), "audio": ""},
        modalities=["text", "joint"], joint_modalities=["text"], quantizer="vq", n_levels=2, codebook_size=5,
        seed=9, quantizer_options={"niter": 3}, quantizer_files={"text": "q.npz"}, cache_dir="cache",
        dataset_name="ds", labels={"1": "rock", "3": "jazz"}, allow_fit=False, max_missing_fraction=0.25)
    # no label column, or no .item file: no labels
    assert _hook(_StubDataset(sid_report_label_column=None), tmp_path, monkeypatch)[0]["labels"] is None
    assert _hook(_StubDataset(), tmp_path / "elsewhere", monkeypatch)[0]["labels"] is None
    assert _hook(_StubDataset(sid_embedding_files=None), tmp_path, monkeypatch)[0]["embedding_files"] == {}


def test_the_hook_adds_token_seq_item_fields(tmp_path, monkeypatch, caplog):
    stub = _StubDataset()
    with caplog.at_level(logging.INFO):
        _hook(stub, tmp_path, monkeypatch)
    from recbole.utils import FeatureSource, FeatureType

    assert stub.properties == [("text_sid", FeatureType.TOKEN_SEQ, FeatureSource.ITEM, 2),
                               ("joint_sid", FeatureType.TOKEN_SEQ, FeatureSource.ITEM, 2)]
    assert stub.item_feat.columns.tolist() == ["item_id", "text_sid", "joint_sid"]
    assert stub.item_feat["item_id"].tolist() == ["3", "1", "2"]
    assert [t.tolist() for t in stub.item_feat["joint_sid"]] == [["l1_3", "l2_joint"], ["l1_1", "l2_joint"],
                                                                 ["l1_2", "l2_joint"]]
    assert [r.getMessage() for r in caplog.records if r.name == stub.logger.name] == [
        "SID fields added to the item features: ['joint_sid', 'text_sid'] (vq, L=2, k=5)"]


def test_the_hook_merges_into_loaded_item_features_and_refuses_a_clash(tmp_path, monkeypatch):
    import pandas as pd

    items = pd.DataFrame({"item_id": [5, 2, 4], "genre": ["a", "b", "c"]})  # 4: no interaction; 1, 3: no row
    stub = _StubDataset(item_feat=items)
    [call] = _hook(stub, tmp_path, monkeypatch, modalities=["text"])
    assert call["item_ids"] == ["3", "1", "2", "5", "4"]
    assert stub.item_feat["item_id"].tolist() == ["5", "2", "4"] and stub.item_feat["genre"].tolist() == ["a", "b", "c"]
    assert [t.tolist() for t in stub.item_feat["text_sid"]] == [["l1_5", "l2_text"], ["l1_2", "l2_text"],
                                                                ["l1_4", "l2_text"]]
    clash = _StubDataset(item_feat=pd.DataFrame({"item_id": ["1"], "text_sid": ["x"]}))
    with pytest.raises(ConfigError) as error:
        _hook(clash, tmp_path, monkeypatch, modalities=["text", "joint"])
    assert str(error.value) == (f"{tmp_path / 'ds.item'} already has column(s) ['text_sid']; remove them from "
                                "load_col or from sid_modalities.")


@pytest.mark.parametrize("fraction, modalities, kept, added", [
    (None, ["text"], [], [["text"]]), (None, [], [], []), ("0.5", "all", [0.5], ["all"]), (1, None, [1.0], [])])
def test_load_data_filters_users_then_adds_the_sid_fields(fraction, modalities, kept, added):
    from recbole_psrq.data.dataset import SIDFieldsMixin

    loaded = []

    class Base:
        def _load_data(self, token, dataset_path):
            loaded.append((token, dataset_path))

    class Stub(SIDFieldsMixin, Base):
        config = {"user_fraction": fraction, "sid_modalities": modalities}

        def _keep_user_fraction(self, f):
            kept_calls.append(f)

        def _add_sid_fields(self, m, token, dataset_path):
            added_calls.append(m)
            assert (token, dataset_path) == ("ds", "/data/ds")

    kept_calls, added_calls = [], []
    Stub()._load_data("ds", "/data/ds")
    assert loaded == [("ds", "/data/ds")] and kept_calls == kept and added_calls == added
    assert all(type(f) is float for f in kept_calls)


def test_keep_user_fraction_keeps_the_hashed_users_with_all_their_rows(caplog):
    import hashlib
    from types import SimpleNamespace

    import pandas as pd

    from recbole_psrq.data.dataset import SIDFieldsMixin

    users = list(range(40))  # read as strings: the hash is of the raw token
    rows = [u for u in users for _ in range(2)]
    expected = {u for u in users
                if int.from_bytes(hashlib.sha256(str(u).encode()).digest()[:8], "big") < 0.5 * 2 ** 64}
    assert 0 < len(expected) < 40

    def stub(user_feat=True):
        return SimpleNamespace(
            uid_field="user_id", dataset_name="ds", logger=logging.getLogger("recbole_psrq.tests.stub_dataset"),
            inter_feat=pd.DataFrame({"user_id": rows, "item_id": range(80)}),
            user_feat=pd.DataFrame({"user_id": users[::-1], "age": range(40)}) if user_feat else None)

    dataset = stub()
    with caplog.at_level(logging.INFO):
        SIDFieldsMixin._keep_user_fraction(dataset, 0.5)
    kept_rows = [n for n, u in enumerate(rows) if u in expected]
    assert dataset.inter_feat["item_id"].tolist() == kept_rows  # all their rows, in order
    assert dataset.inter_feat.index.tolist() == list(range(len(kept_rows)))
    assert dataset.user_feat["user_id"].tolist() == [u for u in users[::-1] if u in expected]
    assert dataset.user_feat.index.tolist() == list(range(len(expected)))
    assert dataset.inter_feat.columns.tolist() == ["user_id", "item_id"]  # no old index left as a column
    assert dataset.user_feat.columns.tolist() == ["user_id", "age"]
    assert [r.getMessage() for r in caplog.records if r.name == "recbole_psrq.tests.stub_dataset"] == [
        f"user_fraction 0.5: kept {len(expected)} of 40 users ({len(kept_rows)} rows)"]
    without_user_feat = stub(user_feat=False)
    SIDFieldsMixin._keep_user_fraction(without_user_feat, 0.5)
    assert without_user_feat.inter_feat["item_id"].tolist() == kept_rows and without_user_feat.user_feat is None
    everyone = stub()
    inter_feat = everyone.inter_feat
    SIDFieldsMixin._keep_user_fraction(everyone, 1)
    assert everyone.inter_feat is inter_feat  # 1: nothing to filter
    with pytest.raises(ConfigError) as error:
        SIDFieldsMixin._keep_user_fraction(stub(), 1e-9)
    assert str(error.value) == "user_fraction 1e-09 keeps none of the 40 users of 'ds'; use a larger fraction."
    for fraction in (0, -0.5, 1.5):
        with pytest.raises(ConfigError, match=rf"^user_fraction .*\(0, 1\], got {fraction}\.$"):
            SIDFieldsMixin._keep_user_fraction(stub(), fraction)


def test_labels_of_none_of_the_items_give_a_report_without_label_metrics(tmp_path, caplog):
    x = _x(60, 8)
    files = {"text": _save(tmp_path, "t.npz", IDS, x)}
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _tokens(tmp_path, files, ["text"], labels={"another-item": "rock"})
    with open(os.path.join(_entry(tmp_path), "report.json")) as f:
        report = json.load(f)["report"]
    assert "labelled_items" not in report and "nmi_labels" not in report
    assert [r.getMessage() for r in caplog.records if "label" in r.getMessage()] == [
        "text_sid: no item has a label in the labels given; the quality report has no label metrics"]
