"""Last.fm-family converters (hetrec-lastfm, lastfm-1k, lfm-1b, lfm-2b) on the hand-written raw fixtures in
tests/fixtures/raw/<format>/ (exact raw layouts: HetRec with CRLF and an ISO-8859-1 tags.dat, Last.fm-1K with
malformed lines and empty MBIDs, LFM-2b as .tsv.bz2)."""
import bz2
import gzip
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recbole_psrq.convert import cli as convert
from recbole_psrq.convert import common
from recbole_psrq.errors import DataFormatError
from tests.conftest import staged_raw_fixtures

RAW = staged_raw_fixtures()
HETREC, L1K, LFM1B, LFM2B = RAW / "hetrec-lastfm", RAW / "lastfm-1k", RAW / "lfm-1b", RAW / "lfm-2b"
L1K_FILE = "userid-timestamp-artid-artname-traid-traname.tsv"


def run(fmt, src, out, *options):
    """Convert through the real argument parser; returns (stats, output folder)."""
    module, parser = convert.build_parser(fmt)
    args = parser.parse_args(["--src", str(src), "--out", str(out), "--no-progress", *options])
    args.format = fmt
    args.name = Path(out).name
    return module.convert(args, f"test {fmt}"), Path(out)


def inter(out):
    frame = pd.read_csv(out / f"{out.name}.inter", sep="\t", dtype={"user_id:token": str, "item_id:token": str})
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


def user_rows(out, user):
    f = inter(out)
    f = f[f["user_id"] == user]
    return [(i, t, lab, n) for i, t, lab, n in zip(f["item_id"], f["timestamp"], f["label"], f["play_count"])]


def texts(out):
    t = pd.read_csv(out / f"{out.name}.item_text.tsv", sep="\t", dtype=str, keep_default_na=False, quoting=3)
    return dict(zip(t["item_id"], t["text"]))


def data_files(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())
            if p.suffix in (".inter", ".item", ".tsv", ".yaml")}


def copy_fixture(src, dest):
    shutil.copytree(src, dest)
    return dest


# ------------------------------------------------------------------------------------------- HetRec
def test_hetrec_fixture_has_the_raw_quirks():
    # the premises of the tests below: CRLF line ends and a Latin-1 byte in tags.dat
    assert b"\r\n" in (HETREC / "user_artists.dat").read_bytes()
    assert b"3\t\xe9lectronique\r\n" in (HETREC / "tags.dat").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        (HETREC / "tags.dat").read_bytes().decode("utf-8")


def test_hetrec_counts_labels_and_time(tmp_path):
    s, out = run("hetrec-lastfm", HETREC, tmp_path / "hetrec")
    assert (s["raw_rows"], s["users"], s["items"], s["rows"], s["malformed_rows"]) == (60, 9, 18, 60, 0)
    assert s["labels"] == {"positive": 33, "negative": 27, "positive_pct": 55.0}
    assert s["tagging"]["assignments"] == 13 and s["tagging"]["assignments_with_unknown_tag"] == 1
    assert s["pairs_with_tagging_time"] == 8
    # user 2, weights 500 320 80 45 30 12 3 (median 45): untagged pairs get their row position (0, 2, 3, 5, 6)
    # and come first; artist 9 / 3 get the first tagging time (ms -> s; artist 3 tagged twice, the min)
    assert user_rows(out, "2") == [("1", 0, 1, 500), ("5", 2, 1, 80), ("7", 3, 1, 45), ("11", 5, 0, 12),
                                   ("13", 6, 0, 3), ("9", 1218751200, 0, 30), ("3", 1238536800, 1, 320)]
    # user 3: weights 1200 900 60 60 20 5, median 60 -> the two 60s are label 1 (>=)
    assert [(i, lab) for i, _, lab, _ in user_rows(out, "3")] == [
        ("4", 1), ("6", 1), ("8", 0), ("10", 0), ("2", 1), ("3", 1)]
    # user 4's pair tagged with a 1956 junk date sorts first (negative unix time)
    assert user_rows(out, "4")[0] == ("12", -441766800, 1, 64)
    yaml_text = (out / "hetrec.yaml").read_text()
    assert "play_count" not in yaml_text and "LABEL_FIELD: label" in yaml_text
    readme = (out / "README.md").read_text()
    assert "placeholder, not a time" in readme and "non-commercial" in readme and "Cantador" in readme


def test_hetrec_item_text_decodes_latin1_tags(tmp_path):
    _, out = run("hetrec-lastfm", HETREC, tmp_path / "hetrec")
    t = texts(out)
    # Björk: électronique by 3 users, icelandic by 2 (one of them never played her), female vocalists (tag 9)
    # and experimental (tag 10) by 1 each -> tie broken by tagID; the unknown tagID 99 is skipped
    assert t["3"] == "Björk. Tags: électronique, icelandic, female vocalists, experimental."
    assert t["1"] == "The Beatles."
    assert t["7"] == "Sigur Rós."
    _, out2 = run("hetrec-lastfm", HETREC, tmp_path / "top2", "--top-tags", "2")
    assert texts(out2)["3"] == "Björk. Tags: électronique, icelandic."


def test_hetrec_options_repeat_and_row_order(tmp_path):
    s, out = run("hetrec-lastfm", HETREC, tmp_path / "h", "--label-rule", "repeat", "--time", "row-order")
    assert s["pairs_with_tagging_time"] == 0
    # user 10: weights 3 1 4 1 5 9 2 in file order
    assert user_rows(out, "10") == [("1", 0, 1, 3), ("2", 1, 0, 1), ("3", 2, 1, 4), ("4", 3, 0, 1),
                                    ("5", 4, 1, 5), ("6", 5, 1, 9), ("7", 6, 1, 2)]
    assert [t for _, t, _, _ in user_rows(out, "2")] == [0, 1, 2, 3, 4, 5, 6]


def test_hetrec_malformed_lines_name_file_and_line(tmp_path):
    src = copy_fixture(HETREC, tmp_path / "raw")
    lines = (src / "user_artists.dat").read_bytes().split(b"\r\n")
    lines[4] = b"2\t7"  # line 5: the weight is missing
    (src / "user_artists.dat").write_bytes(b"\r\n".join(lines))
    with pytest.raises(DataFormatError, match=r"user_artists\.dat, line 5: expected 3 TAB-separated fields, found 2"):
        run("hetrec-lastfm", src, tmp_path / "out")
    lines[4] = b"2\t7\tmany"
    (src / "user_artists.dat").write_bytes(b"\r\n".join(lines))
    with pytest.raises(DataFormatError, match=r"user_artists\.dat, line 5: column 'weight' holds 'many', not a number"):
        run("hetrec-lastfm", src, tmp_path / "out")
    # tags.dat is Latin-1: read as UTF-8 it fails on the line holding the byte 0xE9
    with pytest.raises(DataFormatError, match=r"tags\.dat, line 4: not valid utf-8"):
        run("hetrec-lastfm", HETREC, tmp_path / "out2", "--tags-encoding", "utf-8")


# ---------------------------------------------------------------------------------------- Last.fm-1K
def test_lastfm1k_counts_and_malformed_report(tmp_path):
    s, out = run("lastfm-1k", L1K, tmp_path / "l1k")
    assert (s["raw_lines"], s["raw_events"], s["malformed_rows"]) == (88, 85, 3)
    assert (s["users"], s["items"], s["pairs"], s["rows"]) == (9, 18, 58, 58)
    assert s["labels"]["positive"] == 19 and s["labels"]["negative"] == 39
    ex = s["malformed"]["examples"]
    assert ex[0] == f"{L1K_FILE}, line 4: expected 6 TAB-separated fields, found 7"
    assert ex[1] == f"{L1K_FILE}, line 21: expected 6 TAB-separated fields, found 3"
    assert ex[2].startswith(f"{L1K_FILE}, line 41: timestamp '2009-13-45T99:00:00Z'")
    readme = (out / "README.md").read_text()
    assert "**malformed lines skipped** | **3**" in readme and "line 21" in readme and "Celma" in readme
    assert json.loads((out / "l1k.stats.json").read_text())["malformed"]["total"] == 3


def test_lastfm1k_aggregation_and_repeat_labels(tmp_path):
    _, out = run("lastfm-1k", L1K, tmp_path / "l1k")
    rows = user_rows(out, "user_000001")
    # first play = minimum time (the file lists events newest first); play_count = events
    t0 = 1200009600  # 2008-01-11T00:00:00Z
    assert [(t - t0, lab, n) for _, t, lab, n in rows] == [
        (0, 1, 3), (420, 0, 1), (840, 1, 2), (1260, 0, 1), (1680, 0, 1), (2100, 1, 2), (2520, 0, 1)]
    assert rows[0][0] == "0b354fcb-fbc5-50ab-9304-40cd6d9e1909"  # the track MBID
    s, out2 = run("lastfm-1k", L1K, tmp_path / "med", "--label-rule", "user-median")
    # user_000001 counts 3 1 1 2 1 1 2 -> median 1 -> every pair >= the median
    assert [lab for _, _, lab, _ in user_rows(out2, "user_000001")] == [1] * 7
    assert s["label_rule"] == "user-median"


def test_lastfm1k_ids_for_empty_mbids(tmp_path):
    s, out = run("lastfm-1k", L1K, tmp_path / "l1k")
    hidden = "nm:" + hashlib.sha1("ghost band\x1fhidden song".encode()).hexdigest()[:16]
    cafe = "nm:" + hashlib.sha1('ghost band\x1fcafé "live"'.encode()).hexdigest()[:16]
    assert s["events_without_track_mbid"] == 9 and s["items_from_names"] == 2
    # "  ghost  BAND " / "Hidden  song" and "Ghost Band" / "Hidden Song" normalise to one item
    assert [r for r in user_rows(out, "user_000001") if r[0] == hidden][0][2:] == (1, 2)
    t = texts(out)
    assert t[hidden] == "Hidden Song by Ghost Band."  # the most frequent spelling, not the first one
    assert t[cafe] == 'Café "Live" by Ghost Band.'  # quotes kept: no quoting in the raw file
    item = pd.read_csv(out / "l1k.item", sep="\t", dtype=str)
    artist_of = dict(zip(item["item_id:token"], item["artist_id:token"]))
    assert artist_of[hidden] == "nm:" + hashlib.sha1(b"ghost band").hexdigest()[:16]
    assert artist_of["0b354fcb-fbc5-50ab-9304-40cd6d9e1909"] == "6d13d90e-7410-5cdb-9f07-d395a7341487"
    assert not any(any(c.isspace() for c in i) for i in inter(out)["item_id"])
    assert s["items_with_conflicting_names"] == 1


def test_lastfm1k_crlf_gzip_chunks_and_determinism(tmp_path):
    _, base = run("lastfm-1k", L1K, tmp_path / "a" / "l1k")
    again = data_files(run("lastfm-1k", L1K, tmp_path / "a" / "l1k")[1])
    assert again == data_files(base)  # same output twice
    src = tmp_path / "crlf"
    src.mkdir()
    raw = (L1K / L1K_FILE).read_bytes().replace(b"\n", b"\r\n")
    with gzip.open(src / (L1K_FILE + ".gz"), "wb") as f:
        f.write(raw)
    s, out = run("lastfm-1k", src, tmp_path / "b" / "l1k", "--chunk-rows", "7")
    assert s["malformed_rows"] == 3 and s["raw_events"] == 85
    strip = {k: v for k, v in data_files(out).items() if not k.endswith(".yaml")}
    assert strip == {k: v for k, v in data_files(base).items() if not k.endswith(".yaml")}


def test_kcore_is_opt_in_and_keeps_labels(tmp_path):
    base, _ = run("hetrec-lastfm", HETREC, tmp_path / "h0")
    s, out = run("hetrec-lastfm", HETREC, tmp_path / "h3", "--kcore", "3")
    f = inter(out)
    assert base["rows_removed_by_kcore"] == 0 and s["rows_removed_by_kcore"] == 4 and s["rows"] == len(f) == 56
    assert f.groupby("user_id").size().min() >= 3 and f.groupby("item_id").size().min() >= 3
    assert s["items"] == 16 and not {"14", "18"} & set(f["item_id"])  # the artists played by 2 users only
    # labels come from all of a user's items, before the k-core: user 5 (weights 2 44 300 18 250 7, median 31)
    # loses artist 18 (250); recomputed on what is left the median would be 18 and artist 7 (18) would be 1
    assert sorted((i, lab) for i, _, lab, _ in user_rows(out, "5")) == [
        ("3", 0), ("4", 0), ("5", 1), ("6", 1), ("7", 0)]


# -------------------------------------------------------------------------------------------- LFM-1b
def test_lfm1b_first_play_labels_and_text(tmp_path):
    s, out = run("lfm-1b", LFM1B, tmp_path / "l1b")
    assert (s["raw_events"], s["pairs"], s["users"], s["items"], s["rows"]) == (85, 58, 9, 18, 58)
    assert s["items_missing_from_tracks_file"] == 1
    rows = user_rows(out, "31435741")  # this user's events are in reverse time order in the file
    assert rows[0] == ("300", 1357862400, 1, 3) and rows[-1] == ("309", 1357862400 + 6 * 420, 0, 1)
    t = texts(out)
    assert t["312"] == "Hoppípolla by Sigur Rós." and t["317"] == "(untitled) by Portishead."
    item = pd.read_csv(out / "l1b.item", sep="\t", dtype=str)
    assert dict(zip(item["item_id:token"], item["artist_id:token"]))["312"] == "15"
    assert "Schedl" in (out / "README.md").read_text()


def test_lfm1b_gzip_crlf_and_chunks_give_the_same_files(tmp_path):
    _, base = run("lfm-1b", LFM1B, tmp_path / "a" / "l1b")
    src = tmp_path / "gz"
    src.mkdir()
    for p in LFM1B.iterdir():
        with gzip.open(src / (p.name + ".gz"), "wb") as f:
            f.write(p.read_bytes().replace(b"\n", b"\r\n"))
    _, out = run("lfm-1b", src, tmp_path / "b" / "l1b", "--chunk-rows", "10")
    strip = lambda d: {k: v for k, v in d.items() if not k.endswith(".yaml")}
    assert strip(data_files(out)) == strip(data_files(base))


def test_lfm1b_malformed_line_is_an_error(tmp_path):
    src = copy_fixture(LFM1B, tmp_path / "raw")
    lines = (src / "LFM-1b_LEs.txt").read_text().split("\n")
    lines[6] = "31435741\t11\t5110\t300"  # line 7: the timestamp is missing
    (src / "LFM-1b_LEs.txt").write_text("\n".join(lines))
    with pytest.raises(DataFormatError, match=r"LFM-1b_LEs\.txt, line 7: expected 5 TAB-separated fields"):
        run("lfm-1b", src, tmp_path / "out")
    lines[6] = "31435741\t11\t5110\tabc\t1357866600"
    (src / "LFM-1b_LEs.txt").write_text("\n".join(lines))
    with pytest.raises(DataFormatError, match=r"LFM-1b_LEs\.txt, line 7: column 'track-id' holds 'abc', not an integer"):
        run("lfm-1b", src, tmp_path / "out")


# -------------------------------------------------------------------------------------------- LFM-2b
def test_lfm2b_events_from_bz2(tmp_path):
    assert (LFM2B / "listening-events.tsv.bz2").read_bytes()[:3] == b"BZh"
    s, out = run("lfm-2b", LFM2B, tmp_path / "l2b")
    assert s["source"] == "events" and s["label_rule"] == "repeat"
    assert (s["raw_events"], s["pairs"], s["users"], s["items"], s["rows"]) == (85, 58, 9, 18, 58)
    assert user_rows(out, "101")[:3] == [("300", 1357862400, 1, 3), ("301", 1357862820, 0, 1),
                                         ("303", 1357863240, 1, 2)]
    assert texts(out)["312"] == "Hoppípolla by Sigur Rós."
    item = pd.read_csv(out / "l2b.item", sep="\t", dtype=str)
    assert dict(zip(item["item_id:token"], item["artist_id:token"]))["300"] == \
        "nm:" + hashlib.sha1(b"radiohead").hexdigest()[:16]


def test_lfm2b_counts_mode(tmp_path):
    s, out = run("lfm-2b", LFM2B, tmp_path / "c", "--counts")
    assert s["source"] == "counts" and s["label_rule"] == "repeat"
    assert (s["raw_count_rows"], s["raw_events"], s["rows"]) == (58, 85, 58)
    # no time in listening-counts: placeholder = position in the user's rows (file order: track id)
    assert user_rows(out, "101") == [("300", 0, 1, 3), ("301", 1, 0, 1), ("303", 2, 1, 2), ("306", 3, 0, 1),
                                     ("309", 4, 0, 1), ("312", 5, 1, 2), ("315", 6, 0, 1)]
    # same play counts as aggregating the events
    _, ev = run("lfm-2b", LFM2B, tmp_path / "e")
    key = lambda f: f.set_index(["user_id", "item_id"])["play_count"].sort_index()
    pd.testing.assert_series_equal(key(inter(out)), key(inter(ev)))
    _, q = run("lfm-2b", LFM2B, tmp_path / "q", "--counts", "--label-rule", "user-median",
               "--label-quantile", "0.75")
    assert [lab for _, _, lab, _ in user_rows(q, "101")] == [1, 0, 1, 0, 0, 1, 0]
    assert "placeholder, not a time" in (out / "README.md").read_text()


def test_lfm2b_bad_timestamp_and_header(tmp_path):
    src = copy_fixture(LFM2B, tmp_path / "raw")
    lines = bz2.decompress((src / "listening-events.tsv.bz2").read_bytes()).decode().split("\n")
    lines[4] = lines[4].rsplit("\t", 1)[0] + "\t2013-01-11T01:10:00Z"  # line 5
    (src / "listening-events.tsv.bz2").write_bytes(bz2.compress("\n".join(lines).encode()))
    with pytest.raises(DataFormatError, match=r"listening-events\.tsv\.bz2, line 5: column 'timestamp' holds "
                                              r"'2013-01-11T01:10:00Z', not a date-time in the format"):
        run("lfm-2b", src, tmp_path / "out")
    lines[0] = "user_id\ttrack\talbum_id\ttimestamp"
    (src / "listening-events.tsv.bz2").write_bytes(bz2.compress("\n".join(lines).encode()))
    with pytest.raises(DataFormatError, match=r"listening-events\.tsv\.bz2, line 1: the header must name the "
                                              r"columns user_id, track_id, timestamp"):
        run("lfm-2b", src, tmp_path / "out")


# --------------------------------------------------------------------------------------------- shared
def test_event_aggregator_compaction_on_integer_ids_and_token_coder():
    rng = np.random.default_rng(0)
    users, items, times = rng.integers(0, 5, 200), rng.integers(0, 7, 200), rng.integers(0, 1000, 200)
    small = common.EventAggregator()
    small._COMPACT_ROWS = 3
    for k in range(0, 200, 9):
        small.add(users[k:k + 9], items[k:k + 9], times[k:k + 9])
    whole = common.EventAggregator()
    whole.add(users, items, times)
    pd.testing.assert_frame_equal(small.result(), whole.result())
    ref = pd.DataFrame({"u": users, "i": items, "t": times}).groupby(["u", "i"])["t"].agg(["min", "size"])
    got = whole.result().sort_values(["user_id", "item_id"])
    assert got["timestamp"].tolist() == ref["min"].tolist()
    assert got["play_count"].tolist() == ref["size"].tolist() and small.events == 200
    coder = common.TokenCoder()
    assert coder.encode(["b", "a", "b"]).tolist() == [0, 1, 0]
    assert coder.encode(["c", "a"]).tolist() == [2, 1]
    assert coder.decode([2, 0]).tolist() == ["c", "b"]


def test_cli_main(tmp_path, capsys):
    out = tmp_path / "lastfm1k"
    assert convert.main(["lastfm-1k", "--src", str(L1K), "--out", str(out), "--no-progress"]) == 0
    assert "9 users, 18 items, 58 rows" in capsys.readouterr().out
    assert "--no-progress" in json.loads((out / "lastfm1k.stats.json").read_text())["command"]
    assert {p.name for p in out.iterdir()} == {
        "lastfm1k.inter", "lastfm1k.item", "lastfm1k.item_text.tsv", "lastfm1k.yaml", "lastfm1k.stats.json",
        "README.md"}
    assert convert.main(["lfm-1b", "--src", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "LFM-1b_LEs.txt" in err and "--src" in err
