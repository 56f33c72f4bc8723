"""Music4All-Onion (Moscati et al., CIKM 2022) -> RecBole atomic files + every shipped content descriptor.

    python -m recbole_psrq.convert music4all-onion --src RAW_DIR --out OUT_DIR/onion \\
        [--label-rule repeat|user-median] [--audio-feature mfcc_stats] [--features mfcc_stats,essentia]
        [--music4all-src MUSIC4ALL_DIR] [--no-zscore] [--kcore K]

Input (``--src``, the Zenodo files; TAB-separated with a header, UTF-8; each may be ``.tsv``, ``.tsv.gz`` or
``.tsv.bz2``):
- ``userid_trackid_timestamp.tsv``: ``user_id track_id timestamp`` (``YYYY-MM-DD HH:MM:SS``), one row per
  listening event. Preferred when present.
- ``userid_trackid_count.tsv``: ``user_id track_id count``; used only when the timestamp file is absent.
- ``id_<feature>.tsv``: header ``id`` then numeric columns (``id_mfcc_stats``, ``id_essentia``,
  ``id_ivec256``, ``id_blf_*``, ``id_lyrics_bert``, ...); ``id`` = ``track_id`` = the Music4All id.
- ``id_tags_dict.tsv`` (optional): ``id`` + a Python dict literal ``{'tag': weight, ...}`` — the only text
  Onion ships; used for the item text unless ``--music4all-src`` is given.

Output (``--out``): as :mod:`recbole_psrq.convert.music4all` — ``<name>.inter`` (one row per (user,
track): first play, ``play_count``, label by ``--label-rule``), ``<name>.item``, ``<name>.item_text.tsv``,
``<name>.yaml``, ``<name>.stats.json``, ``README.md`` — plus one ``<name>.<feature>.npz`` per numeric feature
file (z-scored per column over the items written unless ``--no-zscore``); the ``--audio-feature`` file is
the one the yaml lists as ``audio`` for the semantic-ID hook.

Without the timestamp file the count file gives the pairs directly; there is no time then: ``timestamp`` =
the row order of the pair within its user in the count file (0, 1, 2, ...), said so in the README.
Item text: with ``--music4all-src`` the Music4All text (:func:`music4all.item_text`: title, artist, album,
genres, tags, lyrics) and ``artist_id`` / ``genre`` item columns; otherwise ``"Tags: t1, t2, ..."`` from
``id_tags_dict`` (highest weight first, at most ``--max-tags``); otherwise no text.
"""
import ast
import os
import re

import numpy as np
import pandas as pd

from recbole_psrq.convert import common, music4all
from recbole_psrq.errors import ConfigError, DataFormatError

DATASET = "Music4All-Onion"
EVENTS_FILE, EVENT_COLUMNS = "userid_trackid_timestamp.tsv", ["user_id", "track_id", "timestamp"]
COUNT_FILE, COUNT_COLUMNS = "userid_trackid_count.tsv", ["user_id", "track_id", "count"]
TAGS_FEATURE = "tags_dict"
AUDIO_PREFERENCE = ("mfcc_stats", "essentia", "ivec256")  # then the first blf_* (name order)
DEFAULT_MAX_TAGS = 20
FEATURE_CHUNK_VALUES = 2_000_000
MISSING_VALUES = {"", "na", "nan", "null", "none"}
HINT = ("Pass --src pointing at the folder of the Music4All-Onion Zenodo files "
        "(userid_trackid_timestamp.tsv.bz2 or userid_trackid_count.tsv.bz2, id_<feature>.tsv.bz2).")
FIX = "Music4All-Onion files are TAB-separated with a header; check that the file is the unmodified original."
LICENCE = (
    "**Do not commit or redistribute these files.** Music4All-Onion is distributed on Zenodo for "
    "non-commercial research (see the licence of the Zenodo record); its listening events derive from LFM-2b "
    "(Last.fm data, research use only) and its track ids and any `--music4all-src` text from Music4All, whose "
    "agreement forbids redistribution. Cite: M. Moscati, E. Parada-Cabaleiro, Y. Deldjoo, E. Zangerle, "
    "M. Schedl, \"Music4All-Onion: A Large-Scale Multi-faceted Content-Centric Music Recommendation "
    "Dataset\", CIKM 2022; and Music4All: I. A. P. Santana et al., \"Music4All: A New Music Database and Its "
    "Applications\", IWSSIP 2020.")
_FEATURE_FILE = re.compile(r"id_(.+)\.tsv(\.gz|\.bz2)?")


def add_arguments(parser, fmt=None):
    common.add_label_arguments(parser, quantile=False)
    parser.add_argument("--audio-feature", default=None,
                        help="the feature listed as `audio` in the yaml (default: the first present of "
                             "mfcc_stats, essentia, ivec256, blf_*; 'none' = no audio)")
    parser.add_argument("--features", default=None,
                        help="comma-separated features to convert (default: every numeric id_<feature> file)")
    parser.add_argument("--music4all-src", default=None,
                        help="a Music4All folder: item text (title, artist, album, genres, tags, lyrics) and "
                             "artist_id/genre item columns come from it")
    parser.add_argument("--lyrics-chars", type=int, default=music4all.DEFAULT_LYRICS_CHARS,
                        help="with --music4all-src: characters of lyrics in the text (0 = none)")
    parser.add_argument("--max-tags", type=int, default=DEFAULT_MAX_TAGS,
                        help=f"id_tags_dict text: at most this many tags, highest weight first (default "
                             f"{DEFAULT_MAX_TAGS})")
    parser.add_argument("--no-zscore", action="store_true",
                        help="store feature files as read (float32) instead of z-scored per column (float16)")


# --------------------------------------------------------------------------------------------- files
def find_feature_files(src):
    """``{feature: path}`` for every ``id_<feature>.tsv[.gz|.bz2]`` in ``src`` (plain preferred, then .gz)."""
    found = {}
    for fname in sorted(os.listdir(src)):
        m = _FEATURE_FILE.fullmatch(fname)
        path = os.path.join(src, fname)
        if not m or not os.path.isfile(path):
            continue
        rank = common.COMPRESSED_SUFFIXES.index(m.group(2) or "")
        if m.group(1) not in found or rank < found[m.group(1)][0]:
            found[m.group(1)] = (rank, path)
    return {feature: path for feature, (rank, path) in sorted(found.items())}


def default_audio_feature(features):
    for name in AUDIO_PREFERENCE:
        if name in features:
            return name
    blf = sorted(f for f in features if f.startswith("blf_"))
    return blf[0] if blf else None


def _is_number(value):
    try:
        float(value)
        return True
    except ValueError:
        return False


def read_feature(path, item_ids):
    """Numeric feature file -> (ids sorted, float32 matrix, info) for the ids in ``item_ids``.

    Columns whose first data row holds a non-numeric value are text columns: skipped and reported. Later
    non-numeric values are an error naming file, line and column; empty / NaN cells are counted and filled
    with the column mean of the items read. Duplicate ids: the first row is kept."""
    wanted = set(item_ids)
    info = {"file": os.path.basename(path), "rows": 0, "duplicate_ids": 0, "rows_not_in_dataset": 0,
            "missing_values": 0, "skipped_columns": []}
    header = common.read_header(path)
    if header[0] != "id" or len(header) < 2:
        raise DataFormatError(f"{path}, line 1: expected a header 'id<TAB><column>...' (TAB-separated), found "
                              f"{chr(9).join(header)[:120]!r}. {FIX}")
    ids, blocks, seen = [], [], set()
    keep = None
    for frame, lines in common.iter_table(path, header, header=True, fix=FIX,
                                          chunk_rows=max(1, FEATURE_CHUNK_VALUES // len(header))):
        if keep is None:
            first = frame.iloc[0]
            keep = [i for i in range(1, len(header)) if not first.iloc[i].strip() or _is_number(first.iloc[i])]
            info["skipped_columns"] = [header[i] for i in range(1, len(header)) if i not in keep]
            if not keep:
                return None, None, info
        info["rows"] += len(frame)
        items = frame.iloc[:, 0].str.strip()
        listed = items.isin(wanted).to_numpy()
        info["rows_not_in_dataset"] += int((~listed).sum())
        items, frame, lines = items[listed], frame[listed], lines[listed]
        dup = (items.duplicated() | items.isin(seen)).to_numpy()
        info["duplicate_ids"] += int(dup.sum())
        seen.update(items[~dup])
        ids.extend(items[~dup])
        if (~dup).any():
            blocks.append(_to_matrix(frame.iloc[~dup, keep], lines[~dup], path, info))
    if keep is None:
        info["columns"] = header[1:]
        return np.asarray([], dtype=str), np.zeros((0, len(header) - 1), dtype=np.float32), info
    info["columns"] = [header[i] for i in keep]
    matrix = np.concatenate(blocks) if blocks else np.zeros((0, len(keep)), dtype=np.float32)
    nan = np.isnan(matrix)
    if nan.any():
        means = np.nan_to_num(np.nanmean(np.where(nan.all(axis=0), 0.0, matrix), axis=0)) if len(matrix) else 0
        matrix = np.where(nan, means, matrix).astype(np.float32)
        info["rows_with_missing_values"] = int(nan.any(axis=1).sum())
    ids = np.asarray(ids, dtype=str)
    order = np.argsort(ids, kind="stable")
    return ids[order], matrix[order], info


def _to_matrix(values, lines, path, info):
    """Str cells -> float32 block: empty / NaN cells (:data:`MISSING_VALUES`) NaN, any other non-number an error."""
    try:
        block = values.to_numpy(dtype=np.float64)
        ok = np.isfinite(block).all()
    except ValueError:
        ok = False
    if not ok:  # parse again per column: missing cells allowed, the first bad value named with its line
        block = np.column_stack([common.parse_numbers(values.iloc[:, c], lines, path, values.columns[c],
                                                      fix=f"{FIX} (Or leave this feature out with --features.)",
                                                      missing=MISSING_VALUES) for c in range(values.shape[1])])
    info["missing_values"] += int(np.isnan(block).sum())
    return block.astype(np.float32)


def read_tags_text(path, item_ids, max_tags):
    """``id_tags_dict`` -> text frame [item_id, text, tags] ("Tags: t1, t2." highest weight first)."""
    header = common.read_header(path)
    if len(header) != 2 or header[0] != "id":
        raise DataFormatError(f"{path}, line 1: expected the header 'id<TAB>tags' (2 TAB-separated columns), "
                              f"found {header}. {FIX}")
    wanted = set(item_ids)
    texts, seen = [], set()
    for frame, lines in common.iter_table(path, header, header=True, fix=FIX):
        for item, cell, lineno in zip(frame.iloc[:, 0], frame.iloc[:, 1], lines):
            item = item.strip()
            if item not in wanted or item in seen:
                continue
            seen.add(item)
            try:
                tags = ast.literal_eval(cell.strip()) if cell.strip() else {}
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                tags = None
            if not isinstance(tags, dict) or not all(isinstance(w, (int, float)) for w in tags.values()):
                raise DataFormatError(f"{path}, line {lineno}: expected a dict literal {{'tag': weight, ...}}, "
                                      f"found {cell[:80]!r}. {FIX}")
            ranked = sorted(((common.clean_text(t).replace("|", "/"), w) for t, w in tags.items()),
                            key=lambda tw: (-tw[1], tw[0]))
            names = []
            for t, _ in ranked:
                if t and t not in names:
                    names.append(t)
            names = names[:max_tags]
            if names:
                texts.append((item, "Tags: " + ", ".join(names) + ".", "|".join(names)))
    return pd.DataFrame(sorted(texts), columns=["item_id", "text", "tags"])


# ------------------------------------------------------------------------------------------- convert
def read_interactions(src, args, stats):
    path = common.find_optional(src, EVENTS_FILE)
    mode = "timestamp" if path else "count"
    if not path:
        path = common.find_input(src, EVENTS_FILE, COUNT_FILE, dataset=DATASET, hint=HINT)
    stats["events_file"], stats["time_mode"] = os.path.basename(path), mode
    common.log(args, f"reading {path}")
    progress = lambda a: common.log(args, f"  {a.rows:,} rows")  # noqa: E731
    if mode == "timestamp":
        agg = common.aggregate_events(path, EVENT_COLUMNS, "user_id", "track_id", "timestamp", fix=FIX,
                                      time_fix=music4all.TIME_FIX, progress=progress)
        pairs = agg.result()
        count_path = common.find_optional(src, COUNT_FILE)
        stats["count_file_ignored"] = os.path.basename(count_path) if count_path else None
    else:
        agg = common.aggregate_events(path, COUNT_COLUMNS, "user_id", "track_id", count_column="count", fix=FIX,
                                      progress=progress)
        pairs = agg.result()
        pairs["timestamp"] = common.position_in_user(pairs)  # no time: the pair's row order within its user
    if len(pairs) == 0:
        raise DataFormatError(f"{path}: no rows after the header. {FIX}")
    stats.update(raw_rows=agg.rows, raw_events=agg.events, raw_users=len(agg.users), raw_items=len(agg.items),
                 raw_pairs=len(pairs), duplicate_pair_rows=agg.rows - len(pairs) if mode == "count" else None,
                 pairs_played_once=int((pairs["play_count"] == 1).sum()),
                 pairs_played_repeatedly=int((pairs["play_count"] >= 2).sum()))
    if mode == "timestamp":
        stats["first_event"] = music4all.iso_day(pairs["timestamp"].min())
        stats["last_event"] = music4all.iso_day(pairs["timestamp"].max())
    return pairs


def choose_features(src, args):
    files = find_feature_files(src)
    tags_path = files.pop(TAGS_FEATURE, None)
    if args.features:
        wanted = [f.strip() for f in args.features.split(",") if f.strip()]
        unknown = [f for f in wanted if f not in files]
        if unknown:
            raise ConfigError(f"--features: {unknown} not found in {src} (feature files found: "
                              f"{', '.join(files) or 'none'}); a feature <f> is the file id_<f>.tsv[.bz2].")
    else:
        wanted = list(files)
    audio = args.audio_feature
    if audio and audio.lower() != "none":
        if audio not in files:
            raise ConfigError(f"--audio-feature {audio!r}: no id_{audio}.tsv[.gz|.bz2] in {src} (feature files "
                              f"found: {', '.join(files) or 'none'}); pass one of them, or 'none'.")
        if audio not in wanted:
            wanted.append(audio)
    elif audio is None:
        audio = default_audio_feature(wanted)
    else:
        audio = None
    return {f: files[f] for f in sorted(wanted)}, audio, tags_path


def convert(args, command):
    name = common.check_args(args)
    out, src = args.out, args.src
    if not os.path.isdir(src):
        raise DataFormatError(f"{DATASET}: --src {src} is not a folder. {HINT}")
    if args.max_tags < 1:
        raise ConfigError(f"--max-tags must be >= 1, got {args.max_tags}.")
    if args.lyrics_chars < 0:
        raise ConfigError(f"--lyrics-chars must be >= 0, got {args.lyrics_chars}.")
    features, audio_feature, tags_path = choose_features(src, args)
    if args.music4all_src:
        common.find_input(args.music4all_src, music4all.INFO_FILE, dataset="Music4All (--music4all-src)",
                          hint=music4all.HINT)
    stats = {"name": name, "format": "music4all-onion", "command": command, "src": src,
             "malformed": common.MalformedRows().as_dict()}
    pairs = read_interactions(src, args, stats)
    pairs = music4all.label_pairs(pairs, args, stats)
    music4all.count_stats(pairs, stats)
    items = np.sort(pd.unique(pairs["item_id"]).astype(str))

    # item text and item columns
    if args.music4all_src:
        common.log(args, f"item text from Music4All ({args.music4all_src})")
        item_frame, text_frame, cat = music4all.build_catalogue(args.music4all_src, items, args.lyrics_chars)
        cat["lyrics_chars"] = args.lyrics_chars
        stats["text"] = {"source": "music4all", "catalogue": cat, "items_with_text": len(text_frame)}
    else:
        item_frame = pd.DataFrame({"item_id": items})
        if tags_path:
            text_frame = read_tags_text(tags_path, items, args.max_tags)
            stats["text"] = {"source": "tags_dict", "file": os.path.basename(tags_path),
                             "items_with_text": len(text_frame), "max_tags": args.max_tags}
        else:
            text_frame = pd.DataFrame({"item_id": pd.Series(dtype=object), "text": pd.Series(dtype=object)})
            stats["text"] = {"source": None, "items_with_text": 0}
    stats["text"]["items_without_text"] = len(items) - stats["text"]["items_with_text"]

    # features
    embeddings, feature_stats = {}, {}
    for feature, path in features.items():
        common.log(args, f"feature {feature} ({path})")
        ids, matrix, info = read_feature(path, items)
        if ids is None:
            info["written"] = False
            info["reason"] = "no numeric column"
        elif len(ids) == 0:
            info["written"] = False
            info["reason"] = "no row for an item of this dataset"
        else:
            if args.no_zscore:
                embeddings[feature] = (ids, matrix, np.float32)
            else:
                embeddings[feature] = (ids, common.zscore_columns(matrix)[0], np.float16)
            info.update(written=True, dim=int(matrix.shape[1]), items_with_feature=len(ids),
                        items_without_feature=len(items) - len(ids))
        feature_stats[feature] = info
    stats["features"] = feature_stats
    stats["zscore"] = not args.no_zscore
    if audio_feature and audio_feature not in embeddings:
        audio_feature = None
    stats["audio_feature"] = audio_feature

    common.write_outputs(out, name, pairs, item_frame, text_frame, extra_inter=["play_count"], embeddings=embeddings,
                         audio=audio_feature)
    common.write_stats_and_readme(out, stats, render_readme(stats, list(item_frame.columns)))
    common.log(args, f"wrote {out}")
    return stats


# -------------------------------------------------------------------------------------------- README
def render_readme(s, item_columns):
    name = s["name"]
    t = s["text"]
    count_mode = s["time_mode"] == "count"
    events_label = (f"raw rows of `{s['events_file']}` (listening events)" if not count_mode else
                    f"raw rows of `{s['events_file']}` (user, track, count); implied listening events = "
                    f"{s['raw_events']:,}")
    numbers = music4all.interaction_numbers(s, events_label, noun="track")
    numbers[0] = (events_label, common.fmt_count(s["raw_rows"]))
    if count_mode and s.get("duplicate_pair_rows"):
        numbers.insert(1, ("repeated (user, track) rows in the count file (counts summed)",
                           common.fmt_count(s["duplicate_pair_rows"])))
    numbers.append(("items without any text (absent from `.item_text.tsv`)",
                    common.fmt_count(t["items_without_text"], s["items"])))
    if t["source"] == "music4all":
        numbers += [n for n in music4all.catalogue_numbers(s, t["catalogue"]) if "without any text" not in n[0]]
    for feature, info in s["features"].items():
        if info["written"]:
            filled = (f"; {info['missing_values']} empty/NaN cells filled with the column mean"
                      if info["missing_values"] else "")
            numbers.append((f"items with `{feature}` ({info['dim']}-d)",
                            common.fmt_count(info["items_with_feature"], s["items"]) + filled))
        else:
            numbers.append((f"`{info['file']}`", f"not written ({info['reason']})"))
    if not count_mode:
        numbers.append(("first / last event (UTC)", f"{s['first_event']} / {s['last_event']}"))

    if count_mode:
        time_par = (
            f"**No timestamps**: `{EVENTS_FILE}` was not found, so the pairs come from `{s['events_file']}`. "
            "`timestamp` is the row order of the pair within its user in that file (0, 1, 2, ...), not a "
            "time: RecBole's time-ordered splits then follow the file order, which is not chronological. "
            "`play_count` = the file's count (repeated rows of one pair are summed).")
    else:
        time_par = (
            "Every row of the timestamp file is one listening event; events are aggregated to one row per "
            "(user, track) pair: `timestamp` = the first play (unix seconds, the naive times read as UTC), "
            "`play_count` = the number of events."
            + (f" `{s['count_file_ignored']}` was present and not read (the timestamp file has the same pairs "
               "with times)." if s.get("count_file_ignored") else ""))
    if t["source"] == "music4all":
        text_pars = ["Item text from the Music4All folder given with `--music4all-src`:"]
        text_pars += music4all.text_section(t["catalogue"])
    elif t["source"] == "tags_dict":
        text_pars = [f"Item text from `{t['file']}` (Onion ships no titles): `Tags: t1, t2, ....` with the tags of "
                     f"the track's dict ordered by weight (highest first, ties by name), at most {t['max_tags']}. "
                     "Pass `--music4all-src` for titles, artists, albums, genres and lyrics.",
                     "Items without tags are not in `.item_text.tsv` (the semantic-ID engine gives them its "
                     "unknown code)."]
    else:
        text_pars = ["No `id_tags_dict` file and no `--music4all-src`: `.item_text.tsv` holds only its header. "
                     "Pass `--music4all-src` for item text."]
    written = [f for f, i in s["features"].items() if i["written"]]
    feature_pars = [
        "Every numeric `id_<feature>` file of `--src` (or those of `--features`) is written as "
        f"`{name}.<feature>.npz` (arrays `item_id`, `embedding`; aligned by id, only items of this dataset). "
        + ("Each column is z-scored over the items written (population std; a constant column gets std 1), "
           "stored as float16." if s["zscore"] else "Values are stored as read (float32, `--no-zscore`).")
        + " Empty/NaN cells are filled with the column mean; a column whose first row is not numeric is a text "
          "column and is skipped; any other non-numeric value stops the conversion. An id listed twice in a "
          "feature file: its first row is used.",
        f"Written: {', '.join(f'`{f}`' for f in written) or 'none'}. "
        + (f"The yaml lists `{name}.{s['audio_feature']}.npz` as `audio` (`--audio-feature`; default: the first "
           "present of mfcc_stats, essentia, ivec256, blf_*)." if s["audio_feature"] else
           "No feature is listed as `audio` in the yaml."),
    ]
    dups = {f: i["duplicate_ids"] for f, i in s["features"].items() if i.get("duplicate_ids")}
    if dups:
        feature_pars.append("Duplicate ids (first row kept): " + ", ".join(f"`{f}` {n}" for f, n in dups.items())
                            + ".")
    skipped = {f: i["skipped_columns"] for f, i in s["features"].items() if i.get("skipped_columns")}
    if skipped:
        feature_pars.append("Skipped text columns: " + "; ".join(f"`{f}`: {', '.join(c)}" for f, c in
                                                                   skipped.items()) + ".")
    cols = " ".join(f"{c}:token" for c in item_columns)
    sections = [
        ("Files", ["\n".join([
            f"- `{name}.inter`: `user_id:token item_id:token timestamp:float label:float play_count:float`; "
            "item = Onion `track_id` (= Music4All id).",
            f"- `{name}.item`: `{cols}`" + (" (normalised artist name, first genre)." if len(item_columns) > 1
                                             else "."),
            f"- `{name}.item_text.tsv`: `item_id text ...`.",
            f"- `{name}.<feature>.npz`: see Features.",
            f"- `{name}.yaml`: RecBole dataset config; `load_col` names `user_id item_id timestamp label` only "
            "(`play_count` determines the label and must never be a feature).",
            f"- `{name}.stats.json`: every number of this page."])]),
        ("Interactions, label and time", [
            time_par,
            f"Label rule `{s['label_rule']}`: {music4all.LABEL_RULE_TEXT[s['label_rule']]}.",
            "Rows are sorted by user (string order), then timestamp, then the position of the pair's first row in "
            "the file (byte-identical output for the same input). Every valid raw row is kept (filters only "
            "through `--kcore`); tracks without text or features are kept.",
        ]),
        ("Item text", text_pars),
        ("Features", feature_pars),
    ]
    return common.render_readme(f"{name}: converted Music4All-Onion", LICENCE, s["command"], numbers, sections)
