"""Music4All and Music4All-Onion converters on the hand-written fixtures in tests/fixtures/raw/.

Expected values are written out (not recomputed with the converter's own code) or recomputed from the raw
files with plain pandas, an implementation independent of the converter's streaming aggregation.
"""
import bz2
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from recbole_psrq.convert import cli as convert_cli
from recbole_psrq.convert import common, music4all, music4all_onion
from recbole_psrq.data.embeddings import load_item_embeddings
from recbole_psrq.errors import ConfigError, DataFormatError

RAW = Path(__file__).resolve().parent / "fixtures" / "raw"
M4A = RAW / "music4all"
ONION = RAW / "music4all-onion"
AUDIO = ["danceability", "energy", "key", "mode", "valence", "tempo", "duration_ms"]

FIRST_SONG = "0009fFIM1eYThaPg"
NO_INFO_SONG = "Zz9qPLm3X7wKd0Rb"       # listened, in no metadata file
NO_META_SONG = "05MFsHl7UeioEJP2"       # in id_information, no id_metadata row
EMPTY_TEMPO_SONG = "0AdggcG9qpVTzqA0"   # id_metadata row with an empty tempo
UNPLAYED_SONG = "1mXbQ0aTr5GvYc8e"      # in the metadata, never listened
FIRST_SONG_TEXT = ("Paper Lanterns by The Velvet Harbour. Album: Night Ferries. Genres: rock, indie rock. "
                   "Tags: Indie, guitar, 2010s. Lyrics: Paper lanterns on the water we let them go one by one "
                   "every light a little promise floating out to meet the sun")


def run(fmt, src, out, *extra):
    argv = [fmt, "--src", str(src), "--out", str(out), "--no-progress", *extra]
    module, parser = convert_cli.build_parser(fmt)
    args = parser.parse_args(argv[1:])
    args.format, args.name = fmt, Path(out).name
    return module.convert(args, "python -m recbole_psrq.convert " + " ".join(argv))


def read_inter(out):
    name = Path(out).name
    frame = pd.read_csv(Path(out) / f"{name}.inter", sep="\t", dtype={"user_id:token": str, "item_id:token": str})
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


def read_tsv(path):
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


@pytest.fixture(scope="module")
def m4a(tmp_path_factory):
    out = tmp_path_factory.mktemp("m4a") / "music4all"
    stats = run("music4all", M4A, out)
    return out, stats


@pytest.fixture(scope="module")
def onion(tmp_path_factory):
    out = tmp_path_factory.mktemp("onion") / "onion"
    stats = run("music4all-onion", ONION, out)
    return out, stats


def raw_history():
    raw = pd.read_csv(M4A / "listening_history.csv", sep="\t", dtype=str)
    raw["t"] = pd.to_datetime(raw["timestamp"], utc=True).astype("int64") // 10**9
    return raw


# ------------------------------------------------------------------------------------------ Music4All
def test_music4all_counts_match_raw_file(m4a):
    out, stats = m4a
    raw = raw_history()
    assert stats["raw_events"] == len(raw) == 96
    expected = raw.groupby(["user", "song"]).agg(first=("t", "min"), n=("t", "size")).reset_index()
    assert stats["raw_pairs"] == stats["rows"] == len(expected) == 66
    assert stats["users"] == 9 and stats["items"] == 19
    inter = read_inter(out)
    assert len(inter) == 66 and inter["user_id"].nunique() == 9 and inter["item_id"].nunique() == 19
    merged = inter.merge(expected, left_on=["user_id", "item_id"], right_on=["user", "song"], validate="1:1")
    assert len(merged) == 66
    assert (merged["timestamp"] == merged["first"]).all()
    assert (merged["play_count"] == merged["n"]).all()
    assert (merged["label"] == (merged["n"] >= 2)).all()
    assert stats["label_positive"] == int((expected["n"] >= 2).sum()) == 19
    assert stats["label_negative"] == 47
    readme = (out / "README.md").read_text()
    assert "| raw listening events (`listening_history.csv` rows; published: 5,109,592) | 96 |" in readme
    assert "| (user, song) pairs after aggregation | 66 |" in readme


def test_music4all_specific_rows_and_repeat_label(m4a):
    inter = read_inter(m4a[0]).set_index(["user_id", "item_id"])
    row = inter.loc[("user_007XIjOr", FIRST_SONG)]  # played 3 times, first 2019-02-20 12:28 UTC
    assert (row["timestamp"], row["play_count"], row["label"]) == (1550665680, 3, 1)
    row = inter.loc[("user_007XIjOr", "0C3J27XDCG2LmlZG")]  # played once
    assert (row["play_count"], row["label"]) == (1, 0)
    # a song that is in no metadata file is kept, not dropped
    assert ("user_007XIjOr", NO_INFO_SONG) in inter.index
    assert UNPLAYED_SONG not in inter.index.get_level_values(1)


def test_music4all_sorted_by_user_then_time_and_ties_follow_file_order(m4a, tmp_path):
    inter = read_inter(m4a[0])
    keys = list(zip(inter["user_id"], inter["timestamp"]))
    assert keys == sorted(keys)
    tie = inter[(inter["user_id"] == "user_NNern66n") & (inter["timestamp"] == 1551529680)]["item_id"].tolist()
    assert tie == ["0KgcjnCqaXNv1sye", "0efnLOpaMxxNDi9L"]  # same minute: file order (lines 5 and 39)
    src = tmp_path / "src"
    shutil.copytree(M4A, src)
    lines = (src / "listening_history.csv").read_text().splitlines(keepends=True)
    lines[4], lines[38] = lines[38], lines[4]
    (src / "listening_history.csv").write_text("".join(lines))
    run("music4all", src, tmp_path / "swapped" / "music4all")
    swapped = read_inter(tmp_path / "swapped" / "music4all")
    tie = swapped[(swapped["user_id"] == "user_NNern66n") & (swapped["timestamp"] == 1551529680)]["item_id"]
    assert tie.tolist() == ["0efnLOpaMxxNDi9L", "0KgcjnCqaXNv1sye"]


def test_music4all_item_text_exact(m4a):
    out = m4a[0]
    text = read_tsv(out / "music4all.item_text.tsv").set_index("item_id")
    assert list(text.columns) == ["text", "song", "artist", "album", "genres", "tags", "lang"]
    assert text.loc[FIRST_SONG, "text"] == FIRST_SONG_TEXT
    assert text.loc[FIRST_SONG, "genres"] == "rock|indie rock"
    assert text.loc[NO_META_SONG, "text"] == "Andante in Grey by Quartet Nuvola. Album: Studies. Genres: classical."
    assert NO_INFO_SONG not in text.index            # no text at all -> absent, not an empty text
    assert UNPLAYED_SONG not in text.index           # only items of the interactions
    assert len(text) == 18
    item = read_tsv(out / "music4all.item").set_index("item_id:token")
    assert item.loc[EMPTY_TEMPO_SONG].tolist() == ["big tom reyes", "blues"]  # quotes dropped, first genre
    assert item.loc[NO_INFO_SONG].tolist() == ["", ""]
    assert len(item) == 19


def test_music4all_text_template_rules():
    text = music4all.item_text("Song", "Band", "", ["pop"], ["Pop", "sad", "sad"])
    assert text == "Song by Band. Genres: pop. Tags: sad, sad."
    assert music4all.item_text(song="Hey!", album="Best Of.") == "Hey! Album: Best Of."
    assert music4all.item_text(artist="Band") == "By Band."
    assert music4all.item_text() == ""
    assert music4all.split_list("rock, indie rock,,rock|pop") == ["rock", "indie rock", "rock/pop"]
    assert music4all.cut_words("Paper lanterns on the water", 20) == "Paper lanterns on"
    assert music4all.cut_words("Paper lanterns on the water", 14) == "Paper lanterns"
    assert music4all.cut_words("abc", 0) == ""


def test_music4all_lyrics_chars_option(tmp_path):
    run("music4all", M4A, tmp_path / "music4all", "--lyrics-chars", "20")
    text = read_tsv(tmp_path / "music4all" / "music4all.item_text.tsv").set_index("item_id")
    assert text.loc[FIRST_SONG, "text"].endswith("Tags: Indie, guitar, 2010s. Lyrics: Paper lanterns on")
    run("music4all", M4A, tmp_path / "b" / "music4all", "--lyrics-chars", "0")
    text = read_tsv(tmp_path / "b" / "music4all" / "music4all.item_text.tsv").set_index("item_id")
    assert text.loc[FIRST_SONG, "text"].endswith("Tags: Indie, guitar, 2010s.")


def test_music4all_audio_alignment_and_zscore(m4a):
    out, stats = m4a
    ids, emb = load_item_embeddings(str(out / "music4all.audio.npz"))
    meta = pd.read_csv(M4A / "id_metadata.csv", sep="\t", dtype={"id": str}).set_index("id")
    dataset_items = set(read_inter(out)["item_id"])
    expected_ids = sorted(i for i in meta.index if i in dataset_items and meta.loc[i, AUDIO].notna().all())
    assert list(ids) == expected_ids and len(ids) == 16
    assert EMPTY_TEMPO_SONG not in ids and NO_META_SONG not in ids and UNPLAYED_SONG not in ids
    raw = meta.loc[expected_ids, AUDIO].to_numpy(dtype=float)
    z = (raw - raw.mean(axis=0)) / raw.std(axis=0)   # population std, over the dataset's items only
    np.testing.assert_allclose(emb, z, atol=3e-3)
    row = list(ids).index(FIRST_SONG)
    np.testing.assert_allclose(emb[row], z[expected_ids.index(FIRST_SONG)], atol=3e-3)
    assert stats["audio"]["items_with_audio"] == 16 and stats["audio"]["items_with_empty_audio_field"] == 1


def test_zscore_constant_column_gets_std_one():
    z, mean, std = common.zscore_columns(np.array([[1.0, 5.0], [3.0, 5.0]]))
    np.testing.assert_allclose(z, [[-1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(std, [1.0, 1.0])


def test_music4all_yaml_lists_audio_and_text_only_when_present(m4a, tmp_path):
    out = m4a[0]
    config = yaml.safe_load((out / "music4all.yaml").read_text())
    assert config["dataset"] == "music4all"
    assert config["load_col"] == {"inter": ["user_id", "item_id", "timestamp", "label"],
                                  "item": ["item_id", "artist_id", "genre"]}
    assert config["sid_embedding_files"] == {"audio": "music4all.audio.npz"}
    assert config["LABEL_FIELD"] == "label"
    dest = tmp_path / "music4all"
    shutil.copytree(out, dest)
    (dest / "music4all.text.npz").write_bytes(b"placeholder")  # as written by the text encoder later
    run("music4all", M4A, dest)
    config = yaml.safe_load((dest / "music4all.yaml").read_text())
    assert config["sid_embedding_files"] == {"text": "music4all.text.npz", "audio": "music4all.audio.npz"}


def test_music4all_readme_documents_choices(m4a):
    readme = (m4a[0] / "README.md").read_text()
    for needle in ("Do not commit or redistribute", "Santana", "python -m recbole_psrq.convert music4all",
                   "Label rule `repeat`", "first play", "read as UTC", "`{song} by {artist}. Album: {album}.",
                   "| items without an `id_information` row (kept, no title/artist) | 1 (5.3%) |",
                   "| items with an audio vector | 16 (84.2%) |", "| label 1 / label 0 | 19 (28.8%) / 47 (71.2%) |"):
        assert needle in readme, needle
    stats = json.loads((m4a[0] / "music4all.stats.json").read_text())
    assert stats["rows"] == 66 and stats["catalogue"]["items_without_text"] == 1


def test_music4all_user_median_label(tmp_path):
    stats = run("music4all", M4A, tmp_path / "music4all", "--label-rule", "user-median")
    inter = read_inter(tmp_path / "music4all")
    median = inter.groupby("user_id")["play_count"].transform("median")
    assert (inter["label"] == (inter["play_count"] >= median)).all()
    assert stats["label_rule"] == "user-median"
    assert 0 < stats["label_positive"] < stats["rows"]


def test_music4all_kcore_is_opt_in(tmp_path):
    stats = run("music4all", M4A, tmp_path / "music4all", "--kcore", "3")
    inter = read_inter(tmp_path / "music4all")
    assert inter.groupby("user_id").size().min() >= 3 and inter.groupby("item_id").size().min() >= 3
    assert stats["rows_removed_by_kcore"] == 66 - len(inter) > 0
    assert stats["raw_events"] == 96  # raw counts are before filtering


def test_music4all_deterministic_output(m4a, tmp_path):
    out = tmp_path / "music4all"
    run("music4all", M4A, out)
    first = snapshot(out)
    run("music4all", M4A, out)
    assert snapshot(out) == first
    for fname in ("music4all.inter", "music4all.item", "music4all.item_text.tsv", "music4all.audio.npz"):
        assert first[fname] == (m4a[0] / fname).read_bytes(), fname


def test_music4all_reads_gz_and_bz2(m4a, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(M4A, src)
    history = src / "listening_history.csv"
    with gzip.open(str(history) + ".gz", "wb") as f:
        f.write(history.read_bytes())
    history.unlink()
    info = src / "id_information.csv"
    (src / "id_information.csv.bz2").write_bytes(bz2.compress(info.read_bytes()))
    info.unlink()
    out = tmp_path / "music4all"
    stats = run("music4all", src, out)
    assert stats["events_file"] == "listening_history.csv.gz"
    for fname in ("music4all.inter", "music4all.item", "music4all.item_text.tsv", "music4all.audio.npz"):
        assert (out / fname).read_bytes() == (m4a[0] / fname).read_bytes(), fname


def test_music4all_crlf_input_gives_the_same_output(m4a, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(M4A, src)
    for name in ("listening_history.csv", "id_information.csv", "id_metadata.csv"):
        path = src / name
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    run("music4all", src, tmp_path / "music4all")
    for fname in ("music4all.inter", "music4all.item_text.tsv", "music4all.audio.npz"):
        assert (tmp_path / "music4all" / fname).read_bytes() == (m4a[0] / fname).read_bytes(), fname


def _broken_copy(tmp_path, name, edit):
    src = tmp_path / "src"
    shutil.copytree(M4A, src)
    path = src / name
    path.write_text(edit(path.read_text()))
    return src


@pytest.mark.parametrize("name, edit, needles", [
    ("listening_history.csv", lambda t: t + "user_007XIjOr\t0009fFIM1eYThaPg\n",
     ["listening_history.csv, line 98", "expected 3 TAB-separated fields, found 2"]),
    ("listening_history.csv", lambda t: t.replace("\t2019-02-20 12:28\n", "\t20/02/2019 noon\n", 1),
     ["listening_history.csv, line ", "'timestamp' holds '20/02/2019 noon', not a date-time"]),
    ("listening_history.csv", lambda t: t.replace("user\tsong\ttimestamp", "user,song,timestamp", 1),
     ["listening_history.csv, line 1", "expected the header"]),
    ("id_metadata.csv", lambda t: t.replace("\t0.34\t", "\thigh\t", 1),
     ["id_metadata.csv, line 3", "'danceability' holds 'high'"]),
    ("id_information.csv", lambda t: t.replace("\tPaper Lanterns\t", "\tPaper\tLanterns\t", 1),
     ["id_information.csv, line 2", "found 5"]),
])
def test_music4all_malformed_input_names_file_and_line(tmp_path, name, edit, needles):
    src = _broken_copy(tmp_path, name, edit)
    with pytest.raises(DataFormatError) as e:
        run("music4all", src, tmp_path / "music4all")
    for needle in needles:
        assert needle in str(e.value), str(e.value)


def test_music4all_bad_timestamp_line_number_is_exact(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(M4A, src)
    lines = (src / "listening_history.csv").read_text().splitlines(keepends=True)
    lines.insert(10, "\n")  # a blank line is skipped but still counted
    lines[20] = lines[20].rsplit("\t", 1)[0] + "\tyesterday\n"
    (src / "listening_history.csv").write_text("".join(lines))
    with pytest.raises(DataFormatError, match=r"listening_history.csv, line 21: column 'timestamp' holds 'yesterday'"):
        run("music4all", src, tmp_path / "music4all")


def test_music4all_missing_files(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(M4A, src)
    (src / "id_information.csv").unlink()
    with pytest.raises(DataFormatError, match=r"id_information.csv.bz2.*unpacked Music4All folder"):
        run("music4all", src, tmp_path / "music4all")
    (src / "listening_history.csv").unlink()
    with pytest.raises(DataFormatError, match=r"listening_history.csv"):
        run("music4all", src, tmp_path / "music4all")


def test_music4all_cli(tmp_path, capsys):
    out = tmp_path / "m4a"
    assert convert_cli.main(["music4all", "--src", str(M4A), "--out", str(out), "--no-progress"]) == 0
    assert f"{out}: 9 users, 19 items, 66 rows" in capsys.readouterr().out
    assert (out / "m4a.inter").is_file() and (out / "m4a.yaml").is_file()
    assert "convert music4all --src" in (out / "README.md").read_text()
    broken = _broken_copy(tmp_path, "listening_history.csv", lambda t: t + "x\ty\n")
    assert convert_cli.main(["music4all", "--src", str(broken), "--out", str(tmp_path / "b"), "--no-progress"]) == 2
    assert "listening_history.csv, line 98" in capsys.readouterr().err


# ------------------------------------------------------------------------------- shared streaming helpers
def test_event_aggregator_matches_pandas_across_chunks_and_compaction():
    rng = np.random.default_rng(0)
    n = 5000
    users = rng.integers(0, 40, n).astype(str)
    items = rng.integers(0, 60, n).astype(str)
    times = rng.integers(0, 500, n).astype(float)
    agg = common.EventAggregator()
    agg._COMPACT_ROWS = 700
    for start in range(0, n, 333):
        agg.add(users[start:start + 333], items[start:start + 333], times[start:start + 333])
    got = agg.result()
    frame = pd.DataFrame({"u": users, "i": items, "t": times, "o": np.arange(n)})
    want = (frame.groupby(["u", "i"]).agg(t=("t", "min"), n=("t", "size"), o=("o", "min")).reset_index()
            .sort_values(["u", "t", "o"]).reset_index(drop=True))
    assert agg.rows == agg.events == n
    assert got["user_id"].tolist() == want["u"].tolist() and got["item_id"].tolist() == want["i"].tolist()
    assert got["timestamp"].tolist() == want["t"].tolist() and got["play_count"].tolist() == want["n"].tolist()


def test_iter_table_line_numbers(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_bytes(b"a\tb\r\n1\tx\r\n\r\n2\ty\r\n3\tz\n")
    chunks = list(common.iter_table(str(path), ["a", "b"], header=True, chunk_rows=2))
    assert [c[0]["a"].tolist() for c in chunks] == [["1", "2"], ["3"]]
    assert [c[1].tolist() for c in chunks] == [[2, 4], [5]]
    assert chunks[0][0]["b"].tolist() == ["x", "y"]  # CR stripped


# ----------------------------------------------------------------------------------- Music4All-Onion
def raw_onion_events():
    with bz2.open(ONION / "userid_trackid_timestamp.tsv.bz2", "rt") as f:
        raw = pd.read_csv(f, sep="\t", dtype=str)
    raw["t"] = pd.to_datetime(raw["timestamp"], utc=True).astype("int64") // 10**9
    return raw


def test_onion_counts_labels_and_bz2(onion):
    out, stats = onion
    raw = raw_onion_events()
    assert stats["time_mode"] == "timestamp" and stats["events_file"] == "userid_trackid_timestamp.tsv.bz2"
    assert stats["raw_events"] == len(raw) == 104
    assert (stats["users"], stats["items"], stats["rows"]) == (9, 19, 63)
    inter = read_inter(out)
    expected = raw.groupby(["user_id", "track_id"]).agg(first=("t", "min"), n=("t", "size")).reset_index()
    merged = inter.merge(expected, left_on=["user_id", "item_id"], right_on=["user_id", "track_id"], validate="1:1")
    assert len(merged) == len(inter) == 63
    assert (merged["timestamp"] == merged["first"]).all() and (merged["play_count"] == merged["n"]).all()
    assert (inter["label"] == (inter["play_count"] >= 2)).all()
    # the count file of the same download agrees with the aggregated events
    counts = pd.read_csv(ONION / "userid_trackid_count.tsv", sep="\t", dtype={"user_id": str})
    both = inter.merge(counts, left_on=["user_id", "item_id"], right_on=["user_id", "track_id"], validate="1:1")
    assert len(both) == 63 and (both["play_count"] == both["count"]).all()
    row = inter.set_index(["user_id", "item_id"]).loc[("1034", FIRST_SONG)]
    assert (row["timestamp"], row["play_count"], row["label"]) == (1551427200, 3, 1)  # 2019-03-01 08:00:00 UTC
    keys = list(zip(inter["user_id"], inter["timestamp"]))
    assert keys == sorted(keys)


def test_onion_feature_files_alignment_zscore_and_missing_cells(onion):
    out, stats = onion
    assert sorted(p.name for p in out.glob("*.npz")) == [
        "onion.blf_spectral.npz", "onion.essentia.npz", "onion.mfcc_stats.npz"]
    ids, emb = load_item_embeddings(str(out / "onion.mfcc_stats.npz"))
    raw = pd.read_csv(ONION / "id_mfcc_stats.tsv", sep="\t", dtype={"id": str}).set_index("id")
    items = set(read_inter(out)["item_id"])
    expected_ids = sorted(i for i in raw.index if i in items)
    assert list(ids) == expected_ids and len(ids) == 17 and "1mXbQ0aTr5GvYc8e" not in ids
    values = raw.loc[expected_ids].to_numpy(dtype=float)
    values = np.where(np.isnan(values), np.nanmean(values, axis=0), values)  # the empty cell -> column mean
    std = values.std(axis=0)
    z = (values - values.mean(axis=0)) / np.where(std > 0, std, 1.0)
    np.testing.assert_allclose(emb, z, atol=3e-3)
    assert emb[list(ids).index("0cMz9CPVNPkNa1He"), 3] == 0.0      # the filled cell is the mean
    assert np.all(emb[:, 4] == 0.0)                                # constant column: std 1, z = 0
    assert stats["features"]["mfcc_stats"]["missing_values"] == 1
    ids, emb = load_item_embeddings(str(out / "onion.essentia.npz"))
    assert emb.shape == (18, 3)
    assert stats["features"]["essentia"]["skipped_columns"] == ["tonal.key_edma.key"]
    ids, emb = load_item_embeddings(str(out / "onion.blf_spectral.npz"))  # read from .tsv.bz2
    assert emb.shape == (15, 3)
    config = yaml.safe_load((out / "onion.yaml").read_text())
    assert config["sid_embedding_files"] == {"audio": "onion.mfcc_stats.npz"}
    assert config["load_col"]["item"] == ["item_id"]


def test_onion_tags_dict_text(onion):
    text = read_tsv(onion[0] / "onion.item_text.tsv").set_index("item_id")
    # weights 100, 55, 55, 12: highest first, ties by name
    assert text.loc[FIRST_SONG, "text"] == "Tags: rock, guitar, indie rock, 2010s."
    assert text.loc[FIRST_SONG, "tags"] == "rock|guitar|indie rock|2010s"
    assert NO_META_SONG not in text.index and NO_INFO_SONG not in text.index  # {} and no row
    assert onion[1]["text"] == {"source": "tags_dict", "file": "id_tags_dict.tsv", "items_with_text": 17,
                                "max_tags": 20, "items_without_text": 2}


def test_onion_text_from_music4all_src(tmp_path):
    out = tmp_path / "onion"
    stats = run("music4all-onion", ONION, out, "--music4all-src", str(M4A), "--max-tags", "2")
    text = read_tsv(out / "onion.item_text.tsv").set_index("item_id")
    assert text.loc[FIRST_SONG, "text"] == FIRST_SONG_TEXT
    item = read_tsv(out / "onion.item").set_index("item_id:token")
    assert list(item.columns) == ["artist_id:token", "genre:token"]
    assert item.loc[FIRST_SONG].tolist() == ["the velvet harbour", "rock"]
    assert yaml.safe_load((out / "onion.yaml").read_text())["load_col"]["item"] == ["item_id", "artist_id", "genre"]
    assert stats["text"]["source"] == "music4all" and stats["text"]["items_without_text"] == 1


def test_onion_count_file_fallback_has_no_time(tmp_path, onion):
    src = tmp_path / "src"
    shutil.copytree(ONION, src)
    (src / "userid_trackid_timestamp.tsv.bz2").unlink()
    out = tmp_path / "onion"
    stats = run("music4all-onion", src, out)
    assert stats["time_mode"] == "count" and stats["raw_rows"] == 63 and stats["raw_events"] == 104
    inter = read_inter(out)
    counts = pd.read_csv(src / "userid_trackid_count.tsv", sep="\t", dtype={"user_id": str})
    counts["order"] = counts.groupby("user_id").cumcount()
    merged = inter.merge(counts, left_on=["user_id", "item_id"], right_on=["user_id", "track_id"], validate="1:1")
    assert len(merged) == 63
    assert (merged["timestamp"] == merged["order"]).all()          # row order within the user
    assert (merged["play_count"] == merged["count"]).all()
    assert (inter["label"] == (inter["play_count"] >= 2)).all()
    assert inter.groupby("user_id")["timestamp"].apply(lambda t: t.tolist() == list(range(len(t)))).all()
    assert "**No timestamps**" in (out / "README.md").read_text()
    # same pairs and labels as the timestamp file
    timed = read_inter(onion[0])
    a = inter.set_index(["user_id", "item_id"])[["play_count", "label"]].sort_index()
    b = timed.set_index(["user_id", "item_id"])[["play_count", "label"]].sort_index()
    pd.testing.assert_frame_equal(a, b)


def test_onion_user_median_label(tmp_path):
    run("music4all-onion", ONION, tmp_path / "onion", "--label-rule", "user-median")
    inter = read_inter(tmp_path / "onion")
    median = inter.groupby("user_id")["play_count"].transform("median")
    assert (inter["label"] == (inter["play_count"] >= median)).all()
    assert (inter["label"] != (inter["play_count"] >= 2)).any()  # a different rule, really applied


def test_onion_feature_and_audio_options(tmp_path):
    out = tmp_path / "a" / "onion"
    stats = run("music4all-onion", ONION, out, "--audio-feature", "essentia")
    assert yaml.safe_load((out / "onion.yaml").read_text())["sid_embedding_files"] == {"audio": "onion.essentia.npz"}
    out = tmp_path / "b" / "onion"
    stats = run("music4all-onion", ONION, out, "--features", "blf_spectral")
    assert sorted(p.name for p in out.glob("*.npz")) == ["onion.blf_spectral.npz"]
    assert stats["audio_feature"] == "blf_spectral"
    out = tmp_path / "c" / "onion"
    run("music4all-onion", ONION, out, "--audio-feature", "none", "--no-zscore", "--features", "mfcc_stats")
    assert yaml.safe_load((out / "onion.yaml").read_text())["sid_embedding_files"] == {}
    ids, emb = load_item_embeddings(str(out / "onion.mfcc_stats.npz"))
    assert emb[list(ids).index(FIRST_SONG)].tolist() == [-200.0, -9.0, 0.0, 0.0, 3.0]  # as read
    with pytest.raises(ConfigError, match=r"--audio-feature 'ivec256'.*blf_spectral, essentia, mfcc_stats"):
        run("music4all-onion", ONION, tmp_path / "d" / "onion", "--audio-feature", "ivec256")
    with pytest.raises(ConfigError, match=r"--features: \['bert'\] not found"):
        run("music4all-onion", ONION, tmp_path / "e" / "onion", "--features", "bert")


def test_onion_deterministic_and_gz(onion, tmp_path):
    out = tmp_path / "onion"
    run("music4all-onion", ONION, out)
    first = snapshot(out)
    run("music4all-onion", ONION, out)
    assert snapshot(out) == first
    src = tmp_path / "src"
    shutil.copytree(ONION, src)
    events = src / "userid_trackid_timestamp.tsv.bz2"
    with gzip.open(src / "userid_trackid_timestamp.tsv.gz", "wb") as f:
        f.write(bz2.decompress(events.read_bytes()))
    events.unlink()
    stats = run("music4all-onion", src, tmp_path / "gz" / "onion")
    assert stats["events_file"] == "userid_trackid_timestamp.tsv.gz"
    for fname in ("onion.inter", "onion.item_text.tsv", "onion.mfcc_stats.npz", "onion.blf_spectral.npz"):
        assert (tmp_path / "gz" / "onion" / fname).read_bytes() == first[fname], fname


def _onion_copy(tmp_path, name, edit):
    src = tmp_path / "src"
    shutil.copytree(ONION, src)
    path = src / name
    if name.endswith(".bz2"):
        path.write_bytes(bz2.compress(edit(bz2.decompress(path.read_bytes()).decode()).encode()))
    else:
        path.write_text(edit(path.read_text()))
    return src


@pytest.mark.parametrize("name, edit, needles", [
    ("id_mfcc_stats.tsv", lambda t: t.replace("\t-188.5000\t", "\tloud\t", 1),
     ["id_mfcc_stats.tsv, line 3", "column 'mfcc0_mean' holds 'loud', not a number", "--features"]),
    ("id_mfcc_stats.tsv", lambda t: t.replace("\t-188.5000\t", "\t", 1),
     ["id_mfcc_stats.tsv, line 3", "expected 6 TAB-separated fields"]),
    ("id_tags_dict.tsv", lambda t: t.replace("{'rock': 100, 'melancholic': 40}", "rock, melancholic", 1),
     ["id_tags_dict.tsv, line 3", "expected a dict literal"]),
    ("userid_trackid_timestamp.tsv.bz2", lambda t: t.replace("2019-03-02 14:00:00", "2019-13-45 99:00:00", 1),
     ["userid_trackid_timestamp.tsv.bz2, line 3", "not a date-time"]),
    ("userid_trackid_timestamp.tsv.bz2", lambda t: t.replace("user_id\ttrack_id\ttimestamp", "user\ttrack\ttime"),
     ["userid_trackid_timestamp.tsv.bz2, line 1", "expected the header"]),
])
def test_onion_malformed_input_names_file_and_line(tmp_path, name, edit, needles):
    src = _onion_copy(tmp_path, name, edit)
    with pytest.raises(DataFormatError) as e:
        run("music4all-onion", src, tmp_path / "onion")
    for needle in needles:
        assert needle in str(e.value), str(e.value)


def test_onion_bad_count_and_missing_interactions(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ONION, src)
    (src / "userid_trackid_timestamp.tsv.bz2").unlink()
    path = src / "userid_trackid_count.tsv"
    path.write_text(path.read_text().replace("\t3\n", "\t2.5\n", 1))
    with pytest.raises(DataFormatError, match=r"userid_trackid_count.tsv, line 2: column 'count' holds '2.5'"):
        run("music4all-onion", src, tmp_path / "onion")
    path.unlink()
    with pytest.raises(DataFormatError, match=r"userid_trackid_timestamp.tsv.*userid_trackid_count.tsv.bz2"):
        run("music4all-onion", src, tmp_path / "onion")


def test_onion_cli(tmp_path, capsys):
    out = tmp_path / "onion"
    assert convert_cli.main(["music4all-onion", "--src", str(ONION), "--out", str(out), "--no-progress"]) == 0
    assert f"{out}: 9 users, 19 items, 63 rows" in capsys.readouterr().out
    readme = (out / "README.md").read_text()
    for needle in ("Moscati", "Do not commit",
                   "| raw rows of `userid_trackid_timestamp.tsv.bz2` (listening events) | 104 |",
                   "| (user, track) pairs after aggregation | 63 |",
                   "`userid_trackid_count.tsv` was present and not read",
                   "Skipped text columns: `essentia`: tonal.key_edma.key."):
        assert needle in readme, needle
    assert convert_cli.main(["music4all-onion", "--src", str(ONION), "--out", str(tmp_path / "x"),
                             "--audio-feature", "nope", "--no-progress"]) == 2
    assert "--audio-feature 'nope'" in capsys.readouterr().err


def test_find_feature_files_prefers_plain(tmp_path):
    for name in ("id_a.tsv.bz2", "id_a.tsv", "id_b.tsv.gz", "id_b.tsv.bz2", "other.tsv", "id_c.csv"):
        (tmp_path / name).write_text("")
    found = music4all_onion.find_feature_files(str(tmp_path))
    assert {k: Path(v).name for k, v in found.items()} == {"a": "id_a.tsv", "b": "id_b.tsv.gz"}
    assert music4all_onion.default_audio_feature(["blf_x", "blf_a", "lyrics_bert"]) == "blf_a"
    assert music4all_onion.default_audio_feature(["ivec256", "essentia"]) == "essentia"
    assert music4all_onion.default_audio_feature(["lyrics_bert"]) is None
