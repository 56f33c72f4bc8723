import json
import logging
import os

import numpy as np
import pytest

from recbole_psrq import quick_start
from recbole_psrq.data import sid_fields
from recbole_psrq.data.embeddings import load_item_embeddings, save_item_embeddings
from recbole_psrq.data.sid_fields import compute_sid_tokens
from recbole_psrq.errors import ConfigError, DataFormatError
from tests.conftest import one_epoch, same_metrics

SID = {"sid_codebook_size": 8, "sid_levels": 3}


def _emb(folder, name, ids, dim, seed=0):
    x = np.random.default_rng(seed).normal(size=(len(ids), dim)).astype(np.float32)
    path = os.path.join(folder, name)
    save_item_embeddings(path, ids, x)
    return path


@pytest.fixture
def ids():
    return [f"i{n}" for n in range(60)]


def _tokens(ids, files, modalities, tmp_path, **kw):
    return compute_sid_tokens(ids, files, modalities, quantizer="rq_kmeans", n_levels=2,
                              codebook_size=4, cache_dir=str(tmp_path / "cache"), **kw)


def test_tokens_are_level_prefixed_and_aligned_by_id(tmp_path, ids):
    text = _emb(tmp_path, "t.npz", ids, 8)
    shuffled = list(reversed(ids))
    file_ids, x = load_item_embeddings(text)
    save_item_embeddings(str(tmp_path / "rev.npz"), shuffled, x[::-1])  # same rows, other order
    a = _tokens(ids, {"text": text}, ["text"], tmp_path)["text_sid"]
    b = _tokens(ids, {"text": str(tmp_path / "rev.npz")}, ["text"], tmp_path / "b")["text_sid"]
    assert a == b  # row order of the file does not matter, ids do
    for token in a:
        first, second = token.split(" ")
        assert first.startswith("l1_") and second.startswith("l2_")


def test_missing_modality_gets_unknown_code_and_a_warning(tmp_path, ids, caplog):
    text = _emb(tmp_path, "t.npz", ids, 8)
    audio = _emb(tmp_path, "a.npz", ids[:50], 6)  # 10 items lack audio
    with caplog.at_level(logging.WARNING):
        fields = _tokens(ids, {"text": text, "audio": audio}, ["text", "audio", "joint"], tmp_path)
    assert fields["audio_sid"][55] == "l1_unk l2_unk" and fields["joint_sid"][55] == "l1_unk l2_unk"
    assert "unk" not in fields["text_sid"][55] and "unk" not in fields["audio_sid"][5]
    assert "10 of 60 items have no audio embedding" in caplog.text
    assert "10 of 60 items have no joint embedding" in caplog.text


def test_ids_that_do_not_match_are_an_error_naming_the_file(tmp_path, ids):
    text = _emb(tmp_path, "t.npz", [f"track-{n}" for n in range(60)], 8)
    with pytest.raises(DataFormatError, match=r"t\.npz: 60 of the dataset's 60 items have no text"):
        _tokens(ids, {"text": text}, ["text"], tmp_path)


def test_nan_embedding_row_names_the_item(tmp_path, ids):
    _, x = ids, np.random.default_rng(0).normal(size=(60, 8))
    x[7, 3] = np.nan
    save_item_embeddings(str(tmp_path / "t.npz"), ids, x)
    with pytest.raises(DataFormatError, match=r"NaN/inf values in their text embedding, e\.g\. \['i7'\]"):
        _tokens(ids, {"text": str(tmp_path / "t.npz")}, ["text"], tmp_path)


def test_fewer_items_than_codebook_entries(tmp_path, ids):
    text = _emb(tmp_path, "t.npz", ids, 8)
    with pytest.raises(DataFormatError, match="only N=60 items but codebook_size k=64"):
        compute_sid_tokens(ids, {"text": text}, ["text"], codebook_size=64,
                           cache_dir=str(tmp_path / "c"))


def test_dimension_changed_since_the_quantizer_was_saved(tmp_path, ids):
    from recbole_psrq.quantization import build_quantizer

    old = np.random.default_rng(1).normal(size=(60, 16)).astype(np.float32)
    build_quantizer("rq_kmeans", n_levels=2, codebook_size=4).fit(old).save(str(tmp_path / "q.npz"))
    text = _emb(tmp_path, "t.npz", ids, 8)
    with pytest.raises(DataFormatError, match="fitted on 16-d text embeddings but the current ones are 8-d"):
        _tokens(ids, {"text": text}, ["text"], tmp_path, quantizer_files={"text": str(tmp_path / "q.npz")})


def test_second_call_reuses_the_cache_and_evaluation_never_refits(tmp_path, ids, monkeypatch, caplog):
    text = _emb(tmp_path, "t.npz", ids, 8)
    first = _tokens(ids, {"text": text}, ["text"], tmp_path)
    import recbole_psrq.quantization as q

    monkeypatch.setattr(q, "build_quantizer", lambda *a, **k: pytest.fail("refit on a cache hit"))
    with caplog.at_level(logging.INFO):
        assert _tokens(ids, {"text": text}, ["text"], tmp_path, allow_fit=False) == first
    assert "reusing cached SIDs" in caplog.text
    with pytest.raises(ConfigError, match="may not fit quantizers"):
        _tokens(ids, {"text": text}, ["text"], tmp_path / "empty", allow_fit=False)


def test_prefix_weight_auto_by_config_with_weights_and_warnings_in_the_log_and_cache(tmp_path, ids, caplog):
    text = _emb(tmp_path, "t.npz", ids, 8)
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO):
        compute_sid_tokens(ids, {"text": text}, ["text"], quantizer="psrq", n_levels=3, codebook_size=4,
                           quantizer_options={"prefix_weight": "auto"}, cache_dir=str(cache))
    [entry] = os.listdir(cache / "dataset")
    with open(cache / "dataset" / entry / "report.json") as f:
        saved = json.load(f)
    assert saved["settings"]["options"] == {"prefix_weight": "auto"}
    weights = saved["report"]["prefix_weights"]
    # random 8-d points, k = 4: the residual stays larger than the prefix, so w > 1 here
    assert weights[0] is None and all(w > 0 and abs(w - 1) > 0.05 for w in weights[1:])
    assert f"prefix_weight auto = {weights[1]:.4f}" in caplog.text
    # 60 random items, k = 4, L = 3: at most 64 SIDs, far fewer distinct ones in practice
    share = saved["report"]["distinct_sid_share"]
    assert share < 0.5 and saved["report"]["warnings"]
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warned] == saved["report"]["warnings"]
    assert warned[-1].getMessage().startswith(f"text_sid: only {saved['report']['unique_sids']} distinct")
    with pytest.raises(ConfigError, match="prefix_weight must be a number >= 0 or 'auto'"):
        compute_sid_tokens(ids, {"text": text}, ["text"], quantizer="psrq", codebook_size=4,
                           quantizer_options={"prefix_weight": "equal"}, cache_dir=str(cache))


def test_changed_embeddings_get_a_new_cache_entry(tmp_path, ids):
    text = _emb(tmp_path, "t.npz", ids, 8)
    _tokens(ids, {"text": text}, ["text"], tmp_path)
    _emb(tmp_path, "t.npz", ids, 8, seed=5)
    _tokens(ids, {"text": text}, ["text"], tmp_path)
    assert len(os.listdir(tmp_path / "cache" / "dataset")) == 2


def test_unknown_modality_is_a_config_error(tmp_path, ids):
    with pytest.raises(ConfigError, match="unknown modality \\['lyrics'\\]"):
        _tokens(ids, {}, ["lyrics"], tmp_path)


@pytest.mark.parametrize("model", ["DIN", "DeepFM", "SASRec"])
def test_hook_adds_remapped_sid_fields_to_recbole_datasets(model, tiny_data_path, workdir, caplog):
    config = quick_start.build_config(model, overrides={
        "data_path": tiny_data_path, "sid_modalities": "['text', 'audio', 'joint']", **SID})
    with caplog.at_level(logging.INFO):
        dataset = quick_start.create_dataset(config)
    assert "SID fields added to the item features: ['audio_sid', 'joint_sid', 'text_sid']" in caplog.text
    from recbole.data import data_preparation

    train_data, _, _ = data_preparation(config, dataset)
    item_feat = train_data._dataset.get_item_feature()
    for field in ("text_sid", "audio_sid", "joint_sid"):
        codes = item_feat[field]
        assert codes.shape == (dataset.item_num, 3)
        assert (codes[1:] > 0).all()  # every real item has a code at every level (0 = padding)
        tokens = dataset.field2id_token[field]
        for level in range(3):  # each column only holds tokens of its own level
            assert all(tokens[t].startswith(f"l{level + 1}_") for t in codes[1:, level].tolist())


@pytest.mark.slow
def test_din_consumes_text_sid_by_config_alone(tiny_data_path, workdir):
    result = quick_start.run("DIN", config_files=[os.path.join(
        quick_start.PROPERTIES_DIR, "sid", "din_text_sid.yaml")], overrides=one_epoch(tiny_data_path, **SID))
    assert 0 <= result["test_result"]["auc"] <= 1
    assert os.listdir(workdir / "saved" / "sid_cache" / "synthetic_music")[0].startswith("text_sid-psrq-")
    # the checkpoint re-evaluation reuses that cache (sid_fit is False there)
    assert same_metrics(quick_start.evaluate_checkpoint(result["checkpoint"]), result["test_result"])


def test_dien_gets_sid_fields_through_the_projects_dataset(tiny_data_path, workdir):
    config = quick_start.build_config("DIEN", overrides={
        "data_path": tiny_data_path, "sid_modalities": "['text']", **SID})
    dataset = quick_start.create_dataset(config)
    from recbole.data import data_preparation

    train_data, _, _ = data_preparation(config, dataset)
    codes = train_data._dataset.get_item_feature()["text_sid"]
    assert codes.shape == (dataset.item_num, 3) and (codes[1:] > 0).all()


@pytest.mark.slow
def test_checkpoint_evaluation_stops_on_a_corrupt_sid_cache_entry(tiny_data_path, workdir):
    result = quick_start.run("DIN", config_files=[os.path.join(
        quick_start.PROPERTIES_DIR, "sid", "din_text_sid.yaml")], overrides=one_epoch(tiny_data_path, **SID))
    cache = workdir / "saved" / "sid_cache" / "synthetic_music"
    (entry,) = cache.iterdir()
    table = entry / "sids.npz"
    table.write_bytes(table.read_bytes()[:200])
    with pytest.raises(ConfigError, match=f"the cached SIDs in .*{entry.name} are corrupt .*Delete the folder"):
        quick_start.evaluate_checkpoint(result["checkpoint"])


# ----------------------------------------------------------------- modalities are names
def test_any_named_modalities_and_a_configurable_joint(tmp_path, ids):
    files = {"text": _emb(tmp_path, "t.npz", ids, 8), "lyrics": _emb(tmp_path, "l.npz", ids, 5, seed=1),
             "audio": _emb(tmp_path, "a.npz", ids, 6, seed=2)}
    fields = _tokens(ids, files, ["lyrics", "joint"], tmp_path, joint_modalities=["text", "lyrics"])
    assert list(fields) == ["lyrics_sid", "joint_sid"]
    assert sorted(n.split("-")[0] for n in os.listdir(tmp_path / "cache" / "dataset")) == ["joint_sid", "lyrics_sid"]
    # the joint SID quantizes exactly [l2norm(text) ; l2norm(lyrics)], in the listed order
    x = np.concatenate([sid_fields._l2(load_item_embeddings(files[m])[1]) for m in ("text", "lyrics")], axis=1)
    save_item_embeddings(str(tmp_path / "tl.npz"), ids, x, dtype=np.float32)
    direct = _tokens(ids, {"tl": str(tmp_path / "tl.npz")}, ["tl"], tmp_path / "direct")["tl_sid"]
    assert fields["joint_sid"] == direct
    assert _tokens(ids, files, ["joint"], tmp_path)["joint_sid"] != direct  # default: text, lyrics, audio


def test_all_is_every_declared_modality_then_joint(tmp_path, ids):
    files = {"audio": _emb(tmp_path, "a.npz", ids, 6), "text": _emb(tmp_path, "t.npz", ids, 8, seed=1)}
    fields = _tokens(ids, files, "all", tmp_path)
    assert list(fields) == ["audio_sid", "text_sid", "joint_sid"]


def test_joint_of_one_modality_is_that_modalitys_sid(tmp_path, ids):
    files = {"text": _emb(tmp_path, "t.npz", ids, 8)}
    fields = _tokens(ids, files, "all", tmp_path)
    assert fields["joint_sid"] == fields["text_sid"]
    assert [n.split("-")[0] for n in os.listdir(tmp_path / "cache" / "dataset")] == ["text_sid"]  # fitted once


def test_cache_keys_are_stable_for_the_same_inputs_settings_and_option_defaults(tmp_path, ids):
    """Caches stay valid across code changes that change nothing they hold: the folder names (content keys)
    below were written on these exact inputs when the key gained the quantizer's option defaults (a
    changed default, e.g. RQ-VAE's epochs, must refit; it changed every key once)."""
    rng = np.random.default_rng(0)
    save_item_embeddings(str(tmp_path / "t.npz"), ids, rng.normal(size=(60, 8)))
    save_item_embeddings(str(tmp_path / "a.npz"), ids[:50], rng.normal(size=(50, 6)))
    _tokens(ids, {"text": str(tmp_path / "t.npz"), "audio": str(tmp_path / "a.npz")}, ["text", "audio", "joint"],
            tmp_path)
    assert sorted(os.listdir(tmp_path / "cache" / "dataset")) == [
        "audio_sid-rq_kmeans-b727dc708266fd05", "joint_sid-rq_kmeans-154ffbca0faecc04",
        "text_sid-rq_kmeans-aab9822d20494ccb"]


@pytest.mark.parametrize("files, modalities, joint, message", [
    ({"text": "t.npz"}, ["lyrics"], None, r"sid_modalities: unknown modality \['lyrics'\].*declares \['text'\]"),
    ({"text": "t.npz", "lyrics": None}, ["text"], None,
     r"sid_embedding_files declares the modality 'lyrics' without an embedding file"),
    ({"text": "t.npz", "lyrics": "missing.npz"}, ["lyrics"], None,
     r"sid_embedding_files: the lyrics embedding file .*missing\.npz does not exist"),
    ({}, "all", None, r"sid_modalities \(\['joint'\]\) asks for the joint SID, but sid_embedding_files declares no"),
    ({"text": "t.npz"}, ["joint"], ["text", "image"],
     r"sid_joint_modalities: \['text', 'image'\] must list one or more distinct declared modalities"),
    ({"text": "t.npz", "joint": "t.npz"}, ["text"], None, r"sid_embedding_files .*'joint' cannot be a modality name"),
    ({"text": "t.npz", "my lyrics": "t.npz"}, ["text"], None, r"'my lyrics' cannot be a modality name"),
])
def test_bad_modality_config_is_one_paragraph_naming_key_and_fix(tmp_path, ids, files, modalities, joint,
                                                                  message):
    _emb(tmp_path, "t.npz", ids, 8)
    files = {m: f and str(tmp_path / f) for m, f in files.items()}
    with pytest.raises(ConfigError, match=message) as error:
        _tokens(ids, files, modalities, tmp_path, joint_modalities=joint)
    assert "\n" not in str(error.value)


# ----------------------------------------------------------------- the joint SID, computed independently
def _joint_by_hand(ids, matrices, tmp_path, normalise=True):
    """SID tokens of a quantizer fitted here on [x_1 / |x_1| ; x_2 / |x_2| ; ...] (the norms computed here,
    not with sid_fields' helper), with the settings of ``_tokens``."""
    from recbole_psrq.quantization import build_quantizer

    parts = [x / np.linalg.norm(x, axis=1, keepdims=True) if normalise else x for x in matrices]
    x = np.concatenate(parts, axis=1).astype(np.float32)
    codes = build_quantizer("rq_kmeans", n_levels=2, codebook_size=4).fit(x).encode(x)
    return [f"l1_{a} l2_{b}" for a, b in codes]


def test_joint_sid_equals_a_quantizer_fitted_on_the_l2_normalised_concatenation(tmp_path, ids):
    rng = np.random.default_rng(11)
    text = 1000.0 * rng.normal(size=(60, 8))  # widths and scales differ: unnormalised, text would dominate
    audio = 0.01 * rng.normal(size=(60, 3))
    save_item_embeddings(str(tmp_path / "t.npz"), ids, text)
    save_item_embeddings(str(tmp_path / "a.npz"), ids, audio)
    files = {"text": str(tmp_path / "t.npz"), "audio": str(tmp_path / "a.npz")}
    joint = _tokens(ids, files, ["joint"], tmp_path)["joint_sid"]
    _, text32 = load_item_embeddings(files["text"])
    _, audio32 = load_item_embeddings(files["audio"])
    assert joint == _joint_by_hand(ids, [text32, audio32], tmp_path)
    # the normalisation per modality matters on these inputs: without it the SIDs differ
    assert joint != _joint_by_hand(ids, [text32, audio32], tmp_path, normalise=False)
    # and the order of the concatenation is the declaration order (audio first here)
    swapped = _tokens(ids, {"audio": files["audio"], "text": files["text"]}, ["joint"], tmp_path / "swap")
    assert swapped["joint_sid"] == _joint_by_hand(ids, [audio32, text32], tmp_path)


def test_equal_text_and_different_audio_give_different_joint_sids(tmp_path, ids):
    """Four clear clusters of (text, audio): items 0 and 2 have the very same text embedding but audio from
    opposite clusters, so their text SIDs are equal and their joint SIDs must differ (already at level 1)."""
    rng = np.random.default_rng(5)
    t = np.array([n % 2 for n in range(60)])
    a = np.array([(n // 2) % 2 for n in range(60)])
    text = np.stack([np.eye(8)[0], np.eye(8)[1]])[t] + 0.01 * rng.normal(size=(60, 8))
    audio = np.stack([np.eye(6)[0], -np.eye(6)[0]])[a] + 0.01 * rng.normal(size=(60, 6))
    text[2] = text[0]
    assert t[0] == t[2] and a[0] != a[2]
    save_item_embeddings(str(tmp_path / "t.npz"), ids, text)
    save_item_embeddings(str(tmp_path / "a.npz"), ids, audio)
    fields = _tokens(ids, {"text": str(tmp_path / "t.npz"), "audio": str(tmp_path / "a.npz")},
                     ["text", "audio", "joint"], tmp_path)
    assert fields["text_sid"][0] == fields["text_sid"][2]
    assert fields["audio_sid"][0].split()[0] != fields["audio_sid"][2].split()[0]
    assert fields["joint_sid"][0].split()[0] != fields["joint_sid"][2].split()[0]
    # the level-1 joint code separates exactly the four (text, audio) clusters
    level1 = [s.split()[0] for s in fields["joint_sid"]]
    assert len(set(level1)) == 4
    assert all((level1[i] == level1[j]) == ((t[i], a[i]) == (t[j], a[j])) for i in range(60) for j in range(60))


def test_an_unfitted_quantizer_names_the_refused_action(tmp_path):
    """quantization/base.py: encode, decode and save of a quantizer that was never fitted (e.g. a broken
    cache entry) fail with the action named, and save writes nothing."""
    from recbole_psrq.quantization import build_quantizer

    quantizer = build_quantizer("rq_kmeans", n_levels=2, codebook_size=4)
    calls = {"encode": lambda: quantizer.encode(np.zeros((3, 4))),
             "decode": lambda: quantizer.decode(np.zeros((3, 2), dtype=np.int64)),
             "save": lambda: quantizer.save(str(tmp_path / "q.npz"))}
    for action, call in calls.items():
        with pytest.raises(ConfigError, match=rf"^Cannot {action}: quantizer 'rq_kmeans' is not fitted yet\. "
                                              r"Call fit\(X\) first or load a saved quantizer"):
            call()
    assert not os.listdir(tmp_path)
