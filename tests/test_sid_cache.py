"""SID cache entries carry a manifest of sha256 digests and are verified when read
(recbole_psrq/data/sid_fields.py)."""
import json
import logging
import os

import numpy as np
import pytest

import recbole_psrq.quantization as quantization
from recbole_psrq.data.embeddings import save_item_embeddings
from recbole_psrq.data.sid_fields import compute_sid_tokens
from recbole_psrq.errors import ConfigError
from recbole_psrq.io import file_digest

IDS = [f"i{n}" for n in range(60)]


@pytest.fixture
def text(tmp_path):
    path = str(tmp_path / "t.npz")
    save_item_embeddings(path, IDS, np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32))
    return path


def _tokens(text, tmp_path, **kw):
    return compute_sid_tokens(IDS, {"text": text}, ["text"], quantizer="rq_kmeans", n_levels=2,
                              codebook_size=4, cache_dir=str(tmp_path / "cache"), **kw)["text_sid"]


def _entry(tmp_path):
    (name,) = os.listdir(tmp_path / "cache" / "dataset")
    return tmp_path / "cache" / "dataset" / name


def _count_fits(monkeypatch):
    fits = []
    build = quantization.build_quantizer
    monkeypatch.setattr(quantization, "build_quantizer", lambda *a, **k: fits.append(1) or build(*a, **k))
    return fits


def test_an_entry_lists_the_sha256_of_each_of_its_files(text, tmp_path):
    _tokens(text, tmp_path)
    entry = _entry(tmp_path)
    manifest = json.loads((entry / "manifest.json").read_text())["sha256"]
    assert sorted(manifest) == ["quantizer.npz", "report.json", "sids.npz"]
    for name, digest in manifest.items():
        assert file_digest(str(entry / name)) == digest


@pytest.mark.parametrize("damage", ["truncate", "other_codes", "no_manifest"])
def test_a_corrupt_entry_is_refit_with_a_warning(damage, text, tmp_path, monkeypatch, caplog):
    first = _tokens(text, tmp_path)
    entry = _entry(tmp_path)
    table = entry / "sids.npz"
    if damage == "truncate":  # numpy used to raise zipfile.BadZipFile from deep inside np.load
        table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    elif damage == "other_codes":  # a readable table whose codes were changed after the fit
        with np.load(table) as data:
            np.savez(table, item_id=data["item_id"], codes=(data["codes"] + 1) % 4)
    else:
        (entry / "manifest.json").unlink()
    fits = _count_fits(monkeypatch)
    with caplog.at_level(logging.WARNING):
        assert _tokens(text, tmp_path) == first
    assert fits == [1]
    assert f"the cached SIDs in {entry} are corrupt" in caplog.text and "refitting" in caplog.text
    assert os.listdir(tmp_path / "cache" / "dataset") == [entry.name]  # replaced, nothing left aside
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert _tokens(text, tmp_path, allow_fit=False) == first  # the rewritten entry verifies
    assert "reusing cached SIDs" in caplog.text and fits == [1]


def test_a_corrupt_entry_without_refit_is_an_error_naming_the_folder(text, tmp_path, monkeypatch):
    _tokens(text, tmp_path)
    entry = _entry(tmp_path)
    table = entry / "sids.npz"
    table.write_bytes(table.read_bytes()[:100])
    fits = _count_fits(monkeypatch)
    with pytest.raises(ConfigError) as error:
        _tokens(text, tmp_path, allow_fit=False)
    message = str(error.value)
    assert f"the cached SIDs in {entry} are corrupt (sids.npz does not match the sha256 in manifest.json)" \
        in message
    assert f"Delete the folder {entry} and rerun the training" in message and "\n" not in message
    assert fits == [] and table.stat().st_size == 100  # neither refit nor removed


def test_a_changed_option_default_gives_a_new_cache_entry(monkeypatch):
    from recbole_psrq.data import sid_fields
    from recbole_psrq.quantization import QUANTIZERS

    ids, x = ["a", "b"], np.zeros((2, 3), dtype=np.float32)
    settings = dict(quantizer="rq_vae", n_levels=2, codebook_size=4, seed=0, options={})
    before = sid_fields._cache_key(ids, x, "text", settings, None)
    monkeypatch.setitem(QUANTIZERS["rq_vae"].OPTIONS, "epochs", 7)
    assert sid_fields._cache_key(ids, x, "text", settings, None) != before
