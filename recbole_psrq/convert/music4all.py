"""Music4All (Santana et al., IWSSIP 2020) -> RecBole atomic files + item text + Spotify audio descriptors.

    python -m recbole_psrq.convert music4all --src RAW_DIR --out OUT_DIR/music4all \\
        [--label-rule repeat|user-median] [--lyrics-chars 500] [--kcore K]

Input (``--src``, the unpacked download; every ``*.csv`` is TAB-separated with a header, UTF-8, no quoting;
each may also be ``.gz`` / ``.bz2``):
- ``listening_history.csv`` (required): ``user song timestamp``, e.g.
  ``user_007XIjOr<TAB>0009fFIM1eYThaPg<TAB>2019-02-20 12:28`` — one row per listening event.
- ``id_information.csv`` (required): ``id artist song album_name``.
- ``id_metadata.csv`` (optional): ``id spotify_id popularity release danceability energy key mode valence
  tempo duration_ms``.
- ``id_genres.csv`` / ``id_tags.csv`` (optional): ``id genres`` / ``id tags``, a comma-joined list in one field.
- ``id_lang.csv`` (optional): ``id lang``.
- ``lyrics/<id>.txt`` (optional). ``audios/<id>.mp3`` are not read.

Output (``--out``, named like the dataset; see :mod:`recbole_psrq.convert.common`):
- ``<name>.inter``: ``user_id:token item_id:token timestamp:float label:float play_count:float``, one row per
  (user, song) pair: ``timestamp`` = first play (unix seconds, the naive times read as UTC), ``play_count`` =
  number of events, label by ``--label-rule`` (``repeat``, the paper's rule: played >= 2 times = 1, once = 0;
  ``user-median``: count >= the user's median count = 1). Sorted by user, then first play, then the position
  of the pair's first event in the file. The label is a function of ``play_count``, so the yaml's
  ``load_col`` names only ``user_id item_id timestamp label`` (the column stays in the file for analysis).
- ``<name>.item``: ``item_id:token artist_id:token genre:token`` (artist_id = normalised artist name, genre =
  first listed genre; empty when unknown).
- ``<name>.item_text.tsv``: ``item_id text song artist album genres tags lang`` (genres/tags joined by ``|``),
  text = :data:`TEXT_TEMPLATE`, see :func:`item_text`.
- ``<name>.audio.npz``: the 7 Spotify audio fields of ``id_metadata`` (:data:`AUDIO_COLUMNS`), z-scored per
  column over the items written (population std; a constant column gets std 1).
- ``<name>.yaml``, ``<name>.stats.json``, ``README.md``.
"""
import os
import time
import unicodedata

import numpy as np
import pandas as pd

from recbole_psrq.convert import common
from recbole_psrq.errors import ConfigError, DataFormatError

DATASET = "Music4All"
EVENTS_FILE = "listening_history.csv"
EVENT_COLUMNS = ["user", "song", "timestamp"]
INFO_FILE, INFO_COLUMNS = "id_information.csv", ["id", "artist", "song", "album_name"]
META_FILE = "id_metadata.csv"
META_COLUMNS = ["id", "spotify_id", "popularity", "release", "danceability", "energy", "key", "mode", "valence",
                "tempo", "duration_ms"]
AUDIO_COLUMNS = ["danceability", "energy", "key", "mode", "valence", "tempo", "duration_ms"]
GENRES_FILE, TAGS_FILE, LANG_FILE = "id_genres.csv", "id_tags.csv", "id_lang.csv"
LYRICS_DIR = "lyrics"
DEFAULT_LYRICS_CHARS = 500
TEXT_TEMPLATE = "{song} by {artist}. Album: {album}. Genres: {genres}. Tags: {tags}. Lyrics: {lyrics}"
HINT = ("Pass --src pointing at the unpacked Music4All folder (it holds listening_history.csv, "
        "id_information.csv, id_metadata.csv, ...); the dataset is distributed by its authors on request.")
FIX = "Music4All files are TAB-separated with a header; check that the file is the unmodified original."
TIME_FIX = "Expected date-times like 2019-02-20 12:28 or 2019-02-20 12:28:05 (read as UTC)."
LICENCE = (
    "**Do not commit or redistribute these files.** Music4All is distributed by its authors on request, for "
    "non-commercial research only, under an agreement that forbids redistribution; the converted files hold "
    "its ids, metadata and lyrics excerpts. Cite: I. A. P. Santana, F. Pinhelli, J. Donini, L. Catharin, "
    "R. B. Mangolin, Y. M. G. Costa, V. D. Feltrim, M. A. Domingues, \"Music4All: A New Music Database and Its "
    "Applications\", 27th International Conference on Systems, Signals and Image Processing (IWSSIP 2020).")
PUBLISHED_EVENTS = 5_109_592


def add_arguments(parser, fmt=None):
    common.add_label_arguments(parser, quantile=False)
    parser.add_argument("--lyrics-chars", type=int, default=DEFAULT_LYRICS_CHARS,
                        help=f"characters of lyrics appended to the item text (default {DEFAULT_LYRICS_CHARS}, "
                             "cut at a word boundary; 0 = no lyrics)")


# README wording of the label rules (pairs aggregated from listening events)
LABEL_RULE_TEXT = {
    "repeat": "label 1 = the user played the item at least twice (play_count >= 2), 0 = played once "
              "(the paper's Music4All rule)",
    "user-median": "label 1 = play_count >= the median play count of the user's pairs, else 0 (a user with "
                   "a single pair gets 1)",
}


# ----------------------------------------------------------------------------------------- catalogue
def read_keyed_table(path, columns, stats, key="id"):
    """Small metadata table -> (frame of str, file line per row) with the first row of each id kept;
    duplicates counted in ``stats['duplicate_ids'][file]``."""
    frame, lines = common.read_table(path, columns, header=True, fix=FIX)
    frame[key] = frame[key].str.strip()
    dup = frame.duplicated(key, keep="first").to_numpy()
    if dup.any():
        stats.setdefault("duplicate_ids", {})[os.path.basename(path)] = int(dup.sum())
    return frame[~dup].reset_index(drop=True), lines[~dup]


def split_list(value):
    """Comma-joined list cell -> de-duplicated list (order kept; ``|`` replaced, empties dropped)."""
    out = []
    for part in str(value or "").split(","):
        part = common.clean_text(part).replace("|", "/")
        if part and part not in out:
            out.append(part)
    return out


def _sentence(text):
    text = text.strip()
    return text if not text or text[-1] in ".!?" else text + "."


def cut_words(text, limit):
    """``text`` cut to at most ``limit`` characters at a word boundary (no ellipsis)."""
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    if not text[limit].isspace() and " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip()


def item_text(song="", artist="", album="", genres=(), tags=(), lyrics=""):
    """The Music4All item text (:data:`TEXT_TEMPLATE`): ``"{song} by {artist}."`` (``"{song}."`` /
    ``"By {artist}."`` when one is missing), then ``"Album: {album}."``, ``"Genres: g1, g2."``,
    ``"Tags: t1, t2."`` (tags already listed as genres, case-insensitively, are left out) and
    ``"Lyrics: {first characters}"``; every missing part is omitted. Empty string when nothing is known."""
    song, artist, album = (common.clean_text(v) for v in (song, artist, album))
    parts = []
    if song and artist:
        parts.append(_sentence(f"{song} by {artist}"))
    elif song:
        parts.append(_sentence(song))
    elif artist:
        parts.append(_sentence(f"By {artist}"))
    if album:
        parts.append(_sentence(f"Album: {album}"))
    genres = list(genres)
    if genres:
        parts.append(_sentence("Genres: " + ", ".join(genres)))
    seen = {g.lower() for g in genres}
    tags = [t for t in tags if t.lower() not in seen]
    if tags:
        parts.append(_sentence("Tags: " + ", ".join(tags)))
    lyrics = common.clean_text(lyrics)
    if lyrics:
        parts.append(f"Lyrics: {lyrics}")
    return " ".join(parts)


def read_lyrics(src, item_id, limit, stats):
    path = os.path.join(src, LYRICS_DIR, f"{item_id}.txt")
    if limit <= 0 or not os.path.isfile(path):
        return ""
    size = max(8 * limit + 64, 4096)  # enough bytes for ``limit`` characters after whitespace collapsing
    with open(path, "rb") as f:
        raw = f.read(size)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if len(raw) == size and e.start >= size - 3:  # a multi-byte character cut by the read limit
            text = raw[:e.start].decode("utf-8")
        else:
            text = raw.decode("latin-1")
            stats["lyrics_read_as_latin1"] = stats.get("lyrics_read_as_latin1", 0) + 1
    text = common.clean_text(unicodedata.normalize("NFC", text))
    if text:
        stats["items_with_lyrics"] = stats.get("items_with_lyrics", 0) + 1
    return cut_words(text, limit)


def build_catalogue(src, item_ids, lyrics_chars=DEFAULT_LYRICS_CHARS, require_info=True):
    """Item text / item features for ``item_ids`` from a Music4All folder.

    Returns (item frame [item_id, artist_id, genre], text frame [item_id, text, song, artist, album, genres,
    tags, lang] holding only items with a non-empty text, stats dict)."""
    stats = {"files": {}}
    ids = pd.Index(pd.unique(np.asarray(item_ids, dtype=object)))
    if require_info:
        info_path = common.find_input(src, INFO_FILE, dataset=DATASET, hint=HINT)
    else:
        info_path = common.find_optional(src, INFO_FILE)
    info = {}
    if info_path:
        stats["files"]["information"] = os.path.basename(info_path)
        frame, _ = read_keyed_table(info_path, INFO_COLUMNS, stats)
        frame = frame[frame["id"].isin(ids)]
        info = {r.id: (r.song, r.artist, r.album_name) for r in frame.itertuples(index=False)}
    lists = {}
    for kind, fname in (("genres", GENRES_FILE), ("tags", TAGS_FILE), ("lang", LANG_FILE)):
        path = common.find_optional(src, fname)
        lists[kind] = {}
        if path is None:
            continue
        stats["files"][kind] = os.path.basename(path)
        frame, _ = read_keyed_table(path, ["id", kind], stats)
        frame = frame[frame["id"].isin(ids)]
        if kind == "lang":
            lists[kind] = {i: common.clean_text(v) for i, v in zip(frame["id"], frame[kind])}
        else:
            lists[kind] = {i: split_list(v) for i, v in zip(frame["id"], frame[kind])}
    lyrics_dir = os.path.isdir(os.path.join(src, LYRICS_DIR))
    stats["files"]["lyrics"] = f"{LYRICS_DIR}/" if lyrics_dir else None
    items, texts = [], []
    for item in ids:
        song, artist, album = info.get(item, ("", "", ""))
        genres, tags = lists["genres"].get(item, []), lists["tags"].get(item, [])
        lang = lists["lang"].get(item, "")
        lyrics = read_lyrics(src, item, lyrics_chars, stats) if lyrics_dir else ""
        text = item_text(song, artist, album, genres, tags, lyrics)
        items.append((item, common.name_token(artist), common.name_token(genres[0]) if genres else ""))
        if text:
            texts.append((item, text, song, artist, album, "|".join(genres), "|".join(tags), lang))
    stats["items"] = len(ids)
    stats["items_without_information"] = int(sum(1 for i in ids if i not in info))
    stats["items_without_text"] = len(ids) - len(texts)
    stats["items_with_genres"] = int(sum(1 for i in ids if lists["genres"].get(i)))
    stats["items_with_tags"] = int(sum(1 for i in ids if lists["tags"].get(i)))
    stats.setdefault("items_with_lyrics", 0)
    item_frame = pd.DataFrame(items, columns=["item_id", "artist_id", "genre"])
    text_frame = pd.DataFrame(texts, columns=["item_id", "text", "song", "artist", "album", "genres", "tags",
                                              "lang"])
    return item_frame, text_frame, stats


def read_audio(path, item_ids):
    """Audio matrix of ``item_ids`` from ``id_metadata.csv``: (ids, raw matrix, stats). Items without a
    metadata row or with an empty audio field get no vector; a non-numeric field is an error."""
    stats = {"file": os.path.basename(path)}
    frame, lines = read_keyed_table(path, META_COLUMNS, stats)
    keep = frame["id"].isin(pd.Index(item_ids)).to_numpy()
    frame, lines = frame[keep].reset_index(drop=True), lines[keep]
    values = frame[AUDIO_COLUMNS].apply(lambda c: c.str.strip())
    empty = values.eq("").any(axis=1).to_numpy()
    stats["items_with_empty_audio_field"] = int(empty.sum())
    values, lines, ids = values[~empty], lines[~empty], frame["id"].to_numpy()[~empty]
    matrix = np.column_stack([common.parse_numbers(values[c].to_numpy(), lines, path, c, fix=FIX)
                              for c in AUDIO_COLUMNS]) if len(ids) else np.zeros((0, len(AUDIO_COLUMNS)))
    order = np.argsort(ids.astype(str), kind="stable")
    return ids[order], matrix[order], stats


# ------------------------------------------------------------------------------------------- convert
def label_pairs(pairs, args, stats):
    """Labels by ``--label-rule`` from all of a user's pairs, then the opt-in k-core (stats updated in place)."""
    pairs, kcore_stats = common.label_and_kcore(pairs, args.label_rule, args.kcore)
    stats.update(kcore_stats)
    return pairs


def count_stats(inter, stats):
    n = len(inter)
    labels = common.label_counts(inter["label"])
    stats["rows"] = n
    stats["users"] = int(inter["user_id"].nunique())
    stats["items"] = int(inter["item_id"].nunique())
    stats["label_positive"], stats["label_negative"] = labels["positive"], labels["negative"]
    stats["positive_fraction"] = round(labels["positive"] / n, 4) if n else 0.0
    return stats


def iso_day(seconds):
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(float(seconds)))


def convert(args, command):
    name = common.check_args(args)
    out = args.out
    src = args.src
    if args.lyrics_chars < 0:
        raise ConfigError(f"--lyrics-chars must be >= 0, got {args.lyrics_chars}.")
    events_path = common.find_input(src, EVENTS_FILE, dataset=DATASET, hint=HINT)
    common.find_input(src, INFO_FILE, dataset=DATASET, hint=HINT)  # fail early, before the long read
    common.log(args, f"reading {events_path}")
    agg = common.aggregate_events(events_path, EVENT_COLUMNS, "user", "song", "timestamp", fix=FIX, time_fix=TIME_FIX,
                                  progress=lambda a: common.log(args, f"  {a.rows:,} events"))
    pairs = agg.result()
    stats = {"name": name, "format": "music4all", "command": command, "src": src,
             "events_file": os.path.basename(events_path), "raw_events": agg.rows,
             "raw_users": len(agg.users), "raw_items": len(agg.items), "raw_pairs": len(pairs),
             "pairs_played_once": int((pairs["play_count"] == 1).sum()),
             "pairs_played_repeatedly": int((pairs["play_count"] >= 2).sum()),
             "malformed": common.MalformedRows().as_dict()}
    if len(pairs) == 0:
        raise DataFormatError(f"{events_path}: no listening events after the header. {FIX}")
    stats["first_event"], stats["last_event"] = iso_day(pairs["timestamp"].min()), iso_day(pairs["timestamp"].max())
    pairs = label_pairs(pairs, args, stats)
    count_stats(pairs, stats)
    items = np.sort(pd.unique(pairs["item_id"]).astype(str))
    common.log(args, f"{stats['rows']:,} pairs of {stats['users']:,} users and {stats['items']:,} songs; item text")
    item_frame, text_frame, cat = build_catalogue(src, items, args.lyrics_chars)
    cat["lyrics_chars"] = args.lyrics_chars
    stats["catalogue"] = cat
    embeddings = {}
    meta_path = common.find_optional(src, META_FILE)
    if meta_path:
        ids, raw, audio = read_audio(meta_path, items)
        if len(ids):
            z, mean, std = common.zscore_columns(raw)
            embeddings["audio"] = (ids, z, np.float16)
            audio.update(columns=AUDIO_COLUMNS, mean=mean.round(6).tolist(), std=std.round(6).tolist())
        audio["items_with_audio"] = len(ids)
        audio["items_without_audio"] = len(items) - len(ids)
        stats["audio"] = audio
    else:
        stats["audio"] = None
    common.write_outputs(out, name, pairs, item_frame, text_frame, extra_inter=["play_count"], embeddings=embeddings,
                         audio="audio" if "audio" in embeddings else None)
    common.write_stats_and_readme(out, stats, render_readme(stats))
    common.log(args, f"wrote {out}")
    return stats


# -------------------------------------------------------------------------------------------- README
def interaction_numbers(s, events_label, noun="song"):
    rows = s["rows"]
    return [
        (events_label, f"{common.fmt_count(s['raw_events'])}"),
        (f"raw users / {noun}s", f"{common.fmt_count(s['raw_users'])} / {common.fmt_count(s['raw_items'])}"),
        (f"(user, {noun}) pairs after aggregation", common.fmt_count(s["raw_pairs"])),
        ("pairs played once / repeatedly", f"{common.fmt_count(s['pairs_played_once'])} / "
                                           f"{common.fmt_count(s['pairs_played_repeatedly'])}"),
        common.kcore_row(s, removed="pairs"),
        ("**users**", f"**{common.fmt_count(s['users'])}**"),
        ("**items**", f"**{common.fmt_count(s['items'])}**"),
        (f"**rows in `{s['name']}.inter`**", f"**{common.fmt_count(rows)}**"),
        ("label 1 / label 0", f"{common.fmt_count(s['label_positive'], rows)} / "
                              f"{common.fmt_count(s['label_negative'], rows)}"),
        ("malformed rows", f"{s['malformed']['total']} (a malformed row stops the conversion with an error "
                           "naming file and line; none is skipped silently)"),
    ]


def catalogue_numbers(s, cat):
    items = s["items"]
    numbers = [
        ("items without an `id_information` row (kept, no title/artist)",
         common.fmt_count(cat["items_without_information"], items)),
        ("items with genres / tags / lyrics", f"{common.fmt_count(cat['items_with_genres'], items)} / "
                                              f"{common.fmt_count(cat['items_with_tags'], items)} / "
                                              f"{common.fmt_count(cat['items_with_lyrics'], items)}"),
        ("items without any text (absent from `.item_text.tsv`)", common.fmt_count(cat["items_without_text"], items)),
    ]
    if cat.get("lyrics_read_as_latin1"):
        numbers.append(("lyrics files not valid UTF-8 (read as Latin-1)", cat["lyrics_read_as_latin1"]))
    for fname, n in sorted(cat.get("duplicate_ids", {}).items()):
        numbers.append((f"duplicate ids in `{fname}` (first row kept)", n))
    return numbers


def text_section(cat):
    return [
        "Template (parts with no data are left out; a full stop is added where a part does not end in . ! ?):",
        "`{song} by {artist}. Album: {album}. Genres: {g1}, {g2}. Tags: {t1}, {t2}. Lyrics: {lyrics}`",
        "Song/artist/album from `id_information`, genres from `id_genres`, tags from `id_tags` (a tag already "
        "listed as a genre, case-insensitively, is left out), lyrics = the first "
        f"{cat.get('lyrics_chars', DEFAULT_LYRICS_CHARS)} characters of `lyrics/<id>.txt` (whitespace collapsed, "
        "cut at a word boundary; the text encoder truncates long texts anyway, lyrics come last so they are what "
        "gets cut). Files read: " + ", ".join(f"`{v}`" for v in cat["files"].values() if v) + ".",
        "Items without any text are not in `.item_text.tsv`, so the semantic-ID engine gives them its reserved "
        "unknown code instead of the embedding of an empty string. An id listed twice in a metadata file: its "
        "first row is used (counted in the numbers above when it happens).",
    ]


def render_readme(s):
    name = s["name"]
    cat = s["catalogue"]
    a = s["audio"]
    numbers = interaction_numbers(s, f"raw listening events (`{s['events_file']}` rows; published: "
                                      f"{PUBLISHED_EVENTS:,})")
    numbers += catalogue_numbers(s, cat)
    if a:
        numbers.append(("items with an audio vector", common.fmt_count(a["items_with_audio"], s["items"])))
    numbers.append(("first / last event (UTC)", f"{s['first_event']} / {s['last_event']}"))
    audio_par = (
        [f"`{name}.audio.npz`: the Spotify audio fields {', '.join(AUDIO_COLUMNS)} of `id_metadata`, each "
         "z-scored over the items of this dataset that have all of them (population std; a constant column "
         "gets std 1), stored as float16. `popularity`, `release` and `spotify_id` are not used. Items without "
         f"a metadata row or with an empty audio field ({a['items_with_empty_audio_field']}) have no vector and "
         "get the unknown code; a non-numeric value stops the conversion."] if a else
        ["No `id_metadata.csv` was found: no audio file was written."])
    sections = [
        ("Files", ["\n".join([
            f"- `{name}.inter`: `user_id:token item_id:token timestamp:float label:float play_count:float`.",
            f"- `{name}.item`: `item_id:token artist_id:token genre:token` (artist_id = artist name NFKC, "
            "lower-case, whitespace collapsed, double quotes dropped; genre = first listed genre, same "
            "normalisation; empty when unknown).",
            f"- `{name}.item_text.tsv`: `item_id text song artist album genres tags lang` (genres/tags joined by `|`).",
            f"- `{name}.audio.npz`: " + ("see Audio." if a else "not written."),
            f"- `{name}.yaml`: RecBole dataset config (`--config_files`); `load_col` names `user_id item_id "
            "timestamp label` only, because `play_count` determines the label and must never be a feature.",
            f"- `{name}.stats.json`: every number of this page.",
        ]), "Only songs that occur in the written interactions are in `.item`, `.item_text.tsv` and the audio "
            "file."]),
        ("Interactions, label and time", [
            "Every listening event is one raw row; events are aggregated to one row per (user, song) pair: "
            "`timestamp` = the first play (unix seconds; the files carry no time zone, the times are read as "
            "UTC; minute resolution), `play_count` = the number of events of the pair. Repeated plays are "
            "therefore not separate rows; the raw event count is reported above so the conversion can be "
            "checked against the published statistics.",
            f"Label rule `{s['label_rule']}`: {LABEL_RULE_TEXT[s['label_rule']]}.",
            "Rows are sorted by user (string order), then first play, then the position of the pair's first "
            "event in the file, so the output is byte-identical for the same input. Every valid raw row is kept "
            "(filters only through `--kcore`); songs missing from the metadata are kept with no text.",
        ]),
        ("Item text", text_section(cat)),
        ("Audio", audio_par),
    ]
    return common.render_readme(f"{name}: converted Music4All", LICENCE, s["command"], numbers, sections)
