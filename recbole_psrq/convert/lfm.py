"""LFM-1b and LFM-2b (M. Schedl et al., JKU Linz) -> RecBole atomic files + track text.

LFM-1b (``lfm-1b``), TAB-separated, no header (``.gz`` / ``.bz2`` copies are read directly):
``LFM-1b_LEs.txt`` (``user-id artist-id album-id track-id unix-timestamp``, one listening event per line),
``LFM-1b_tracks.txt`` (``track-id track-name artist-id``), ``LFM-1b_artists.txt`` (``artist-id artist-name``).

LFM-2b (``lfm-2b``), TAB-separated ``.tsv.bz2`` with a header line (plain ``.tsv`` / ``.gz`` also read):
``listening-events.tsv.bz2`` (``user_id track_id album_id timestamp``, ``YYYY-MM-DD HH:MM:SS`` UTC),
``listening-counts.tsv.bz2`` (``user_id track_id count``), ``tracks.tsv.bz2`` (``track_id artist_name
track_name``). Columns are found by name in the header, so extra columns or another order are fine.

Items are tracks (``track-id`` / ``track_id``). Events are aggregated to one row per (user, track):
timestamp = first play (unix seconds), ``play_count`` = number of events, label rule ``repeat`` by default
(count >= 2 -> 1). LFM-2b with ``--counts`` (or without an events file) reads ``listening-counts`` instead:
``play_count`` = count, the same default label rule ``repeat`` (a count is a count of plays: with most
counts equal to 1, ``user-median`` would label nearly every pair 1), and the timestamp is a placeholder
(the row's position among the user's rows). These files are large (about 1 and 2 billion events): they are streamed in
chunks (``--chunk-rows``) and only (user, track) pairs are kept in memory. A malformed line is an error naming
the file and the line. Every choice is written into the generated README.md.
"""
import os
import time

import numpy as np
import pandas as pd

from recbole_psrq.convert import common
from recbole_psrq.convert.common import NAME_ID_PREFIX, UNKNOWN_ARTIST_ID
from recbole_psrq.convert.common import make_text
from recbole_psrq.errors import ConfigError, DataFormatError

TEXT_TEMPLATE = "{track} by {artist}."

LFM1B = {
    "dataset": "LFM-1b",
    "hint": "Pass --src pointing at the folder of the LFM-1b download (LFM-1b_LEs.txt, LFM-1b_tracks.txt, "
            "LFM-1b_artists.txt; http://www.cp.jku.at/datasets/LFM-1b/).",
    "fix": "The file must be the unmodified LFM-1b original (TAB-separated, no header); repair or remove that line.",
    "events": ("LFM-1b_LEs.txt", ["user-id", "artist-id", "album-id", "track-id", "timestamp"]),
    "tracks": ("LFM-1b_tracks.txt", ["track-id", "track-name", "artist-id"]),
    "artists": ("LFM-1b_artists.txt", ["artist-id", "artist-name"]),
}
LFM2B = {
    "dataset": "LFM-2b",
    "hint": "Pass --src pointing at the folder of the LFM-2b download (listening-events.tsv.bz2 or "
            "listening-counts.tsv.bz2, and tracks.tsv.bz2; http://www.cp.jku.at/datasets/LFM-2b/).",
    "fix": "The file must be the unmodified LFM-2b original (TAB-separated with a header line); repair or remove "
           "that line.",
    "events": "listening-events.tsv", "counts": "listening-counts.tsv", "tracks": "tracks.tsv",
}
LFM2B_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def add_arguments(parser, fmt):
    common.add_label_arguments(parser)
    parser.add_argument("--chunk-rows", type=int, default=5_000_000, help="lines read per chunk")
    if fmt == "lfm-2b":
        parser.add_argument("--counts", action="store_true",
                            help="use listening-counts.tsv.bz2 (play counts, no time) even when "
                                 "listening-events.tsv.bz2 exists")


def _has_header(path, columns):
    """Whether the first line is a header, for files documented without one: a copy of the documented names
    is tolerated."""
    return common.read_header(path)[0] == columns[0]


def _columns_from_header(path, required, fix):
    header = common.read_header(path)
    missing = [c for c in required if c not in header]
    if missing or len(set(header)) != len(header):
        raise DataFormatError(f"{path}, line 1: the header must name the columns {', '.join(required)} "
                              f"(TAB-separated, in any order), found {header!r}. {fix}")
    return header


def _progress(args, path, what):
    name = os.path.basename(path)
    return lambda agg: common.log(args, f"{name}: {getattr(agg, what)} {what}")


def read_names(path, columns, key, wanted, values, header, conf, chunk_rows, int_columns=()):
    """Rows of a metadata file whose ``key`` is in ``wanted`` (first occurrence), as a DataFrame indexed by key.
    Name columns may be empty."""
    wanted = np.asarray(wanted, dtype=np.int64)
    parts = [frame[np.isin(frame[key].to_numpy(), wanted)]
             for frame, _ in common.iter_table(path, columns, header=header, use=[key] + values,
                                               int_columns=[key, *int_columns], chunk_rows=chunk_rows, fix=conf["fix"])]
    if not parts:
        return pd.DataFrame(columns=values)
    return pd.concat(parts, ignore_index=True).drop_duplicates(key).set_index(key)


def convert(args, command):
    t_start = time.time()
    fmt = getattr(args, "format", None)
    if fmt not in ("lfm-1b", "lfm-2b"):
        raise ConfigError(f"recbole_psrq.convert.lfm converts lfm-1b or lfm-2b, got {fmt!r}.")
    name = common.check_args(args)
    stats = {"name": name, "format": fmt, "command": command, "malformed_rows": 0}
    pairs, item_meta, info = (_lfm1b if fmt == "lfm-1b" else _lfm2b)(args)
    inter, label_stats = common.label_play_counts(pairs, args)

    item_keys = np.sort(inter["item_id"].astype(np.int64).unique())
    meta = item_meta(item_keys)  # adds its counts to info
    stats.update(info)
    item_ids = item_keys.astype(str)
    tracks = meta["track_name"].fillna("").map(common.clean_text).to_numpy()
    artists = meta["artist_name"].fillna("").map(common.clean_text).to_numpy()
    stats.update(pairs=len(pairs), items_without_track_name=int((tracks == "").sum()),
                 items_without_artist_name=int((artists == "").sum()), **label_stats)
    return common.write_play_count_dataset(
        args, stats, inter, pd.DataFrame({"item_id": item_ids, "artist_id": meta["artist_id"].to_numpy()}),
        pd.DataFrame({"item_id": item_ids, "text": [make_text(t, a, []) for t, a in zip(tracks, artists)],
                      "track_name": tracks, "artist_name": artists}), render_readme, t_start, "tracks")


def _lfm1b(args):
    conf = LFM1B
    file, columns = conf["events"]
    path = common.find_input(args.src, file, dataset=conf["dataset"], hint=conf["hint"])
    agg = common.aggregate_events(path, columns, "user-id", "track-id", "timestamp", header=_has_header(path, columns),
                                  int_columns=["user-id", "track-id", "artist-id"], time_format="unix",
                                  item_firsts=["artist-id"], chunk_rows=args.chunk_rows, fix=conf["fix"],
                                  progress=_progress(args, path, "events"))
    if agg.events == 0:
        raise DataFormatError(f"{path}: no listening events. {conf['fix']}")
    first_artist = agg.item_firsts()["artist-id"]
    tracks_file, tracks_cols = conf["tracks"]
    artists_file, artists_cols = conf["artists"]
    tracks_path = common.find_input(args.src, tracks_file, dataset=conf["dataset"], hint=conf["hint"])
    artists_path = common.find_input(args.src, artists_file, dataset=conf["dataset"], hint=conf["hint"])
    info = {"source": "events", "files": [os.path.basename(p) for p in (path, tracks_path, artists_path)],
            "raw_events": int(agg.events), "raw_users": len(agg.users), "raw_items": len(agg.items)}

    def item_meta(keys):
        artist_ids = first_artist.reindex(keys).to_numpy(dtype=np.int64)
        found = read_names(tracks_path, tracks_cols, "track-id", keys, ["track-name", "artist-id"],
                           _has_header(tracks_path, tracks_cols), conf, args.chunk_rows, int_columns=["artist-id"])
        found = found.reindex(keys)
        info["items_missing_from_tracks_file"] = int(found["track-name"].isna().sum())
        listed = found["artist-id"].to_numpy(dtype=float)
        info["items_whose_tracks_file_artist_differs"] = int(
            (~np.isnan(listed) & (listed != artist_ids.astype(float))).sum())
        names = read_names(artists_path, artists_cols, "artist-id", np.unique(artist_ids), ["artist-name"],
                           _has_header(artists_path, artists_cols), conf, args.chunk_rows)
        artist_names = names["artist-name"].reindex(artist_ids).to_numpy()
        return pd.DataFrame({"track_name": found["track-name"].to_numpy(), "artist_name": artist_names,
                             "artist_id": artist_ids.astype(str)})

    return agg.result(), item_meta, info


def _lfm2b(args):
    conf = LFM2B
    events_path = common.find_optional(args.src, conf["events"])
    counts_path = common.find_optional(args.src, conf["counts"])
    if args.counts or events_path is None:
        if counts_path is None:
            raise DataFormatError(
                f"{conf['dataset']}: " + ("--counts was given but " if args.counts else "neither listening-events "
                                          "nor ") + f"listening-counts.tsv(.bz2) was found in {args.src}. {conf['hint']}")
        columns = _columns_from_header(counts_path, ["user_id", "track_id", "count"], conf["fix"])
        agg = common.aggregate_events(counts_path, columns, "user_id", "track_id", count_column="count",
                                      int_columns=["user_id", "track_id"], chunk_rows=args.chunk_rows,
                                      fix=conf["fix"], progress=_progress(args, counts_path, "rows"))
        if agg.rows == 0:
            raise DataFormatError(f"{counts_path}: no rows after the header. {conf['fix']}")
        pairs = agg.result()
        pairs["timestamp"] = common.position_in_user(pairs)  # no time in the file
        info = {"source": "counts", "files": [os.path.basename(counts_path)], "raw_count_rows": agg.rows,
                "duplicate_count_rows_merged": agg.rows - len(pairs), "raw_events": int(agg.events)}
    else:
        columns = _columns_from_header(events_path, ["user_id", "track_id", "timestamp"], conf["fix"])
        agg = common.aggregate_events(events_path, columns, "user_id", "track_id", "timestamp",
                                      int_columns=["user_id", "track_id"], time_format=LFM2B_TIME_FORMAT,
                                      chunk_rows=args.chunk_rows, fix=conf["fix"],
                                      progress=_progress(args, events_path, "events"))
        if agg.events == 0:
            raise DataFormatError(f"{events_path}: no listening events after the header. {conf['fix']}")
        pairs = agg.result()
        info = {"source": "events", "files": [os.path.basename(events_path)], "raw_events": int(agg.events)}
    info.update({"raw_users": len(agg.users), "raw_items": len(agg.items)})
    tracks_path = common.find_input(args.src, conf["tracks"], dataset=conf["dataset"], hint=conf["hint"])
    info["files"].append(os.path.basename(tracks_path))
    tracks_cols = _columns_from_header(tracks_path, ["track_id", "track_name"], conf["fix"])
    if "artist_name" not in tracks_cols and "artist_id" not in tracks_cols:
        raise DataFormatError(f"{tracks_path}, line 1: the header needs an artist_name (or artist_id) column, found "
                              f"{tracks_cols!r}. {conf['fix']}")

    def item_meta(keys):
        values = ["track_name"] + [c for c in ("artist_name", "artist_id") if c in tracks_cols]
        found = read_names(tracks_path, tracks_cols, "track_id", keys, values, True, conf, args.chunk_rows)
        found = found.reindex(keys)
        info["items_missing_from_tracks_file"] = int(found["track_name"].isna().sum())
        artist_names = found["artist_name"] if "artist_name" in found else pd.Series([""] * len(keys))
        if "artist_id" in found:
            artist_ids = found["artist_id"].fillna(UNKNOWN_ARTIST_ID).astype(str).str.strip().str.replace(
                r"\s+", "_", regex=True).to_numpy()
            info["artist_id_source"] = "the artist_id column of the tracks file"
        else:
            artist_ids = np.array([common.artist_id_from_name(a) for a in artist_names.fillna("")], dtype=object)
            info["artist_id_source"] = "derived from the normalised artist_name"
        return pd.DataFrame({"track_name": found["track_name"].to_numpy(), "artist_name": artist_names.to_numpy(),
                             "artist_id": artist_ids})

    return pairs, item_meta, info


def render_readme(s):
    name = s["name"]
    is_1b = s["format"] == "lfm-1b"
    title = "LFM-1b" if is_1b else "LFM-2b"
    events = s["source"] == "events"
    if is_1b:
        licence = ("**Do not redistribute these files**: LFM-1b is provided for non-commercial research use only, "
                   "under the terms you accepted when downloading it (http://www.cp.jku.at/datasets/LFM-1b/). Cite: "
                   "M. Schedl, \"The LFM-1b Dataset for Music Retrieval and Recommendation\", ICMR 2016.")
        published = "as published: 1,088,161,692 events by 120,322 users on 32,291,134 tracks"
        time_text = "`timestamp` = the first play (the raw unix seconds)"
    else:
        licence = ("**Do not redistribute these files**: LFM-2b is provided for non-commercial research use only, "
                   "under the terms you accepted when downloading it (http://www.cp.jku.at/datasets/LFM-2b/). Cite: "
                   "M. Schedl, S. Brandl, O. Lesota, E. Parada-Cabaleiro, D. Penz, N. Rekabsaz, \"LFM-2b: A Dataset "
                   "of Enriched Music Listening Events for Recommender Systems Research and Fairness Analysis\", "
                   "CHIIR 2022.")
        published = "check against the statistics published with your LFM-2b copy"
        time_text = "`timestamp` = the first play (`YYYY-MM-DD HH:MM:SS` read as UTC, unix seconds)"
    numbers = [("input files", ", ".join(f"`{f}`" for f in s["files"]))]
    if events:
        numbers.append((f"**listening events read** ({published})", f"**{s['raw_events']}**"))
    else:
        numbers += [("**listening-counts rows read**", f"**{s['raw_count_rows']}**"),
                    ("duplicate (user, track) rows merged (counts summed)", s["duplicate_count_rows_merged"]),
                    ("sum of counts (= listening events)", s["raw_events"])]
    numbers += [
        ("malformed lines", "0 (a malformed line is an error, nothing is skipped)"),
        ("users / tracks in the input", f"{s['raw_users']} / {s['raw_items']}"),
        ("(user, track) pairs", s["pairs"]),
        common.kcore_row(s),
        ("**users**", f"**{s['users']}**"),
        ("**items = tracks**", f"**{s['items']}**"),
        (f"**rows in `{name}.inter`**", f"**{s['rows']}**"),
        common.play_count_label_row(s["labels"]),
        ("tracks missing from the tracks file (text uses placeholders)", s.get("items_missing_from_tracks_file", 0)),
        ("tracks without a track name / artist name", f"{s['items_without_track_name']} / {s['items_without_artist_name']}"),
    ]
    if is_1b:
        numbers.append(("tracks whose LFM-1b_tracks.txt artist-id differs from the events' artist-id",
                        s.get("items_whose_tracks_file_artist_differs", 0)))
    if events:
        aggregation = (f"- **Aggregation**: all events of a (user, track) pair become one row: {time_text}, "
                       "`play_count` = number of events (identical events are counted as separate plays).")
    else:
        aggregation = ("- **Counts, no time**: `play_count` = `count` of `listening-counts`. That file has **no time**: "
                       "`timestamp` is a **placeholder, not a time**: the row's position among the user's rows in "
                       "file order (0, 1, 2, ...). Duplicate (user, track) rows are merged, counts summed, the first "
                       "position kept.")
    artist_text = ("`artist_id` = the `artist-id` of the track's first listening event in file order; names from "
                   "`LFM-1b_tracks.txt` and `LFM-1b_artists.txt`" if is_1b else
                   f"`artist_id` {s.get('artist_id_source', '')}: `{NAME_ID_PREFIX}` + sha1(normalised name)[:16] "
                   f"(normalised = NFKC, lower-case, collapsed whitespace; `{UNKNOWN_ARTIST_ID}` without a name) unless "
                   "the tracks file has an artist_id column; names from `tracks.tsv`")
    choices = [
        "- **Parsing**: TAB-separated, no quoting, LF or CRLF, compressed files read directly; "
        + ("no header (a first line naming the documented columns is skipped). " if is_1b else
           "columns found by name in the header line. ")
        + "A line with the wrong number of fields, an empty or non-integer id or an unparseable time stops the "
        "conversion with an error naming the file and the line.",
        "- **Users / items**: the numeric user and track ids, as written.",
        aggregation,
        *common.play_count_label_choices(s),
        "- **Filtering**: none; every valid row is kept. `--kcore` (users and tracks, after labelling) is opt-in.",
        "- **Order**: rows sorted by user (numeric), time, track id.",
        f"- **Artists**: {artist_text}.",
    ]
    sections = [
        ("Choices", ["\n".join(choices)]),
        ("Item text", [f"Template: `{TEXT_TEMPLATE}` (`(untitled)` / `(unknown artist)` for a missing name); "
                       "tabs/newlines become spaces."]),
        common.play_count_files_section(s, "`item_id:token artist_id:token`", "`item_id text track_name artist_name`"),
    ]
    return common.render_readme(f"{name} — converted {title}",
                                f"Generated by `python -m recbole_psrq.convert {s['format']}`. {licence}",
                                s.get("command"), numbers, sections)
