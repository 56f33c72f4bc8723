"""MPD converter: hand-written fixtures (tests/fixtures/mpd) + one integration test on the real 5k copy."""
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recbole_psrq.convert import cli as convert_cli
from recbole_psrq.convert import mpd
from recbole_psrq.data.embeddings import load_item_embeddings
from recbole_psrq.errors import ConfigError, DataFormatError

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "mpd"
AUDIO = FIXTURES / "artists_audio.csv"
GENRES = FIXTURES / "artists_genres.csv"


@pytest.fixture(scope="session")
def mpd_fixtures(tmp_path_factory):
    """The hand-written fixtures staged under real MPD slice names (``fixture.X.json`` ->
    ``mpd.slice.X.json``); the repo keeps no file named like the licensed MPD slices."""
    root = tmp_path_factory.mktemp("mpd_fixtures")
    for src in FIXTURES.glob("*/fixture.*.json"):
        dest = root / src.parent.name / src.name.replace("fixture.", "mpd.slice.", 1)
        dest.parent.mkdir(exist_ok=True)
        shutil.copyfile(src, dest)
    return root
SHARED = REPO.parent / "shared" / "data"
MPD_5K = SHARED / "mpd_soundscout_5k" / "backend" / "data"
ARTIST_DIR = SHARED / "spotify_1921_2020_artist_audio"


def read_inter(folder, name):
    return pd.read_csv(os.path.join(folder, f"{name}.inter"), sep="\t", dtype={"user_id:token": str})


def convert(tmp_path, inputs, name="fx", **kw):
    out = tmp_path / name
    kw.setdefault("encode_text", False)
    kw.setdefault("progress", False)
    stats = mpd.convert_mpd(inputs, out, name, **kw)
    return out, stats


# ---------------------------------------------------------------------------------------------- helpers
def test_normalize_name_and_genres():
    assert mpd.normalize_name("  The  BEATLES") == mpd.normalize_name("The Beatles") == "the beatles"
    assert mpd.normalize_name("Ｑｕｅｅｎ\u00a0 Band") == "queen band"  # NFKC full-width + nbsp
    assert mpd.parse_genres("['pop', 'dance pop']") == ["pop", "dance pop"]
    assert mpd.parse_genres("pop, dance pop") == ["pop", "dance pop"]
    assert mpd.parse_genres("[]") == []
    assert mpd.parse_genres("['grunge', 'rock'") == []  # malformed list string -> empty
    assert mpd.parse_genres(float("nan")) == []


# ---------------------------------------------------------------------------------------- with `pos`
def test_with_pos_order_counts_and_audio_join(mpd_fixtures, tmp_path):
    out, s = convert(tmp_path, [mpd_fixtures / "with_pos"], audio_csv=[AUDIO], genres_csv=GENRES, negatives=1, seed=3)
    assert s["playlists"] == 2 and s["playlists_with_pos"] == 2 and s["raw_rows"] == 7
    assert s["duplicate_rows_removed"] == 1
    assert (s["users"], s["items"], s["positive_rows"], s["negative_rows"]) == (2, 5, 6, 6)
    inter = read_inter(out, "fx")
    pos = inter[inter["label:float"] == 1]
    # users in numeric pid order (2 before 10), tracks in `pos` order, not list order; duplicate A dropped
    assert pos["user_id:token"].tolist() == ["2", "2", "2", "10", "10", "10"]
    ids = [u.split(":")[-1] for u in pos["item_id:token"]]
    assert ids == ["B", "D", "E", "A", "B", "C"]
    assert pos["timestamp:float"].tolist() == [0, 2, 4, 0, 2, 4]
    # each positive is directly followed by its negative at time + 1
    assert inter["label:float"].tolist() == [1, 0] * 6
    assert (inter["timestamp:float"].to_numpy()[1::2] == pos["timestamp:float"].to_numpy() + 1).all()

    # audio: "  The  BEATLES" matches "The Beatles"; duplicate "Queen"/"queen" -> larger count; Unknown Band absent
    a = s["audio"]
    assert a["items_with_audio"] == 4 and a["items_with_audio_pct"] == 80.0
    assert a["positive_rows_with_audio"] == 5 and a["artists_matched"] == 3
    ids_a, emb = load_item_embeddings(out / "fx.audio.npz")
    assert sorted(ids_a) == ["spotify:track:A", "spotify:track:B", "spotify:track:C", "spotify:track:E"]
    assert emb.shape == (4, len(mpd.AUDIO_COLUMNS))
    by_id = dict(zip(ids_a, emb))
    np.testing.assert_array_equal(by_id["spotify:track:A"], by_id["spotify:track:E"])  # same artist
    raw = np.array([0.2, 0.05, 0.3])  # acousticness of Queen (count 200 row), Nirvana, Beatles
    z_queen = (0.2 - raw.mean()) / raw.std()
    assert by_id["spotify:track:A"][0] == pytest.approx(z_queen, abs=2e-3)
    # standardised over the distinct matched artists
    per_artist = np.stack([by_id["spotify:track:A"], by_id["spotify:track:B"], by_id["spotify:track:C"]])
    np.testing.assert_allclose(per_artist.mean(0), 0, atol=2e-3)
    readme = (out / "README.md").read_text()
    assert "All tracks of one artist share one audio vector" in readme
    assert "80.0%" in readme and "Do not commit or redistribute" in readme

    # item file + text: genres from the genre table (list string, comma string, malformed -> none)
    item = pd.read_csv(out / "fx.item", sep="\t")
    assert list(item.columns) == ["item_id:token", "artist_id:token"]
    assert item.set_index("item_id:token").loc["spotify:track:C", "artist_id:token"] == "spotify:artist:beatles"
    text = pd.read_csv(out / "fx.item_text.tsv", sep="\t", quoting=3, keep_default_na=False).set_index("item_id")
    assert text.loc["spotify:track:C", "text"] == \
        "Let It Be by The BEATLES. Genres: british invasion, merseybeat, rock."
    assert text.loc["spotify:track:A", "text"] == "Bohemian Rhapsody by Queen. Genres: glam rock, rock."
    assert text.loc["spotify:track:B", "text"] == "Lithium by Nirvana."
    assert text.loc["spotify:track:D", "genres"] == ""


def test_artist_audio_is_what_encode_table_writes(mpd_fixtures, tmp_path, capsys):
    """The converter joins its audio tables with the table encoder's code: the same file from the CLI."""
    from recbole_psrq.encode import cli as encode_cli

    out, _ = convert(tmp_path, [mpd_fixtures / "with_pos"], audio_csv=[AUDIO], genres_csv=GENRES, seed=3)
    assert encode_cli.main(["table", "--dataset", str(out), "--file", str(AUDIO), "--key", "artists",
                            "--item-key", "artist_name", "--normalize-names", "--columns", ",".join(mpd.AUDIO_COLUMNS),
                            "--name", "table"]) == 0
    assert "4 of 5 items (80.0%)" in capsys.readouterr().out
    assert (out / "fx.table.npz").read_bytes() == (out / "fx.audio.npz").read_bytes()


def test_inconsistent_pos_is_rejected(tmp_path):
    data = {"playlists": [{"pid": 1, "tracks": [{"pos": 0, "track_uri": "spotify:track:a"},
                                                {"track_uri": "spotify:track:b"}]}]}
    f = tmp_path / "mpd.slice.0-999.json"
    f.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=r"pid=1.*track #1.*'pos' is missing"):
        convert(tmp_path, [f])


# ------------------------------------------------------------------------------------- without `pos`
def test_without_pos_list_order_and_counts(mpd_fixtures, tmp_path):
    out, s = convert(tmp_path, mpd_fixtures / "no_pos", negatives=2, seed=0)
    assert s["input_files"] == 2 and s["playlists"] == 4 and s["playlists_without_pos"] == 4
    assert s["raw_rows"] == 12 and s["duplicate_rows_removed"] == 1
    assert (s["users"], s["items"], s["positive_rows"]) == (4, 5, 11)
    assert s["negative_rows"] == 22 and s["rows"] == 33
    inter = read_inter(out, "fx")
    assert len(inter) == 33
    pos = inter[inter["label:float"] == 1]
    seqs = pos.groupby("user_id:token", sort=False)["item_id:token"].apply(
        lambda x: [i.split(":")[-1] for i in x]).to_dict()
    assert seqs == {"0": ["t1", "t2", "t3"], "1": ["t3", "t1", "t2"], "2": ["t4", "t2", "t3"], "3": ["t5", "t1"]}
    # positive at 3p, its negatives at 3p+1, 3p+2
    assert inter["timestamp:float"].tolist()[:9] == list(range(9))
    assert inter["label:float"].tolist()[:6] == [1, 0, 0, 1, 0, 0]
    # playlist 0 owns t1,t2,t3 -> its two negatives per positive are exactly {t4, t5}
    neg0 = inter[(inter["user_id:token"] == "0") & (inter["label:float"] == 0)]["item_id:token"]
    assert sorted(set(neg0)) == ["spotify:track:t4", "spotify:track:t5"]
    assert s["audio"] is None and not (out / "fx.audio.npz").exists()


def test_negatives_never_positive_of_same_playlist(tmp_path):
    rng = np.random.default_rng(1)
    playlists = []
    for pid in range(30):
        tracks = rng.choice(60, size=int(rng.integers(5, 25)), replace=False)
        playlists.append({"pid": pid, "tracks": [{"artist_name": f"a{t % 7}", "track_uri": f"spotify:track:{t}",
                                                   "track_name": f"song {t}"} for t in tracks]})
    f = tmp_path / "mpd.slice.0-999.json"
    f.write_text(json.dumps({"info": {}, "playlists": playlists}))
    for sampling in ("uniform", "popularity"):
        out, s = convert(tmp_path, [f], name=f"syn-{sampling}", negatives=4, seed=5, negative_sampling=sampling)
        inter = read_inter(out, f"syn-{sampling}")
        assert (inter["label:float"] == 0).sum() == 4 * (inter["label:float"] == 1).sum()
        positives = inter[inter["label:float"] == 1].groupby("user_id:token")["item_id:token"].apply(set)
        for user, grp in inter.groupby("user_id:token"):
            neg = grp[grp["label:float"] == 0]
            assert not (set(neg["item_id:token"]) & positives[user])
            # no duplicate within one positive's set (same position block)
            block = neg["timestamp:float"].to_numpy() // 5
            assert not pd.DataFrame({"b": block, "i": neg["item_id:token"].to_numpy()}).duplicated().any()
            # times distinct within the user -> unambiguous order
            assert grp["timestamp:float"].is_unique


def test_popularity_sampling_prefers_popular_items():
    # user 0 owns item 0; items 1, 2 have count 1, item 3 count 81 -> weights 1, 1, 27 (count**0.75)
    u = np.zeros(4000, dtype=np.int64)
    i = np.zeros(4000, dtype=np.int64)  # user 0 owns item 0
    probs = np.array([1, 1, 1, 81], dtype=float) ** mpd.POPULARITY_POWER
    r = mpd.sample_negatives(u, i, 4, 1, np.random.default_rng(0), probs=probs)
    assert not (r == 0).any()
    frac_hot = (r == 3).mean()
    assert abs(frac_hot - 27 / 29) < 0.03  # 81**0.75 = 27 vs 1 + 1
    r_uni = mpd.sample_negatives(u, i, 4, 1, np.random.default_rng(0))
    assert abs((r_uni == 3).mean() - 1 / 3) < 0.03


@pytest.mark.parametrize("max_rounds", [200, 1, 0])  # 1: most rows, 0: every row through the exact fallback
@pytest.mark.parametrize("weighted", [False, True])
def test_a_user_owning_most_of_the_catalogue_gets_exactly_the_rest(max_rounds, weighted):
    # 50 items; user 1 owns items 3..49 (47 positive rows), so its 2 negatives per row must come from
    # exactly {0, 1, 2}; its neighbours own items 1 (user 0) and 0 (user 2), which stay allowed for it
    u = np.array([0] + [1] * 47 + [2], dtype=np.int64)
    i = np.array([1] + list(range(3, 50)) + [0], dtype=np.int64)
    probs = np.linspace(1.0, 5.0, 50) if weighted else None
    r = mpd.sample_negatives(u, i, 50, 2, np.random.default_rng(0), probs=probs, max_rounds=max_rounds)
    assert r.shape == (49, 2) and r.dtype == np.int64
    heavy = r[1:48]
    assert set(heavy.ravel().tolist()) == {0, 1, 2} and (heavy[:, 0] != heavy[:, 1]).all()
    assert 1 not in r[0] and 0 not in r[48] and (r[[0, 48], 0] != r[[0, 48], 1]).all()


@pytest.mark.parametrize("max_rounds", [200, 0])  # the rejection rounds and the exact fallback
@pytest.mark.parametrize("probs, expected", [
    (None, [1 / 3, 1 / 3, 1 / 3, 0]),                     # uniform over the 3 items user 0 does not own
    ([1.0, 1.0, 98.0, 100.0], [0.01, 0.01, 0.98, 0]),     # by weight, renormalised without item 3
])
def test_negatives_follow_the_weights(max_rounds, probs, expected):
    u = np.zeros(3000, dtype=np.int64)
    i = np.full(3000, 3, dtype=np.int64)  # user 0 owns item 3
    r = mpd.sample_negatives(u, i, 4, 1, np.random.default_rng(0), probs=probs, max_rounds=max_rounds)
    np.testing.assert_allclose(np.bincount(r[:, 0], minlength=4) / 3000, expected, atol=0.03)


def test_no_rows_or_a_single_row():
    rng = np.random.default_rng(0)
    assert mpd.sample_negatives([], [], 5, 2, rng).shape == (0, 2)
    one = mpd.sample_negatives([0], [4], 5, 2, rng)
    assert one.shape == (1, 2) and len(set(one[0].tolist())) == 2 and set(one[0].tolist()) <= {0, 1, 2, 3}


def test_zero_weight_items_are_never_drawn():
    u = np.array([0, 0, 1], dtype=np.int64)
    i = np.array([0, 1, 2], dtype=np.int64)
    probs = [1, 1, 1, 0, 1, 0]  # integer weights (e.g. counts); items 3 and 5 never
    for max_rounds in (200, 1):
        r = mpd.sample_negatives(u, i, 6, 2, np.random.default_rng(1), probs=probs, max_rounds=max_rounds)
        assert sorted(r[0]) == sorted(r[1]) == [2, 4]  # user 0: all but its items 0, 1 and the zero weights
        assert set(r[2]) <= {0, 1, 4} and len(set(r[2])) == 2


@pytest.mark.parametrize("n_items, n_neg, probs, message", [
    # user 0 owns 4 of 5 items and asks for 2 negatives
    (5, 2, None, "Cannot draw 2 distinct negatives for user index 0: of the 5 items, 4 are its positives "
                 "and 0 have sampling weight 0, which leaves 1. 1 user(s) are short"),
    # room enough by count, but item 4 has weight 0
    (5, 1, [1, 1, 1, 1, 0], "of the 5 items, 4 are its positives and 1 have sampling weight 0, which leaves 0"),
    (5, 1, [1, 1, 1], "must be 5 finite numbers >= 0, one per item; got shape (3,)"),
    (5, 1, [1, 1, 1, 1, -1], "must be 5 finite numbers >= 0"),
])
def test_impossible_requests_fail_with_a_clear_error(n_items, n_neg, probs, message):
    u = np.array([0, 0, 0, 0, 1], dtype=np.int64)
    i = np.array([0, 1, 2, 3, 0], dtype=np.int64)
    with pytest.raises(ConfigError) as error:
        mpd.sample_negatives(u, i, n_items, n_neg, np.random.default_rng(0), probs=probs)
    assert message in str(error.value)


def test_same_seed_gives_identical_files(mpd_fixtures, tmp_path):
    a, _ = convert(tmp_path / "a", mpd_fixtures / "no_pos", audio_csv=[AUDIO], negatives=1, seed=7)
    b, _ = convert(tmp_path / "b", mpd_fixtures / "no_pos", audio_csv=[AUDIO], negatives=1, seed=7)
    for fname in ("fx.inter", "fx.item", "fx.item_text.tsv"):
        assert (a / fname).read_bytes() == (b / fname).read_bytes(), fname
    ia, ea = load_item_embeddings(a / "fx.audio.npz")
    ib, eb = load_item_embeddings(b / "fx.audio.npz")
    assert ia.tolist() == ib.tolist() and np.array_equal(ea, eb)


def test_different_seed_changes_negatives(tmp_path):
    rng = np.random.default_rng(0)
    playlists = [{"pid": p, "tracks": [{"track_uri": f"spotify:track:{t}", "artist_name": "a", "track_name": "t"}
                                       for t in rng.choice(200, 10, replace=False)]} for p in range(20)]
    f = tmp_path / "mpd.slice.0-999.json"
    f.write_text(json.dumps({"playlists": playlists}))
    a, _ = convert(tmp_path, [f], name="s1", seed=1)
    b, _ = convert(tmp_path, [f], name="s2", seed=2)
    assert (a / "s1.inter").read_bytes() != (b / "s2.inter").read_bytes()


def test_kcore_known_answer(mpd_fixtures, tmp_path):
    # no_pos after dedup: p0 {t1,t2,t3}, p1 {t3,t1,t2}, p2 {t4,t2,t3}, p3 {t5,t1}.
    # k=2: t4, t5 go (1 row each) -> p3 keeps only t1 -> p3 goes -> t1 still has 2 -> stable.
    out, s = convert(tmp_path, mpd_fixtures / "no_pos", kcore=2, negatives=0)
    assert (s["users"], s["items"], s["positive_rows"]) == (3, 3, 8)
    assert s["rows_removed_by_kcore"] == 3
    inter = read_inter(out, "fx")
    assert sorted(inter["user_id:token"].unique()) == ["0", "1", "2"]
    assert sorted(inter["item_id:token"].unique()) == ["spotify:track:t1", "spotify:track:t2", "spotify:track:t3"]
    # positions renumbered after filtering: p2 is (t2, t3) at times 0, 1
    p2 = inter[inter["user_id:token"] == "2"]
    assert p2["item_id:token"].tolist() == ["spotify:track:t2", "spotify:track:t3"]
    assert p2["timestamp:float"].tolist() == [0, 1]
    # k=3 removes everything (iterated) -> clear error
    with pytest.raises(ConfigError, match="k-core 3 removes every row"):
        convert(tmp_path, mpd_fixtures / "no_pos", name="k3", kcore=3, negatives=0)


def test_too_few_negative_candidates_is_an_error(mpd_fixtures, tmp_path):
    with pytest.raises(ConfigError, match=r"pid=0 .*--negatives 3"):
        convert(tmp_path, mpd_fixtures / "no_pos", negatives=3)


# ------------------------------------------------------------------------------------------ bad input
def test_malformed_json_message(mpd_fixtures, tmp_path):
    with pytest.raises(DataFormatError, match=r"mpd\.slice\.bad-json\.json: invalid JSON at line 1"):
        convert(tmp_path, [mpd_fixtures / "bad" / "mpd.slice.bad-json.json"])


def test_missing_playlists_message(mpd_fixtures, tmp_path):
    with pytest.raises(DataFormatError, match=r"no-playlists\.json: missing 'playlists'"):
        convert(tmp_path, [mpd_fixtures / "bad" / "mpd.slice.no-playlists.json"])


def test_missing_track_uri_message(mpd_fixtures, tmp_path):
    with pytest.raises(DataFormatError, match=r"no-uri\.json: playlist pid=7 \(#0\), track #1 .*'track_uri'"):
        convert(tmp_path, [mpd_fixtures / "bad" / "mpd.slice.no-uri.json"])


def test_duplicate_pid_and_empty_dir(mpd_fixtures, tmp_path):
    f = mpd_fixtures / "no_pos" / "mpd.slice.0-999.json"
    g = tmp_path / "mpd.slice.copy.json"
    g.write_bytes(f.read_bytes())
    with pytest.raises(DataFormatError, match="pid 0 also appears"):
        convert(tmp_path, [f, g])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="no MPD slice files"):
        convert(tmp_path, [tmp_path / "empty"])


def test_bad_audio_table(mpd_fixtures, tmp_path):
    bad = tmp_path / "audio.csv"
    bad.write_text("artists,energy\nQueen,0.5\n")
    with pytest.raises(DataFormatError, match=r"audio\.csv: missing column"):
        convert(tmp_path, mpd_fixtures / "no_pos", audio_csv=[bad])


def test_cli(mpd_fixtures, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = convert_cli.main(["mpd", "--src", str(mpd_fixtures / "with_pos" / "mpd.slice.0-999.json"),
                           "--audio-csv", str(AUDIO), "--genres-csv", str(GENRES), "--out", str(out),
                           "--negatives", "2", "--negative-sampling", "popularity", "--seed", "1",
                           "--no-encode-text", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "2 users, 5 items, 6 positive + 12 negative rows" in printed
    assert "80.0% of items" in printed
    stats = json.loads((out / "cli.stats.json").read_text())
    assert stats["negative_sampling"] == "popularity" and stats["rows"] == 18
    assert "--negative-sampling popularity" in (out / "README.md").read_text()


def test_converter_writes_text_embeddings(mpd_fixtures, tmp_path, monkeypatch):
    """--encode-text path with a stub encoder (the real model is tested in test_encode_text.py)."""
    from recbole_psrq.encode import text as text_encoder

    seen = {}

    def fake_encode(item_ids, texts, model_path=None, batch_size=128, cache_dir=None, out_path=None, **kw):
        from recbole_psrq.data.embeddings import save_item_embeddings
        seen["texts"] = dict(zip(item_ids, texts))
        mat = np.eye(len(item_ids), 4, dtype=np.float32)
        save_item_embeddings(out_path, item_ids, mat)
        return np.asarray(item_ids), mat

    monkeypatch.setattr(text_encoder, "encode_texts", fake_encode)
    monkeypatch.setattr(text_encoder, "resolve_model_path", lambda p=None: "stub-model")
    out, s = convert(tmp_path, mpd_fixtures / "no_pos", encode_text=True, cache_dir=tmp_path / "cache")
    ids, emb = load_item_embeddings(out / "fx.text.npz")
    assert len(ids) == s["items"] == 5 and emb.shape == (5, 4)
    assert seen["texts"]["spotify:track:t4"] == "Four by The Beatles."


# ------------------------------------------------------------------------------------- real 5k copy
@pytest.mark.integration
def test_real_mpd_5k_converts_and_loads_in_recbole(tmp_path, monkeypatch):
    if not MPD_5K.is_dir():
        pytest.skip(f"real MPD 5k copy not found at {MPD_5K} (../shared/data is absent on this machine)")
    audio = [ARTIST_DIR / "OtuokereTobechukwu_Sonic-Analysis" / "data_by_artist.csv",
             ARTIST_DIR / "DinoGoEatChu_Recommender" / "data_w_genres.csv"]
    out, s = convert(tmp_path, MPD_5K, name="mpd-5k", audio_csv=audio, genres_csv=audio[1],
                     kcore=5, negatives=1, seed=0)
    assert s["input_files"] == 932
    assert s["playlists"] == 5365 and s["raw_rows"] == 519521 and s["raw_tracks"] == 169802
    assert 37000 < s["raw_artist_names"] <= 37315  # SOURCE.md counts names before whitespace cleaning
    assert s["positive_rows"] + s["rows_removed_by_kcore"] + s["duplicate_rows_removed"] == 519521
    assert 0 < s["users"] <= 5365 and s["negative_rows"] == s["positive_rows"]
    assert s["audio"]["positive_rows_with_audio_pct"] > 80

    # loads in RecBole with the shipped dataset config
    from recbole.config import Config
    from recbole.data import create_dataset

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    config = Config(model="Pop", dataset="mpd-5k",
                    config_file_list=[str(REPO / "properties" / "dataset" / "mpd-5k.yaml")],
                    config_dict={"data_path": str(tmp_path), "train_neg_sample_args": None,
                                 "checkpoint_dir": str(tmp_path / "saved"), "show_progress": False})
    ds = create_dataset(config)
    assert ds.user_num - 1 == s["users"]  # RecBole adds the [PAD] token
    assert ds.item_num - 1 == s["items"]
    assert ds.inter_num == s["rows"]
    labels = np.asarray(ds.inter_feat["label"])
    assert labels.sum() == s["positive_rows"] and set(np.unique(labels)) == {0.0, 1.0}
    # times are distinct within a user, so any (user, time) sort -- stable or not -- puts every positive
    # directly before its own negative
    feat = ds.inter_feat.sample(frac=1.0, random_state=0)
    feat = feat.sort_values([ds.uid_field, ds.time_field], kind="quicksort")
    assert not feat.duplicated([ds.uid_field, ds.time_field]).any()
    assert np.array_equal(feat["label"].to_numpy(), np.tile([1.0, 0.0], s["positive_rows"]))
