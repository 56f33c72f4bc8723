"""HetRec 2011 Last.fm-2k (hetrec2011-lastfm-2k) -> RecBole atomic files + artist text.

Raw files (TAB-separated, one header line, LF or CRLF; ``.gz`` / ``.bz2`` copies are read directly):
``user_artists.dat`` (``userID artistID weight``: play counts, required), ``artists.dat``
(``id name url pictureURL``, UTF-8, required), ``tags.dat`` (``tagID tagValue``, ISO-8859-1),
``user_taggedartists-timestamps.dat`` (``userID artistID tagID timestamp``, milliseconds) and/or
``user_taggedartists.dat`` (``userID artistID tagID day month year``); ``user_friends.dat`` is not used.

Items are artists. One row per ``user_artists.dat`` row: ``play_count`` = weight, label by the documented
per-user rule (default ``user-median``), timestamp = the first time the user tagged that artist when the
tagging files have it, else a placeholder (the row's position among the user's rows). Text: the artist
name and its most frequent tags. Every choice is written into the generated README.md.
"""
import os
import time

import numpy as np
import pandas as pd

from recbole_psrq.convert import common
from recbole_psrq.errors import ConfigError, DataFormatError

DATASET = "HetRec 2011 Last.fm-2k"
HINT = ("Download hetrec2011-lastfm-2k.zip from https://grouplens.org/datasets/hetrec-2011/, unzip it and "
        "pass the folder with --src.")
FIX = ("The file must be the unmodified hetrec2011-lastfm-2k original (TAB-separated, one header line; "
       "encodings: --encoding for artists.dat and the other files, --tags-encoding for tags.dat).")
TEXT_TEMPLATE = "{artist}. Tags: {tags}."
TEXT_TEMPLATE_NO_TAGS = "{artist}."
UNKNOWN_ARTIST = "(unknown artist)"

USER_ARTISTS = ["userID", "artistID", "weight"]
ARTISTS = ["id", "name", "url", "pictureURL"]
TAGS = ["tagID", "tagValue"]
TAGGED_TS = ["userID", "artistID", "tagID", "timestamp"]
TAGGED_DATE = ["userID", "artistID", "tagID", "day", "month", "year"]


def add_arguments(parser, fmt=None):
    common.add_label_arguments(parser, default="user-median")
    parser.add_argument("--time", choices=["tagging", "row-order"], default="tagging",
                        help="tagging (default): first tagging time of the pair when tagged, else the row "
                             "position; row-order: the row position for every pair")
    parser.add_argument("--top-tags", type=int, default=10,
                        help="tags per artist in the item text, most users first (default 10; 0 = none)")
    parser.add_argument("--encoding", default="utf-8", help="encoding of artists.dat and the other files")
    parser.add_argument("--tags-encoding", default="iso-8859-1", help="encoding of tags.dat (ISO-8859-1)")


def _read(path, columns, encoding, int_columns=()):
    return common.read_table(path, columns, header=True, encoding=encoding, int_columns=int_columns, fix=FIX)


def read_tagging(src, encoding):
    """(user, artist, tag, seconds-or-NaN) of every tag assignment, and info. Prefers the millisecond
    timestamps file; falls back to the day/month/year file (midnight UTC)."""
    ts_path = common.find_optional(src, "user_taggedartists-timestamps.dat")
    date_path = common.find_optional(src, "user_taggedartists.dat")
    if ts_path:
        frame, lines = _read(ts_path, TAGGED_TS, encoding, TAGGED_TS)
        seconds = (frame["timestamp"].to_numpy() // 1000).astype(np.float64)
        path, source = ts_path, "milliseconds in user_taggedartists-timestamps.dat, floored to seconds"
    elif date_path:
        frame, lines = _read(date_path, TAGGED_DATE, encoding, TAGGED_DATE)
        dates = pd.to_datetime(frame[["day", "month", "year"]], errors="coerce", utc=True)
        bad = dates.isna().to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataFormatError(f"{date_path}, line {lines[i]}: day/month/year {frame['day'].iloc[i]}/"
                                  f"{frame['month'].iloc[i]}/{frame['year'].iloc[i]} is not a date. {FIX}")
        seconds = (dates.astype("int64") // 10**9).astype(np.float64).to_numpy()
        path, source = date_path, "day/month/year in user_taggedartists.dat, midnight UTC"
    else:
        return None, {"file": None, "time_source": None}
    tagging = pd.DataFrame({"user": frame["userID"].to_numpy(), "artist": frame["artistID"].to_numpy(),
                            "tag": frame["tagID"].to_numpy(), "time": seconds})
    return tagging, {"file": os.path.basename(path), "time_source": source, "assignments": int(len(tagging))}


def top_tags(tagging, tag_names, n):
    """artist -> its ``n`` most frequent tags: ranked by the number of distinct users who applied the tag to
    the artist (descending), ties by tagID (ascending). Tags missing from tags.dat or empty are skipped."""
    if tagging is None or n <= 0 or len(tagging) == 0:
        return {}
    triples = tagging[["user", "artist", "tag"]].drop_duplicates()
    triples = triples[triples["tag"].isin(tag_names.index)]
    counts = triples.groupby(["artist", "tag"]).size().rename("users").reset_index()
    counts["name"] = tag_names.loc[counts["tag"].to_numpy()].to_numpy()
    counts = counts[counts["name"] != ""]
    counts = counts.sort_values(["artist", "users", "tag"], ascending=[True, False, True], kind="mergesort")
    counts = counts.groupby("artist", sort=False).head(n)
    return {int(a): list(g) for a, g in counts.groupby("artist", sort=False)["name"]}


def convert(args, command):
    t_start = time.time()
    name = common.check_args(args)
    if args.top_tags < 0:
        raise ConfigError(f"--top-tags must be >= 0, got {args.top_tags}.")

    # ---- play counts: duplicate (user, artist) rows (none in the original) summed, first row's position kept
    ua_path = common.find_input(args.src, "user_artists.dat", dataset=DATASET, hint=HINT)
    ua, ua_lines = _read(ua_path, USER_ARTISTS, args.encoding, ["userID", "artistID"])
    if len(ua) == 0:
        raise DataFormatError(f"{ua_path}: no user-artist rows after the header. {FIX}")
    agg = common.EventAggregator()
    agg.add(ua["userID"].to_numpy(), ua["artistID"].to_numpy(),
            counts=common.parse_numbers(ua["weight"], ua_lines, ua_path, "weight", fix=FIX))
    pairs = agg.result()
    common.log(args, f"{ua_path}: {agg.rows} rows, {len(agg.users)} users, {len(agg.items)} artists")

    # ---- artists, tags, tagging
    artists_path = common.find_input(args.src, "artists.dat", dataset=DATASET, hint=HINT)
    artists, _ = _read(artists_path, ARTISTS, args.encoding, ["id"])
    artist_names = pd.Series(artists["name"].map(common.clean_text).to_numpy(), index=artists["id"].to_numpy())
    artist_names = artist_names[~artist_names.index.duplicated(keep="first")]

    tags_path = common.find_optional(args.src, "tags.dat")
    if tags_path:
        tags, _ = _read(tags_path, TAGS, args.tags_encoding, ["tagID"])
        tag_names = pd.Series(tags["tagValue"].map(common.clean_text).to_numpy(), index=tags["tagID"].to_numpy())
        tag_names = tag_names[~tag_names.index.duplicated(keep="first")]
    else:
        tag_names = pd.Series(dtype=object)
    tagging, tag_info = read_tagging(args.src, args.encoding)
    if tagging is not None:
        tag_info["assignments_with_unknown_tag"] = int((~tagging["tag"].isin(tag_names.index)).sum())
        tag_info["tagged_user_artist_pairs"] = int(len(tagging[["user", "artist"]].drop_duplicates()))

    # ---- time
    pairs["timestamp"] = common.position_in_user(pairs)
    pairs["timed"] = False
    if args.time == "tagging" and tagging is not None:
        first = tagging.groupby(["user", "artist"])["time"].min()
        idx = pd.MultiIndex.from_arrays([pairs["user_id"].astype(np.int64), pairs["item_id"].astype(np.int64)])
        found = first.reindex(idx).to_numpy()
        has = ~np.isnan(found)
        pairs.loc[has, "timestamp"] = found[has]
        pairs["timed"] = has
        if has.any():
            tag_info["tagging_time_min"] = pd.to_datetime(found[has].min(), unit="s", utc=True).isoformat()
            tag_info["tagging_time_max"] = pd.to_datetime(found[has].max(), unit="s", utc=True).isoformat()
            tag_info["played_pairs_tagged_before_2000"] = int((found[has] < 946684800).sum())

    # ---- labels, k-core, order
    inter, label_stats = common.label_play_counts(pairs, args, extra_columns=["timed"])

    # ---- items and text
    items = np.array(sorted(inter["item_id"].unique(), key=int), dtype=object)
    item_keys = items.astype(np.int64)
    names = artist_names.reindex(item_keys)
    missing_meta = int(names.isna().sum())
    names = names.fillna("").to_numpy()
    tag_lists = top_tags(tagging, tag_names, args.top_tags)
    item_tags = [tag_lists.get(int(k), []) for k in item_keys]
    texts = [make_text(n, t) for n, t in zip(names, item_tags)]

    stats = {
        "name": name, "format": "hetrec-lastfm", "command": command,
        "raw_rows": agg.rows, "malformed_rows": 0, "duplicate_pairs_merged": agg.rows - len(pairs),
        "pairs": len(inter), "time": args.time, "pairs_with_tagging_time": int(inter["timed"].sum()), **label_stats,
        "artists_in_artists_dat": int(len(artist_names)), "items_without_artist_name": missing_meta,
        "tags_in_tags_dat": int(len(tag_names)), "items_with_tags": int(sum(1 for t in item_tags if t)),
        "top_tags": int(args.top_tags), "tags_encoding": args.tags_encoding, "tagging": tag_info,
    }
    item_text = pd.DataFrame({"item_id": items, "text": texts, "artist_name": names,
                              "tags": ["|".join(t.replace("|", "/") for t in ts) for ts in item_tags]})
    return common.write_play_count_dataset(args, stats, inter, pd.DataFrame({"item_id": items}), item_text,
                                           render_readme, t_start, "artists")


def make_text(artist, tags):
    artist = artist or UNKNOWN_ARTIST
    if tags:
        return TEXT_TEMPLATE.format(artist=artist, tags=", ".join(tags))
    return TEXT_TEMPLATE_NO_TAGS.format(artist=artist)


def render_readme(s):
    name = s["name"]
    t = s["tagging"]
    numbers = [
        ("`user_artists.dat` rows (published: 92,834)", s["raw_rows"]),
        ("malformed rows", "0 (a malformed line is an error, nothing is skipped)"),
        ("duplicate (user, artist) rows merged (weights summed)", s["duplicate_pairs_merged"]),
        common.kcore_row(s),
        ("**users** (published: 1,892)", f"**{s['users']}**"),
        ("**items = artists** (published: 17,632)", f"**{s['items']}**"),
        (f"**rows (user-artist pairs) in `{name}.inter`**", f"**{s['rows']}**"),
        common.play_count_label_row(s["labels"]),
        ("rows with a real tagging time", s["pairs_with_tagging_time"] if s["time"] == "tagging" else "0 (`--time row-order`)"),
        ("tag assignments read / with a tagID missing from tags.dat",
         f"{t.get('assignments', 0)} / {t.get('assignments_with_unknown_tag', 0)}" if t.get("file") else "no tagging file"),
        ("items with at least one tag / without a name in artists.dat",
         f"{s['items_with_tags']} / {s['items_without_artist_name']}"),
    ]
    if t.get("tagging_time_min"):
        numbers.append(("tagging times of played pairs (min / max)", f"{t['tagging_time_min']} / {t['tagging_time_max']}"))
        numbers.append(("played pairs tagged before 2000 (junk dates in the raw file)", t["played_pairs_tagged_before_2000"]))
    time_text = (
        "The raw data has **no listening time**. "
        + ("With `--time tagging` (default) a pair the user also tagged gets the first time the user tagged that "
           f"artist ({t['time_source']}). Every other pair gets a **placeholder, not a time**: its position among "
           "the user's rows of `user_artists.dat` (0, 1, 2, ... in file order, i.e. artistID order in the original). "
           "Real tagging times are unix seconds (about 1e9 for 2001 onwards), so in a user's time order the "
           "untagged pairs come first, in file order, followed by the tagged ones in tagging order (tagging dates "
           "before 1970, which exist in the raw file, are negative and sort first). A time-ordered split therefore "
           "puts tagged artists into validation/test; use `--time row-order` to ignore tagging times."
           if s["time"] == "tagging" else
           "With `--time row-order` every pair's timestamp is its position among the user's rows of "
           "`user_artists.dat` (0, 1, 2, ... in file order): a placeholder, not a time.")
        + " Ties (same user and time) are ordered by artist id.")
    choices = [
        "- **Users / items**: `userID` / `artistID` of `user_artists.dat`, kept as written. Every row is kept "
        "(filtering only with `--kcore`, applied after labelling).",
        *common.play_count_label_choices(s, "play count (weight)", source="`weight`"),
        f"- **Time**: {time_text}",
        "- `user_friends.dat` is not used.",
    ]
    item_text = (
        f"Template: `{TEXT_TEMPLATE}` (no tags: `{TEXT_TEMPLATE_NO_TAGS}`; artist missing from artists.dat: "
        f"`{UNKNOWN_ARTIST}`). Tags: "
        + ("none (`--top-tags 0`). " if not s["top_tags"] else
           f"the artist's {s['top_tags']} most frequent tags, ranked by the number of distinct users who applied "
           "the tag to that artist (ties: smaller tagID first), from "
           f"`{t.get('file') or 'no tagging file'}`; assignments whose tagID is not in tags.dat are skipped "
           "(counted above). ")
        + f"Tag names come from `tags.dat`, read as {s['tags_encoding']}. Tabs/newlines in names become spaces.")
    sections = [
        ("Choices", ["\n".join(choices)]),
        ("Item text", [item_text]),
        common.play_count_files_section(s, "`item_id:token` (artistID)",
                                        "`item_id text artist_name tags` (tags joined by `|`)",
                                        inter_note=", sorted by user (numeric), time, item"),
    ]
    intro = (
        "Generated by `python -m recbole_psrq.convert hetrec-lastfm`. **Do not redistribute these files**: "
        "the HetRec 2011 Last.fm data is made available for non-commercial use only (commercial use: contact "
        "Last.fm); see the readme.txt of hetrec2011-lastfm-2k.zip. Cite: I. Cantador, P. Brusilovsky, T. Kuflik, "
        "\"2nd Workshop on Information Heterogeneity and Fusion in Recommender Systems (HetRec 2011)\", RecSys 2011, "
        "and the Last.fm website (http://www.lastfm.com).")
    return common.render_readme(f"{name} — converted HetRec 2011 Last.fm-2k", intro, s.get("command"), numbers,
                                sections)
