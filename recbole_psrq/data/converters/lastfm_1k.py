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

from recbole_psrq.data.converters import common
from recbole_psrq.data.mpd import make_text, normalize_name
from recbole_psrq.errors import ConfigError, DataFormatError

DATASET = "Last.fm-1K"
FILE = "userid-timestamp-artid-artname-traid-traname.tsv"
HINT = ("Download lastfm-dataset-1K.tar.gz (http://ocelma.net/MusicRecommendationDataset/lastfm-1K.html), "
        "extract it and pass the folder holding userid-timestamp-artid-artname-traid-traname.tsv with --src.")
FIX = "The file must be the original userid-timestamp-artid-artname-traid-traname.tsv (6 TAB-separated fields)."
COLUMNS = ["userid", "timestamp", "artist_mbid", "artist_name", "track_mbid", "track_name"]
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
NAME_ID_PREFIX = "nm:"
UNKNOWN_ARTIST_ID = "[unknown]"
VARIANT = ["code", "artist_mbid", "artist_name", "track_name"]


def add_arguments(parser, fmt=None):
    parser.add_argument("--label-rule", choices=common.LABEL_RULES, default="repeat",
                        help="repeat (default: played >= 2 times -> 1) or user-median (play count >= the user's "
                             "median -> 1)")
    parser.add_argument("--label-quantile", type=float, default=0.5,
                        help="quantile of the user's play counts used by user-median (default 0.5)")
    parser.add_argument("--chunk-rows", type=int, default=1_000_000, help="lines read per chunk")


def name_id(artist, track):
    """Item id of an event without a track MBID."""
    return common.stable_id(NAME_ID_PREFIX, normalize_name(artist), normalize_name(track))


def artist_id(mbid, name):
    mbid = (mbid or "").strip()
    if mbid and not any(c.isspace() for c in mbid):
        return mbid
    key = normalize_name(name)
    return common.stable_id(NAME_ID_PREFIX, key) if key else UNKNOWN_ARTIST_ID


def _check_chunk(frame, lines, path, malformed):
    """Row-level checks of one chunk; bad rows are reported to ``malformed``. Returns (keep mask, seconds)."""
    user = frame["userid"].str.strip()
    stamp = frame["timestamp"].str.strip()
    parsed = pd.to_datetime(stamp, format=TIME_FORMAT, errors="coerce", utc=True)
    track_mbid = frame["track_mbid"].str.strip()
    checks = [
        (user == "", lambda i: "empty userid"),
        (user.str.contains(r"\s", regex=True), lambda i: f"userid {user.iloc[i]!r} contains whitespace"),
        (parsed.isna(), lambda i: f"timestamp {stamp.iloc[i]!r} is not YYYY-MM-DDTHH:MM:SSZ"),
        (track_mbid.str.contains(r"\s", regex=True), lambda i: f"track MBID {track_mbid.iloc[i]!r} contains whitespace"),
        ((track_mbid == "") & (frame["track_name"].str.strip() == ""), lambda i: "no track MBID and no track name"),
    ]
    keep = np.ones(len(frame), dtype=bool)
    for mask, reason in checks:
        mask = mask.to_numpy() & keep
        for i in np.flatnonzero(mask):
            malformed.add(path, int(lines[i]), reason(i))
        keep &= ~mask
    seconds = (parsed.astype("int64") // 10**9).to_numpy(np.float64)
    return keep, seconds


def convert(args, command):
    t_start = time.time()
    name = common.check_name(args.name)
    if args.chunk_rows < 1:
        raise ConfigError(f"--chunk-rows must be >= 1, got {args.chunk_rows}.")
    if not 0.0 <= args.label_quantile <= 1.0:
        raise ConfigError(f"--label-quantile must be in [0, 1], got {args.label_quantile}.")
    log = (lambda msg: None) if args.no_progress else (lambda msg: print(f"[lastfm-1k] {msg}", flush=True))
    path = common.find_input(args.src, FILE, dataset=DATASET, hint=HINT)

    malformed = common.MalformedRows(max_examples=10)
    users, items = common.TokenCoder(), common.TokenCoder()
    agg = common.PlayAggregator()
    variant_parts = []
    events = events_without_mbid = 0
    for frame, lines in common.iter_rows(path, COLUMNS, header=False, malformed=malformed,
                                         chunk_rows=args.chunk_rows, fix=FIX):
        keep, seconds = _check_chunk(frame, lines, path, malformed)
        frame, seconds = frame[keep].reset_index(drop=True), seconds[keep]
        mbid = frame["track_mbid"].str.strip()
        no_mbid = (mbid == "").to_numpy()
        tokens = mbid.to_numpy(dtype=object).copy()
        if no_mbid.any():
            named = frame.loc[no_mbid, ["artist_name", "track_name"]]
            pairs = named.drop_duplicates()
            ids = pd.Series([name_id(a, t) for a, t in zip(pairs["artist_name"], pairs["track_name"])],
                            index=pd.MultiIndex.from_frame(pairs))
            tokens[no_mbid] = ids.reindex(pd.MultiIndex.from_frame(named)).to_numpy()
        item_codes = items.encode(tokens)
        user_codes = users.encode(frame["userid"].str.strip().to_numpy(dtype=object))
        agg.add(user_codes, item_codes, seconds)
        info = pd.DataFrame({"code": item_codes, "artist_mbid": frame["artist_mbid"].str.strip(),
                             "artist_name": frame["artist_name"], "track_name": frame["track_name"],
                             "order": np.arange(events, events + len(frame))})
        variant_parts.append(info.groupby(VARIANT, sort=False).agg(n=("order", "size"), first=("order", "min")))
        events += len(frame)
        events_without_mbid += int(no_mbid.sum())
        log(f"{path}: {events} events read, {malformed.total} malformed lines skipped")
    if events == 0:
        raise DataFormatError(f"{path}: no valid listening events (malformed lines: {malformed.total}"
                              + (f"; e.g. {malformed.examples[0]}" if malformed.examples else "") + f"). {FIX}")

    # ---- items: names (and artist MBID) of the track's most frequent variant, ties -> first in file order
    variants = pd.concat(variant_parts).groupby(level=VARIANT, sort=False).agg(n=("n", "sum"), first=("first", "min"))
    variants = variants.reset_index().sort_values(["code", "n", "first"], ascending=[True, False, True],
                                                  kind="mergesort")
    conflicting = int(variants.drop_duplicates(["code", "artist_name", "track_name"])["code"].value_counts().gt(1).sum())
    meta = variants.drop_duplicates("code").reset_index(drop=True)
    item_tokens = np.asarray(items.tokens, dtype=object)
    is_nm = np.array([t.startswith(NAME_ID_PREFIX) for t in item_tokens], dtype=bool)
    mbid_name_keys = {name_id(a, t) for a, t in zip(meta.loc[~is_nm, "artist_name"], meta.loc[~is_nm, "track_name"])}
    nm_also_mbid = int(sum(1 for t in item_tokens[is_nm] if t in mbid_name_keys))

    # ---- pairs, labels, k-core, order
    pairs = agg.result()
    inter = pd.DataFrame({"user_id": users.decode(pairs["user"]), "item_id": items.decode(pairs["item"]),
                          "timestamp": pairs["time"].to_numpy(), "play_count": pairs["count"].to_numpy()})
    inter["label"] = common.apply_label_rule(args.label_rule, inter["user_id"].to_numpy(),
                                             inter["play_count"].to_numpy(), args.label_quantile)
    n_pairs = len(inter)
    inter, rounds = common.kcore(inter, args.kcore)
    inter = common.sort_inter(inter)

    kept = np.sort(items.encode(inter["item_id"].unique()))
    item_ids = item_tokens[kept]
    m = meta.set_index("code").loc[kept]
    artist_names = m["artist_name"].map(common.clean_text).to_numpy()
    track_names = m["track_name"].map(common.clean_text).to_numpy()
    artist_ids = [artist_id(a, n) for a, n in zip(m["artist_mbid"], m["artist_name"])]
    order = np.argsort(item_ids.astype(str), kind="mergesort")
    item_frame = pd.DataFrame({"item_id": item_ids, "artist_id": artist_ids}).iloc[order]
    text_frame = pd.DataFrame({"item_id": item_ids,
                               "text": [make_text(t, a, []) for t, a in zip(track_names, artist_names)],
                               "track_name": track_names, "artist_name": artist_names}).iloc[order]
    common.write_outputs(args.out, name, inter, item_frame, text_frame)

    stats = {
        "name": name, "format": "lastfm-1k", "command": command, "file": os.path.basename(path),
        "raw_lines": int(events + malformed.total), "raw_events": int(events), "malformed": malformed.as_dict(),
        "malformed_rows": malformed.total, "events_without_track_mbid": int(events_without_mbid),
        "raw_users": int(len(users)), "raw_items": int(len(items)), "raw_items_from_names": int(is_nm.sum()),
        "name_items_whose_names_match_an_mbid_item": nm_also_mbid,
        "items_with_conflicting_names": conflicting, "pairs": int(n_pairs),
        "users": int(inter["user_id"].nunique()), "items": int(len(item_ids)), "rows": int(len(inter)),
        "items_from_names": int(sum(1 for t in item_ids if t.startswith(NAME_ID_PREFIX))),
        "labels": common.label_counts(inter["label"]), "label_rule": args.label_rule,
        "label_quantile": args.label_quantile, "kcore": int(args.kcore), "kcore_rounds": int(rounds),
        "rows_removed_by_kcore": int(n_pairs - len(inter)),
        "profile_file_present": any(os.path.isfile(os.path.join(args.src, "userid-profile.tsv" + x))
                                    for x in common.COMPRESSED_SUFFIXES),
        "seconds": round(time.time() - t_start, 2),
    }
    common.write_stats_and_readme(args.out, stats, render_readme(stats))
    log(f"{stats['users']} users, {stats['items']} tracks, {stats['rows']} rows -> {args.out}")
    return stats


def render_readme(s):
    name = s["name"]
    lab = s["labels"]
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
        ("k-core", f"{s['kcore'] or 'off'} ({s['kcore_rounds']} rounds, {s['rows_removed_by_kcore']} rows removed)"),
        ("**users**", f"**{s['users']}**"),
        ("**items = tracks** (of which name-derived)", f"**{s['items']}** ({s['items_from_names']})"),
        (f"**rows in `{name}.inter`**", f"**{s['rows']}**"),
        ("label 1 / label 0", f"{lab['positive']} / {lab['negative']} ({lab['positive_pct']}% positive)"),
    ]
    examples = ("\n".join(f"- {e}" for e in mal["examples"]) if mal["examples"] else "- none")
    lines = [
        f"# {name} — converted Last.fm Dataset - 1K users",
        "",
        "Generated by `python -m recbole_psrq.data.convert lastfm-1k`. **Do not redistribute these files**: the "
        "data is distributed with permission of Last.fm for non-commercial use only (commercial use: contact "
        "Last.fm; see the README of lastfm-dataset-1K.tar.gz and the Last.fm terms of service). Cite: Ò. Celma, "
        "\"Music Recommendation and Discovery in the Long Tail\", Springer, 2010.",
        "",
        "## Command",
        "",
        "```",
        s.get("command") or "(called from Python)",
        "```",
        "",
        "## Numbers",
        "",
        common.markdown_table(numbers),
        "",
        f"Malformed lines (wrong number of TAB-separated fields, e.g. a TAB inside a name or a truncated line; an "
        f"unparseable timestamp; no track MBID and no track name) are skipped. By file: {mal['by_file'] or '{}'}. "
        "First examples:",
        "",
        examples,
        "",
        "## Choices",
        "",
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
        f"- **Label**: {common.describe_label_rule(s['label_rule'], s['label_quantile'])}",
        "- **play_count** is written to the file but not listed under `load_col` in "
        f"`{name}.yaml`: the label is computed from it, so a model must not see it.",
        "- **Filtering**: none besides the malformed lines; `--kcore` (users and tracks, after labelling) is opt-in.",
        "- **Order**: rows sorted by user, first-play time, item id.",
        "- **Names / artist_id**: from the track's most frequent (artist MBID, artist name, track name) variant "
        f"among its events (ties: the first in file order). `artist_id` = that artist MBID, else `{NAME_ID_PREFIX}` + sha1(normalised artist name)[:16] (`{UNKNOWN_ARTIST_ID}` without "
        "a name).",
        "- `userid-profile.tsv` is not used" + (" (it is present)." if s["profile_file_present"] else "."),
        "",
        "## Item text",
        "",
        "Template: `{track} by {artist}.` (`(untitled)` / `(unknown artist)` for an empty name); tabs/newlines "
        "become spaces.",
        "",
        "## Files",
        "",
        f"- `{name}.inter` — `user_id:token item_id:token timestamp:float label:float play_count:float`.",
        f"- `{name}.item` — `item_id:token artist_id:token`.",
        f"- `{name}.item_text.tsv` — `item_id text track_name artist_name`.",
        f"- `{name}.yaml` — the RecBole dataset config (`--config_files`); no audio ships with this dataset, "
        "text embeddings are made later by an encoder.",
        f"- `{name}.stats.json` — all numbers of this page.",
        "",
        f"Conversion time: {s['seconds']} s.",
        "",
    ]
    return "\n".join(lines)
