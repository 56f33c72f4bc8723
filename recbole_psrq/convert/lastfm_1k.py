"""Last.fm Dataset - 1K users (Ò. Celma) -> RecBole atomic files + track text.

Raw file: ``userid-timestamp-artid-artname-traid-traname.tsv`` (``.gz`` / ``.bz2`` copies are read
directly): TAB-separated, no header, no quoting, one listening event per line:
``userid, timestamp (ISO-8601 UTC, e.g. 2009-05-04T23:08:57Z), artist MBID (may be empty), artist name,
track MBID (may be empty), track name``. The original holds a few malformed lines (a TAB inside a name,
truncated lines): they are skipped and **reported** (count + examples in the stats and README), never
dropped silently. ``userid-profile.tsv`` is not used.

Items are tracks: the track MBID, or for an event without one ``nm:`` + the first 16 hex digits of
sha1(normalised artist name + U+001F + normalised track name). Events are aggregated to one row per
(user, track): timestamp = first play (unix seconds), ``play_count`` = number of events; label rule
``repeat`` by default (count >= 2 -> 1) or ``user-median``. The generated README.md records every choice.
"""
import os
import time

import numpy as np
import pandas as pd

from recbole_psrq.convert import common
from recbole_psrq.convert.common import NAME_ID_PREFIX, UNKNOWN_ARTIST_ID
from recbole_psrq.convert.common import make_text
from recbole_psrq.errors import DataFormatError

DATASET = "Last.fm-1K"
FILE = "userid-timestamp-artid-artname-traid-traname.tsv"
HINT = ("Download lastfm-dataset-1K.tar.gz (http://ocelma.net/MusicRecommendationDataset/lastfm-1K.html), "
        "extract it and pass the folder holding userid-timestamp-artid-artname-traid-traname.tsv with --src.")
FIX = "The file must be the original userid-timestamp-artid-artname-traid-traname.tsv (6 TAB-separated fields)."
COLUMNS = ["userid", "timestamp", "artist_mbid", "artist_name", "track_mbid", "track_name"]
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
VARIANT = ["item_id", "artist_mbid", "artist_name", "track_name"]


def add_arguments(parser, fmt=None):
    common.add_label_arguments(parser)
    parser.add_argument("--chunk-rows", type=int, default=common.DEFAULT_CHUNK_ROWS, help="lines read per chunk")


def artist_id(mbid, name):
    mbid = (mbid or "").strip()
    if mbid and not any(c.isspace() for c in mbid):
        return mbid
    return common.artist_id_from_name(name)


def _check_chunk(frame, lines, path, malformed):
    """Row-level checks of one chunk; bad rows are reported to ``malformed``. Returns (keep mask, seconds)."""
    user = frame["userid"].str.strip()
    stamp = frame["timestamp"].str.strip()
    seconds = common.unix_seconds(stamp, TIME_FORMAT)
    track_mbid = frame["track_mbid"].str.strip()
    checks = [
        (user == "", lambda i: "empty userid"),
        (user.str.contains(r"\s", regex=True), lambda i: f"userid {user.iloc[i]!r} contains whitespace"),
        (np.isnan(seconds), lambda i: f"timestamp {stamp.iloc[i]!r} is not YYYY-MM-DDTHH:MM:SSZ"),
        (track_mbid.str.contains(r"\s", regex=True), lambda i: f"track MBID {track_mbid.iloc[i]!r} contains whitespace"),
        ((track_mbid == "") & (frame["track_name"].str.strip() == ""), lambda i: "no track MBID and no track name"),
    ]
    keep = np.ones(len(frame), dtype=bool)
    for mask, reason in checks:
        mask = np.asarray(mask) & keep
        for i in np.flatnonzero(mask):
            malformed.add(path, int(lines[i]), reason(i))
        keep &= ~mask
    return keep, seconds


def convert(args, command):
    t_start = time.time()
    name = common.check_args(args)
    path = common.find_input(args.src, FILE, dataset=DATASET, hint=HINT)

    malformed = common.MalformedRows(max_examples=10)
    agg = common.EventAggregator()
    variant_parts = []
    events_without_mbid = 0
    for frame, lines in common.iter_table(path, COLUMNS, malformed=malformed, chunk_rows=args.chunk_rows, fix=FIX):
        keep, seconds = _check_chunk(frame, lines, path, malformed)
        frame, seconds = frame[keep].reset_index(drop=True), seconds[keep]
        mbid = frame["track_mbid"].str.strip()
        no_mbid = (mbid == "").to_numpy()
        tokens = mbid.to_numpy(dtype=object).copy()
        if no_mbid.any():
            named = frame.loc[no_mbid, ["artist_name", "track_name"]]
            pairs = named.drop_duplicates()
            ids = pd.Series([common.name_id(a, t) for a, t in zip(pairs["artist_name"], pairs["track_name"])],
                            index=pd.MultiIndex.from_frame(pairs))
            tokens[no_mbid] = ids.reindex(pd.MultiIndex.from_frame(named)).to_numpy()
        info = pd.DataFrame({"item_id": tokens, "artist_mbid": frame["artist_mbid"].str.strip(),
                             "artist_name": frame["artist_name"], "track_name": frame["track_name"],
                             "order": np.arange(agg.rows, agg.rows + len(frame))})
        variant_parts.append(info.groupby(VARIANT, sort=False).agg(n=("order", "size"), first=("order", "min")))
        agg.add(frame["userid"].str.strip().to_numpy(dtype=object), tokens, seconds)
        events_without_mbid += int(no_mbid.sum())
        common.log(args, f"{path}: {agg.rows} events read, {malformed.total} malformed lines skipped")
    if agg.rows == 0:
        raise DataFormatError(f"{path}: no valid listening events (malformed lines: {malformed.total}"
                              + (f"; e.g. {malformed.examples[0]}" if malformed.examples else "") + f"). {FIX}")

    # ---- items: names (and artist MBID) of the track's most frequent variant, ties -> first in file order
    variants = pd.concat(variant_parts).groupby(level=VARIANT, sort=False).agg(n=("n", "sum"), first=("first", "min"))
    variants = variants.reset_index().sort_values(["item_id", "n", "first"], ascending=[True, False, True],
                                                  kind="mergesort")
    conflicting = int(variants.drop_duplicates(["item_id", "artist_name", "track_name"])["item_id"]
                      .value_counts().gt(1).sum())
    meta = variants.drop_duplicates("item_id").set_index("item_id")
    from_names = meta.index.str.startswith(NAME_ID_PREFIX)
    mbid_name_keys = {common.name_id(a, t) for a, t in zip(meta.loc[~from_names, "artist_name"],
                                                          meta.loc[~from_names, "track_name"])}
    nm_also_mbid = int(sum(1 for t in meta.index[from_names] if t in mbid_name_keys))

    # ---- pairs, labels, k-core, order
    pairs = agg.result()
    inter, label_stats = common.label_play_counts(pairs, args)

    item_ids = np.sort(inter["item_id"].unique().astype(str))
    m = meta.loc[item_ids]
    artist_names = m["artist_name"].map(common.clean_text).to_numpy()
    track_names = m["track_name"].map(common.clean_text).to_numpy()
    item_frame = pd.DataFrame({"item_id": item_ids,
                               "artist_id": [artist_id(a, n) for a, n in zip(m["artist_mbid"], m["artist_name"])]})
    text_frame = pd.DataFrame({"item_id": item_ids,
                               "text": [make_text(t, a, []) for t, a in zip(track_names, artist_names)],
                               "track_name": track_names, "artist_name": artist_names})
    stats = {
        "name": name, "format": "lastfm-1k", "command": command, "file": os.path.basename(path),
        "raw_lines": int(agg.rows + malformed.total), "raw_events": int(agg.rows), "malformed": malformed.as_dict(),
        "malformed_rows": malformed.total, "events_without_track_mbid": int(events_without_mbid),
        "raw_users": len(agg.users), "raw_items": len(agg.items), "raw_items_from_names": int(from_names.sum()),
        "name_items_whose_names_match_an_mbid_item": nm_also_mbid,
        "items_with_conflicting_names": conflicting, "pairs": len(pairs),
        "items_from_names": int(sum(1 for t in item_ids if t.startswith(NAME_ID_PREFIX))), **label_stats,
        "profile_file_present": common.find_optional(args.src, "userid-profile.tsv") is not None,
    }
    return common.write_play_count_dataset(args, stats, inter, item_frame, text_frame, render_readme, t_start, "tracks")


def render_readme(s):
    name = s["name"]
    mal = s["malformed"]
    numbers = [
        ("non-blank lines read (published: 19,150,868 lines)", s["raw_lines"]),
        ("**malformed lines skipped**", f"**{mal['total']}**"),
        ("valid listening events", s["raw_events"]),
        ("events without a track MBID (item id from names)", s["events_without_track_mbid"]),
        ("users in the events (published: 992)", s["raw_users"]),
        ("tracks in the events (MBID / from names)",
         f"{s['raw_items']} ({s['raw_items'] - s['raw_items_from_names']} / {s['raw_items_from_names']})"),
        ("name-derived tracks whose normalised names match an MBID track", s["name_items_whose_names_match_an_mbid_item"]),
        ("tracks whose events disagree on artist/track name (most frequent used)", s["items_with_conflicting_names"]),
        ("(user, track) pairs", s["pairs"]),
        common.kcore_row(s),
        ("**users**", f"**{s['users']}**"),
        ("**items = tracks** (of which name-derived)", f"**{s['items']}** ({s['items_from_names']})"),
        (f"**rows in `{name}.inter`**", f"**{s['rows']}**"),
        common.play_count_label_row(s["labels"]),
    ]
    notes = [
        f"Malformed lines (wrong number of TAB-separated fields, e.g. a TAB inside a name or a truncated line; an "
        f"unparseable timestamp; no track MBID and no track name) are skipped. By file: {mal['by_file'] or '{}'}. "
        "First examples:",
        "\n".join(f"- {e}" for e in mal["examples"]) if mal["examples"] else "- none",
    ]
    choices = [
        "- **Parsing**: TAB-separated, no quoting (quotes are part of names), LF or CRLF line ends; lines are "
        "split on LF only.",
        "- **Users**: `userid` as written.",
        "- **Items = tracks**: the track MBID when present. An event without one gets the id "
        f"`{NAME_ID_PREFIX}` + the first 16 hex digits of sha1(normalised artist name + U+001F + normalised track "
        "name), normalised = Unicode NFKC, lower-case, whitespace collapsed and stripped. Such ids never merge "
        "with MBID tracks, even when the names match (counted above).",
        "- **Aggregation**: all events of a (user, track) pair become one row: `timestamp` = the first play "
        "(unix seconds, UTC), `play_count` = number of events. Identical events (same user, track and second) "
        "are counted as separate plays, as in the published line count.",
        *common.play_count_label_choices(s),
        "- **Filtering**: none besides the malformed lines; `--kcore` (users and tracks, after labelling) is opt-in.",
        "- **Order**: rows sorted by user, first-play time, item id.",
        "- **Names / artist_id**: from the track's most frequent (artist MBID, artist name, track name) variant "
        f"among its events (ties: the first in file order). `artist_id` = that artist MBID, else `{NAME_ID_PREFIX}` "
        f"+ sha1(normalised artist name)[:16] (`{UNKNOWN_ARTIST_ID}` without a name).",
        "- `userid-profile.tsv` is not used" + (" (it is present)." if s["profile_file_present"] else "."),
    ]
    sections = [
        ("Choices", ["\n".join(choices)]),
        ("Item text", ["Template: `{track} by {artist}.` (`(untitled)` / `(unknown artist)` for an empty name); "
                       "tabs/newlines become spaces."]),
        common.play_count_files_section(s, "`item_id:token artist_id:token`", "`item_id text track_name artist_name`"),
    ]
    intro = ("Generated by `python -m recbole_psrq.convert lastfm-1k`. **Do not redistribute these files**: the "
             "data is distributed with permission of Last.fm for non-commercial use only (commercial use: contact "
             "Last.fm; see the README of lastfm-dataset-1K.tar.gz and the Last.fm terms of service). Cite: Ò. Celma, "
             "\"Music Recommendation and Discovery in the Long Tail\", Springer, 2010.")
    return common.render_readme(f"{name} — converted Last.fm Dataset - 1K users", intro, s.get("command"), numbers,
                                sections, notes)
