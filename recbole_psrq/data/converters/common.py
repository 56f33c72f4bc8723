"""What every dataset converter shares: reading raw files (plain, ``.gz``, ``.bz2``; any encoding; LF or
CRLF), counting malformed rows instead of dropping them silently, the paper's label rules, opt-in
filters, and writing the RecBole atomic files + generated README in one layout.

Output layout of every converter (``OUT_DIR``, all TAB-separated UTF-8, LF line ends, written atomically):
- ``<name>.inter``: ``user_id:token item_id:token timestamp:float [label:float] [extra numeric columns]``
- ``<name>.item``: ``item_id:token`` (+ token/float columns a dataset ships, e.g. ``artist_id:token``)
- ``<name>.item_text.tsv``: ``item_id text ...`` (the text the encoders embed; no tabs/newlines inside)
- ``<name>.<feature>.npz``: shipped audio/content descriptors in the embedding format the SID hook reads
- ``<name>.stats.json`` and ``README.md``: counts, malformed-row report, the choices made, the command.
"""
import bz2
import gzip
import io
import json
import os
import re

import numpy as np
import pandas as pd

from recbole_psrq.errors import ConfigError, DataFormatError
from recbole_psrq.io import atomic_open

COMPRESSED_SUFFIXES = ("", ".gz", ".bz2")
_CONTROL = re.compile(r"[\t\r\n\x0b\x0c]+")
_SPACES = re.compile(r" {2,}")


def find_input(src, *names, dataset="the dataset", hint=""):
    """Path of the first of ``names`` (each also tried with ``.gz`` / ``.bz2``) inside ``src``.

    Raises a :class:`DataFormatError` listing every path tried and ``hint`` (where to get the file)."""
    tried = []
    for name in names:
        for suffix in COMPRESSED_SUFFIXES:
            path = os.path.join(src, name + suffix)
            if os.path.isfile(path):
                return path
            tried.append(path)
    raise DataFormatError(
        f"{dataset}: none of the expected files was found in {src} (tried: {', '.join(tried)}). "
        + (hint or "Pass --src pointing at the folder of your download."))


def open_text(path, encoding="utf-8", errors="strict"):
    """Open a text file for reading, decompressing ``.gz`` / ``.bz2`` by suffix.

    ``newline=""`` keeps CR characters so callers see CRLF line ends and strip them explicitly
    (:func:`split_line`)."""
    if path.endswith(".gz"):
        raw = gzip.open(path, "rb")
    elif path.endswith(".bz2"):
        raw = bz2.open(path, "rb")
    else:
        raw = open(path, "rb")
    return io.TextIOWrapper(raw, encoding=encoding, errors=errors, newline="")


def split_line(line, sep="\t"):
    """Fields of one raw line, with LF / CRLF removed."""
    return line.rstrip("\r\n").split(sep)


def clean_text(value):
    """One-line text for ``.item_text.tsv``: tabs/newlines -> space, runs of spaces collapsed."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return _SPACES.sub(" ", _CONTROL.sub(" ", str(value))).strip()


class MalformedRows:
    """Counts rows that could not be parsed, keeps the first few as examples for the report.

    Converters skip such rows only where the dataset is known to contain them (Last.fm-1K) and always
    report how many; elsewhere :meth:`raise_if_any` turns them into an error naming file and line."""

    def __init__(self, max_examples=5):
        self.counts = {}
        self.examples = []
        self.max_examples = max_examples

    def add(self, path, lineno, reason):
        name = os.path.basename(path)
        self.counts[name] = self.counts.get(name, 0) + 1
        if len(self.examples) < self.max_examples:
            self.examples.append(f"{name}, line {lineno}: {reason}")

    @property
    def total(self):
        return sum(self.counts.values())

    def raise_if_any(self, fix):
        if self.total:
            raise DataFormatError(
                f"{self.total} malformed row(s): " + "; ".join(self.examples)
                + (" ..." if self.total > len(self.examples) else "") + f". {fix}")

    def as_dict(self):
        return {"total": self.total, "by_file": dict(self.counts), "examples": list(self.examples)}


def read_table(path, columns, sep="\t", header=True, encoding="utf-8", malformed=None, dataset="",
               fix="Check that the file is the unmodified original."):
    """Read a separated text file without quoting into a DataFrame of str columns ``columns``.

    Every line must have exactly ``len(columns)`` fields. A wrong line is an error naming the file and
    the line, unless ``malformed`` (a :class:`MalformedRows`) is given: then it is counted and skipped.
    With ``header=True`` the header must name ``columns`` (in order; extra trailing columns are an error)."""
    rows = []
    try:
        with open_text(path, encoding=encoding) as f:
            start = 1
            if header:
                first = f.readline()
                got = split_line(first, sep)
                if [c.strip() for c in got] != list(columns):
                    raise DataFormatError(
                        f"{path}, line 1: expected the header {sep.join(columns)!r} "
                        f"({_sep_name(sep)}-separated), found {first.rstrip(chr(13) + chr(10))!r}. {fix}")
                start = 2
            for lineno, line in enumerate(f, start=start):
                if not line.strip():
                    continue
                fields = split_line(line, sep)
                if len(fields) != len(columns):
                    reason = f"expected {len(columns)} {_sep_name(sep)}-separated fields, found {len(fields)}"
                    if malformed is None:
                        raise DataFormatError(f"{path}, line {lineno}: {reason}. {fix}")
                    malformed.add(path, lineno, reason)
                    continue
                rows.append(fields)
    except UnicodeDecodeError as e:
        raise DataFormatError(
            f"{path}: not valid {encoding} ({e.reason} at byte {e.start}). "
            f"{dataset + ' ' if dataset else ''}files are read as {encoding}; {fix}") from e
    return pd.DataFrame(rows, columns=list(columns), dtype=str) if rows else pd.DataFrame(
        {c: pd.Series(dtype=str) for c in columns})


def _sep_name(sep):
    return {"\t": "TAB", ",": "comma", " ": "space", "::": "'::'"}.get(sep, repr(sep))


def to_number(frame, column, path, kind=float, fix="Check that the file is the unmodified original."):
    """Column as numbers; the first non-numeric value is an error naming file, row and value."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataFormatError(
            f"{path}: column '{column}' must be numeric, row {i + 1} holds {frame[column].iloc[i]!r}. {fix}")
    return values.astype(np.int64) if kind is int else values.astype(np.float64)


def to_unix_seconds(values, path, column, fmt=None):
    """Date-time strings -> unix seconds (float64, UTC); an unparseable value is an error naming it."""
    parsed = pd.to_datetime(values, format=fmt, errors="coerce", utc=True)
    bad = parsed.isna() & values.notna()
    if bad.any():
        i = int(np.flatnonzero(np.asarray(bad))[0])
        raise DataFormatError(
            f"{path}: column '{column}' row {i + 1} holds {values.iloc[i]!r}, not a date-time"
            + (f" in the format {fmt}" if fmt else "") + ".")
    return (parsed.astype("int64") // 10**9).astype(np.float64).to_numpy()


# --------------------------------------------------------------------------------------------- labels
def repeat_labels(play_counts):
    """Music4All rule of the paper: played repeatedly (count >= 2) = 1, played once = 0."""
    return (np.asarray(play_counts) >= 2).astype(np.float64)


def per_user_threshold_labels(users, counts, quantile=0.5):
    """Play-count datasets: label 1 where the count is >= the user's ``quantile`` of counts (default the
    median), else 0. Returns (labels float64, thresholds per row). A user with a single item gets 1."""
    if not 0.0 <= quantile <= 1.0:
        raise ConfigError(f"--label-quantile must be in [0, 1], got {quantile}.")
    counts = pd.Series(np.asarray(counts, dtype=np.float64))
    thresholds = counts.groupby(np.asarray(users)).transform(lambda c: c.quantile(quantile)).to_numpy()
    return (counts.to_numpy() >= thresholds).astype(np.float64), thresholds


def rating_labels(ratings, threshold=4.0):
    """Amazon rule of the paper: rating >= 4 = 1."""
    return (np.asarray(ratings, dtype=np.float64) >= threshold).astype(np.float64)


# -------------------------------------------------------------------------------------------- filters
def kcore(inter, k, user="user_id", item="item_id"):
    """Opt-in k-core: repeatedly drop users and items with < k rows. Returns (frame, rounds)."""
    if k < 0:
        raise ConfigError(f"--kcore must be >= 0 (0 = off), got {k}.")
    rounds = 0
    while k > 1:
        rounds += 1
        keep = ((inter.groupby(user, sort=False)[item].transform("size") >= k)
                & (inter.groupby(item, sort=False)[user].transform("size") >= k))
        if keep.all():
            break
        inter = inter[keep.to_numpy()]
    if len(inter) == 0:
        raise ConfigError(f"--kcore {k} removes every row; use a smaller value.")
    return inter.reset_index(drop=True), rounds


# ------------------------------------------------------------------------------------------- writing
def write_atomic_file(path, frame, types):
    """Write ``frame`` as a RecBole atomic file; ``types`` maps column -> RecBole type (token, float, ...)."""
    missing = [c for c in types if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: columns {missing} are not in the frame")
    header = "\t".join(f"{c}:{t}" for c, t in types.items())
    _write_frame(path, frame[list(types)], header)


def write_item_text(path, frame):
    """``item_id text [...]`` with a plain header (the encoders' input)."""
    if list(frame.columns[:2]) != ["item_id", "text"]:
        raise ValueError("item text frame must start with columns item_id, text")
    frame = frame.copy()
    for c in frame.columns[1:]:
        frame[c] = frame[c].map(clean_text)
    _write_frame(path, frame, "\t".join(frame.columns))


def _write_frame(path, frame, header):
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(header + "\n")
        frame.to_csv(f, sep="\t", header=False, index=False, lineterminator="\n", quoting=3,
                     escapechar=None, float_format="%.10g")


def write_stats_and_readme(out_dir, stats, readme_text):
    with atomic_open(os.path.join(out_dir, f"{stats['name']}.stats.json"), "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    with atomic_open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write(readme_text)


def check_name(name):
    if not name or any(c in name for c in "/\\\t\n") or name.startswith("."):
        raise ConfigError(f"--name {name!r} is not a valid dataset name (use e.g. music4all).")
    return name


def write_dataset_yaml(out_dir, name, inter_columns, item_columns=("item_id",), embedding_files=None,
                       extra=None):
    """``<out_dir>/<name>.yaml``: the RecBole dataset config for the converted files, so that
    ``python run_recbole_psrq.py --model=DIN --config_files=<out_dir>/<name>.yaml`` runs on them."""
    import yaml

    config = {
        "data_path": os.path.abspath(os.path.dirname(os.path.abspath(out_dir))) + os.sep,
        "dataset": name,
        "field_separator": "\t",
        "seq_separator": " ",
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": list(inter_columns), "item": list(item_columns)},
        "sid_embedding_files": dict(embedding_files or {}),
    }
    if "label" in inter_columns:
        config["LABEL_FIELD"] = "label"
    config.update(extra or {})
    if os.path.basename(os.path.normpath(out_dir)) != name:
        raise ConfigError(f"RecBole reads <data_path>/<dataset>/: the output folder must be named like the "
                          f"dataset ('{name}'), got {out_dir}. Use --out .../{name}.")
    path = os.path.join(out_dir, f"{name}.yaml")
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(f"# RecBole dataset config written by the {name} converter; pass it with --config_files.\n")
        yaml.safe_dump(config, f, sort_keys=False)
    return path


# ------------------------------------------------------------- large files, ids, play aggregation
# (added for the Last.fm-family converters; generic: streaming readers, string-id coding, per-pair
# aggregation of listening events, label rules by name, user/time ordering and the shared outputs)
LABEL_RULES = ("repeat", "user-median")


def _decode_error(path, lineno, exc, encoding, fix):
    return DataFormatError(f"{path}, line {lineno}: not valid {encoding} ({exc.reason} at byte {exc.start} of "
                           f"the line). {fix}")


def iter_rows(path, columns, sep="\t", header=False, encoding="utf-8", malformed=None, chunk_rows=1_000_000,
              fix="Check that the file is the unmodified original."):
    """Stream a separated text file without quoting: yields ``(frame, line_numbers)`` per chunk, ``frame``
    holding str columns ``columns`` and ``line_numbers`` (int64) the 1-based line of every row.

    Lines are split on LF only (a CRLF end is stripped, a stray CR inside a field stays in it); blank lines
    are skipped. With ``header=True`` the first line must name ``columns``. A line with the wrong number of
    fields, or one that is not valid ``encoding``, is an error naming the file and the line, unless
    ``malformed`` (a :class:`MalformedRows`) is given: then it is counted, kept as an example and skipped."""
    n = len(columns)
    with open_binary(path) as f:
        lineno = 0
        if header:
            first = f.readline()
            lineno = 1
            try:
                got = first.decode(encoding).rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise _decode_error(path, 1, e, encoding, fix) from e
            if [c.strip() for c in got.split(sep)] != list(columns):
                raise DataFormatError(f"{path}, line 1: expected the header {sep.join(columns)!r} "
                                      f"({_sep_name(sep)}-separated), found {got!r}. {fix}")
        cols = [[] for _ in range(n)]
        lines = []
        for raw in f:
            lineno += 1
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as e:
                if malformed is None:
                    raise _decode_error(path, lineno, e, encoding, fix) from e
                malformed.add(path, lineno, f"not valid {encoding}")
                continue
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split(sep)
            if len(fields) != n:
                reason = f"expected {n} {_sep_name(sep)}-separated fields, found {len(fields)}"
                if malformed is None:
                    raise DataFormatError(f"{path}, line {lineno}: {reason}. {fix}")
                malformed.add(path, lineno, reason)
                continue
            for c, v in zip(cols, fields):
                c.append(v)
            lines.append(lineno)
            if len(lines) >= chunk_rows:
                yield pd.DataFrame(dict(zip(columns, cols)), dtype=str), np.asarray(lines, dtype=np.int64)
                cols = [[] for _ in range(n)]
                lines = []
        if lines:
            yield pd.DataFrame(dict(zip(columns, cols)), dtype=str), np.asarray(lines, dtype=np.int64)


def open_binary(path):
    """Open a (possibly ``.gz`` / ``.bz2``) file for binary reading."""
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".bz2"):
        return bz2.open(path, "rb")
    return open(path, "rb")


def read_header(path, sep="\t", encoding="utf-8"):
    """Field names of the first line of a (possibly compressed) file."""
    with open_binary(path) as f:
        first = f.readline()
    try:
        return [c.strip() for c in first.decode(encoding).rstrip("\r\n").split(sep)]
    except UnicodeDecodeError as e:
        raise _decode_error(path, 1, e, encoding, "Check that the file is the unmodified original.") from e


def iter_chunks(path, columns, use=None, int_columns=(), time_columns=None, header=False, sep="\t",
                encoding="utf-8", chunk_rows=5_000_000, fix="Check that the file is the unmodified original.",
                optional_columns=()):
    """Fast chunked reader (pandas C engine, no quoting) for large files of numeric ids.

    ``columns``: every field of a line, in order; ``use``: the ones to return (default all);
    ``int_columns``: parsed as int64; the others stay str (an empty str field reads as NaN);
    ``time_columns``: ``{column: strptime format}`` the caller will parse (used only to name a bad value);
    ``optional_columns``: str columns that may be empty (read as ""; a line cut short inside such a last
    column cannot be told apart from an empty value). Yields ``(frame, first_line)``. Blank lines are skipped. On any problem (wrong field count, a
    non-integer id, a missing field) the file is re-scanned line by line and the first bad line is reported
    in a :class:`DataFormatError` naming file, line and fix: call :func:`locate_bad_line` yourself for
    problems found after parsing (e.g. an unparseable time)."""
    import csv

    use = list(use or columns)
    dtype = {c: ("int64" if c in int_columns else str) for c in use}
    try:
        reader = pd.read_csv(path, sep=sep, header=0 if header else None, names=list(columns), usecols=use,
                             dtype=dtype, quoting=csv.QUOTE_NONE, keep_default_na=False, na_values=[""],
                             encoding=encoding, chunksize=chunk_rows, engine="c", compression="infer",
                             skip_blank_lines=True)
        first_line = 2 if header else 1
        with reader:
            for frame in reader:
                for c in optional_columns:
                    if c in frame.columns:
                        frame[c] = frame[c].fillna("")
                missing = frame[[c for c in use if c not in int_columns]].isna().any(axis=None)
                if missing:
                    locate_bad_line(path, columns, int_columns, time_columns, header, sep, encoding, fix,
                                    optional_columns)
                    raise DataFormatError(f"{path}: an empty field in the lines from {first_line} on. {fix}")
                yield frame, first_line
                first_line += len(frame)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, OverflowError) as e:
        if isinstance(e, DataFormatError):
            raise
        locate_bad_line(path, columns, int_columns, time_columns, header, sep, encoding, fix, optional_columns)
        raise DataFormatError(f"{path}: could not be read ({e}). {fix}") from e


def locate_bad_line(path, columns, int_columns=(), time_columns=None, header=False, sep="\t", encoding="utf-8",
                    fix="Check that the file is the unmodified original.", optional_columns=()):
    """Scan a file line by line and raise a :class:`DataFormatError` for the first line with the wrong number
    of fields, an empty field, a non-integer value in ``int_columns`` or a value of ``time_columns``
    (``{column: strptime format}``) that does not parse. Returns quietly when every line is fine."""
    from datetime import datetime

    n = len(columns)
    time_columns = dict(time_columns or {})
    with open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            if header and lineno == 1:
                continue
            try:
                line = raw.decode(encoding).rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise _decode_error(path, lineno, e, encoding, fix) from e
            if not line.strip():
                continue
            fields = line.split(sep)
            where = f"{path}, line {lineno}"
            if len(fields) != n:
                raise DataFormatError(f"{where}: expected {n} {_sep_name(sep)}-separated fields "
                                      f"({', '.join(columns)}), found {len(fields)}. {fix}")
            for name, value in zip(columns, fields):
                if value == "" and name not in optional_columns:
                    raise DataFormatError(f"{where}: column '{name}' is empty. {fix}")
                if name in int_columns:
                    try:
                        int(value)
                    except ValueError:
                        raise DataFormatError(f"{where}: column '{name}' must be an integer, found {value!r}. "
                                              f"{fix}") from None
                if name in time_columns:
                    try:
                        datetime.strptime(value, time_columns[name])
                    except ValueError:
                        raise DataFormatError(f"{where}: column '{name}' holds {value!r}, not a date-time in the "
                                              f"format {time_columns[name]}. {fix}") from None


def stable_id(prefix, *parts, length=16):
    """Whitespace-free id derived from text parts: ``prefix + sha1(parts joined by U+001F)[:length]``."""
    import hashlib

    return prefix + hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:length]


class TokenCoder:
    """String ids -> dense int64 codes in first-seen order, for streaming aggregation of large files.

    Codes of tokens new in a call are >= the size before the call, so 'first occurrence' metadata can be
    collected by keeping the rows whose code is new."""

    def __init__(self):
        self.codes = {}
        self.tokens = []

    def __len__(self):
        return len(self.tokens)

    def encode(self, values):
        inverse, uniques = pd.factorize(np.asarray(values, dtype=object))
        mapped = np.empty(len(uniques), dtype=np.int64)
        codes, tokens = self.codes, self.tokens
        for k, token in enumerate(uniques):
            code = codes.get(token)
            if code is None:
                code = codes[token] = len(tokens)
                tokens.append(token)
            mapped[k] = code
        return mapped[inverse]

    def decode(self, codes):
        return np.asarray(self.tokens, dtype=object)[np.asarray(codes, dtype=np.int64)]


class PlayAggregator:
    """Listening events (user, item, time) -> one row per (user, item): the first (smallest) time and the
    number of events. Keys are int64 (ids or :class:`TokenCoder` codes); partial results are merged whenever
    they exceed ``compact_rows`` rows, so memory follows the number of distinct pairs, not events."""

    def __init__(self, compact_rows=20_000_000):
        self.parts = []
        self.pending = 0
        self.events = 0
        self.compact_rows = compact_rows

    def add(self, users, items, times):
        frame = pd.DataFrame({"user": np.asarray(users, dtype=np.int64), "item": np.asarray(items, dtype=np.int64),
                              "time": np.asarray(times, dtype=np.float64)})
        self.events += len(frame)
        part = frame.groupby(["user", "item"], sort=False).agg(time=("time", "min"), count=("time", "size"))
        self.parts.append(part)
        self.pending += len(part)
        if self.pending > self.compact_rows and len(self.parts) > 1:
            self.parts = [self._merge()]
            self.pending = len(self.parts[0])

    def _merge(self):
        both = pd.concat(self.parts)
        return both.groupby(level=["user", "item"], sort=False).agg(time=("time", "min"), count=("count", "sum"))

    def result(self):
        """DataFrame ``user, item, time, count`` (int64, int64, float64, int64), sorted by user and item key."""
        if not self.parts:
            return pd.DataFrame({"user": pd.Series(dtype=np.int64), "item": pd.Series(dtype=np.int64),
                                 "time": pd.Series(dtype=np.float64), "count": pd.Series(dtype=np.int64)})
        merged = self._merge() if len(self.parts) > 1 else self.parts[0]
        merged = merged.sort_index().reset_index()
        merged["count"] = merged["count"].astype(np.int64)
        return merged


def apply_label_rule(rule, users, counts, quantile=0.5):
    """Labels (float64 0/1) of play-count rows by rule name: ``repeat`` (:func:`repeat_labels`) or
    ``user-median`` (:func:`per_user_threshold_labels` at ``quantile``, default the median)."""
    if rule == "repeat":
        return repeat_labels(counts)
    if rule == "user-median":
        return per_user_threshold_labels(users, counts, quantile)[0]
    raise ConfigError(f"--label-rule must be one of {', '.join(LABEL_RULES)}, got {rule!r}.")


def describe_label_rule(rule, quantile=0.5, count="play count"):
    """One sentence for a generated README."""
    if rule == "repeat":
        return (f"`repeat` (the paper's Music4All rule): label 1 when the {count} of the (user, item) pair is "
                ">= 2 (played repeatedly), 0 when it is 1.")
    q = "median" if quantile == 0.5 else f"{quantile:g}-quantile"
    return (f"`user-median`: label 1 when the {count} is >= the {q} of that user's {count} values over all "
            "the user's items (pandas linear-interpolated quantile, computed before any k-core), else 0; a "
            "user with a single item gets 1.")


def user_order_key(users):
    """Sort key for user ids: numeric when every id is an integer literal, else the string itself."""
    values = pd.Series(np.asarray(users, dtype=object)).astype(str)
    if len(values) and values.str.fullmatch(r"-?\d+").all():
        return pd.to_numeric(values).to_numpy()
    return values.to_numpy()


def sort_inter(frame, user="user_id", time="timestamp", item="item_id"):
    """Rows ordered by user (numeric ids numerically), then time, then item id; index reset."""
    key = pd.DataFrame({"u": user_order_key(frame[user]), "t": frame[time].to_numpy(),
                        "i": frame[item].astype(str).to_numpy()})
    order = key.sort_values(["u", "t", "i"], kind="mergesort").index.to_numpy()
    return frame.iloc[order].reset_index(drop=True)


def label_counts(labels):
    labels = np.asarray(labels)
    pos = int((labels == 1).sum())
    return {"positive": pos, "negative": int(len(labels) - pos),
            "positive_pct": round(100.0 * pos / max(len(labels), 1), 2)}


def markdown_table(rows, header=("", "value")):
    """Rows of (label, value) as a Markdown table."""
    out = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(out)


# ---------------------------------------------------------------- large files, events, features, README
# (added with the Music4All / Onion / Amazon converters; generic, usable by every converter)
def iter_table_chunks(path, columns, sep="\t", header=True, chunksize=500_000, encoding="utf-8",
                      dataset="", fix="Check that the file is the unmodified original."):
    """:func:`read_table` for files too large to hold as lists of strings: yields ``(frame, lines)``
    chunks of at most ``chunksize`` rows, ``frame`` holding str columns ``columns`` and ``lines`` the
    1-based line number of every row in the file (for error messages naming the line).

    Same rules as :func:`read_table`: header checked (when ``header``), blank lines skipped, a line with
    the wrong number of fields is an error naming the file and the line."""
    n = len(columns)
    try:
        with open_text(path, encoding=encoding) as f:
            lineno = 0
            if header:
                first = f.readline()
                lineno = 1
                got = split_line(first, sep)
                if [c.strip() for c in got] != list(columns):
                    raise DataFormatError(
                        f"{path}, line 1: expected the header {sep.join(columns)!r} "
                        f"({_sep_name(sep)}-separated), found {first.rstrip(chr(13) + chr(10))!r}. {fix}")
            rows, lines = [], []
            for lineno, line in enumerate(f, start=lineno + 1):
                # validate with a cheap separator count; pandas' C parser then splits the checked lines
                if line.count(sep) != n - 1 or n == 1:
                    if not line.strip():
                        continue
                    if line.count(sep) != n - 1:
                        raise DataFormatError(
                            f"{path}, line {lineno}: expected {n} {_sep_name(sep)}-separated fields, found "
                            f"{len(split_line(line, sep))}. {fix}")
                rows.append(line)
                lines.append(lineno)
                if len(rows) >= chunksize:
                    yield _chunk_frame(rows, columns, sep), np.asarray(lines, dtype=np.int64)
                    rows, lines = [], []
            if rows:
                yield _chunk_frame(rows, columns, sep), np.asarray(lines, dtype=np.int64)
    except UnicodeDecodeError as e:
        raise DataFormatError(
            f"{path}: not valid {encoding} ({e.reason} at byte {e.start} of the decoded stream). "
            f"{dataset + ' ' if dataset else ''}files are read as {encoding}; {fix}") from e


def _chunk_frame(lines, columns, sep):
    """Checked raw lines (each with len(columns) fields) -> DataFrame of str, in order."""
    if len(sep) == 1 and sep not in "\r\n\"":
        frame = pd.read_csv(io.StringIO("".join(lines)), sep=sep, header=None, names=list(columns), dtype=str,
                            quoting=3, na_filter=False, keep_default_na=False, skip_blank_lines=False,
                            engine="c", index_col=False, comment=None, escapechar=None)
        if len(frame) == len(lines):
            return frame.astype(object)
    rows = [split_line(line, sep) for line in lines]
    return pd.DataFrame(dict(zip(columns, (list(c) for c in zip(*rows)))), columns=list(columns), dtype=object)


def parse_numbers(values, lines, path, column, fix="Check that the file is the unmodified original.",
                  integer=False):
    """Str values -> float64 (or int64) array; the first bad value is an error naming file, line, value."""
    numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numbers)
    if integer:
        bad |= np.isfinite(numbers) & (numbers != np.round(numbers))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataFormatError(
            f"{path}, line {int(lines[i])}: column '{column}' holds {values[i]!r}, expected "
            f"{'an integer' if integer else 'a number'}. {fix}")
    return numbers.astype(np.int64) if integer else numbers


def parse_datetimes(values, lines, path, column, fmt="ISO8601",
                    fix="Expected date-times like 2019-02-20 12:28 or 2019-02-20 12:28:05 (read as UTC)."):
    """Date-time strings -> unix seconds (float64, UTC); the first unparseable value is an error naming
    file, line and value."""
    parsed = pd.to_datetime(pd.Series(values, dtype=object), format=fmt, errors="coerce", utc=True)
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataFormatError(f"{path}, line {int(lines[i])}: column '{column}' holds {values[i]!r}, not a "
                              f"date-time. {fix}")
    return (parsed.astype("int64") // 10**9).astype(np.float64).to_numpy()


class EventAggregator:
    """Stream of (user, item[, time][, count]) rows -> one row per (user, item) pair.

    Per pair: ``timestamp`` = earliest time, ``play_count`` = number of events (or sum of ``counts``),
    ``first_row`` = index of the pair's first row in the input (0-based, input order; the tie-break of
    :meth:`result`). Memory is O(distinct pairs), so logs of hundreds of millions of events stream
    through in chunks."""

    _COMPACT_ROWS = 5_000_000

    def __init__(self):
        self.users, self.items = {}, {}
        self.rows = 0        # input rows seen
        self.events = 0      # events (= rows, or the sum of counts)
        self._parts, self._pending, self._base = [], 0, 0

    @staticmethod
    def _codes(vocab, values):
        codes, uniques = pd.factorize(np.asarray(values, dtype=object), sort=False)
        mapped = np.fromiter((vocab.setdefault(u, len(vocab)) for u in uniques), dtype=np.int64,
                             count=len(uniques))
        return mapped[codes]

    def add(self, users, items, times=None, counts=None):
        n = len(users)
        if n == 0:
            return
        key = (self._codes(self.users, users) << 32) | self._codes(self.items, items)
        times = np.zeros(n) if times is None else np.asarray(times, dtype=np.float64)
        counts = np.ones(n, dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
        part = pd.DataFrame({"key": key, "t": times, "n": counts,
                             "o": np.arange(self.rows, self.rows + n, dtype=np.int64)})
        self._parts.append(self._reduce(part))
        self._pending += len(self._parts[-1])
        self.rows += n
        self.events += int(counts.sum())
        # compact when the parts added since the last compaction outgrow both the threshold and the
        # compacted part itself (doubling keeps the total work O(N log N) for any number of pairs)
        if self._pending - self._base > max(self._COMPACT_ROWS, self._base) and len(self._parts) > 1:
            self._parts = [self._reduce(pd.concat(self._parts, ignore_index=True))]
            self._pending = self._base = len(self._parts[0])

    @staticmethod
    def _reduce(frame):
        return frame.groupby("key", sort=False).agg(t=("t", "min"), n=("n", "sum"), o=("o", "min")).reset_index()

    def result(self):
        """DataFrame ``user_id, item_id, timestamp, play_count, first_row`` sorted by user id (string
        order), then timestamp, then ``first_row``."""
        if not self._parts:
            return pd.DataFrame({"user_id": pd.Series(dtype=object), "item_id": pd.Series(dtype=object),
                                 "timestamp": pd.Series(dtype=np.float64),
                                 "play_count": pd.Series(dtype=np.int64), "first_row": pd.Series(dtype=np.int64)})
        agg = self._reduce(pd.concat(self._parts, ignore_index=True)) if len(self._parts) > 1 else self._parts[0]
        self._parts = [agg]
        user_tokens = np.asarray(list(self.users), dtype=object)
        item_tokens = np.asarray(list(self.items), dtype=object)
        ucode = (agg["key"].to_numpy() >> 32).astype(np.int64)
        icode = (agg["key"].to_numpy() & 0xFFFFFFFF).astype(np.int64)
        user_rank = np.empty(len(user_tokens), dtype=np.int64)
        user_rank[np.argsort(user_tokens.astype(str), kind="stable")] = np.arange(len(user_tokens))
        order = np.lexsort((agg["o"].to_numpy(), agg["t"].to_numpy(), user_rank[ucode]))
        return pd.DataFrame({"user_id": user_tokens[ucode[order]], "item_id": item_tokens[icode[order]],
                             "timestamp": agg["t"].to_numpy()[order],
                             "play_count": agg["n"].to_numpy()[order].astype(np.int64),
                             "first_row": agg["o"].to_numpy()[order]}).reset_index(drop=True)


def zscore_columns(matrix):
    """Per-column z-score (population std; a constant column gets std 1). Returns (z, mean, std)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    mean = matrix.mean(axis=0) if len(matrix) else np.zeros(matrix.shape[1])
    std = matrix.std(axis=0) if len(matrix) else np.ones(matrix.shape[1])
    std = np.where(std > 0, std, 1.0)
    return (matrix - mean) / std, mean, std


def name_token(value):
    """Artist/store name -> a RecBole token: NFKC, lower-case, whitespace collapsed, double quotes dropped
    (RecBole reads atomic files with the csv module's quoting; a leading quote would swallow lines)."""
    import unicodedata

    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return " ".join(unicodedata.normalize("NFKC", str(value)).lower().replace('"', "").split())


def render_readme(title, licence, command, numbers, sections):
    """Markdown README in the converters' shared layout: title, licence/citation paragraph, the exact
    command, a table of ``numbers`` ((label, value) pairs) and ``sections`` ((heading, [paragraphs]))."""
    lines = [f"# {title}", "", licence, "", "## Command", "", "```", command, "```", "", "## Numbers", "",
             "| | value |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in numbers]
    for heading, paragraphs in sections:
        lines += ["", f"## {heading}", ""]
        for p in paragraphs:
            lines += [p, ""]
        lines.pop()
    return "\n".join(lines) + "\n"


def fmt_count(n, total=None):
    """``12,345`` or ``12,345 (12.3%)`` for README tables."""
    if total:
        return f"{n:,} ({100.0 * n / total:.1f}%)"
    return f"{n:,}"


INTER_TYPES = {"user_id": "token", "item_id": "token", "timestamp": "float", "label": "float",
               "play_count": "float"}


def write_outputs(out_dir, name, inter, item, item_text, item_types=None, inter_types=None,
                  load_inter=("user_id", "item_id", "timestamp", "label"), load_item=("item_id",)):
    """Write ``<name>.inter`` / ``.item`` / ``.item_text.tsv`` / ``.yaml`` (the layout of this module).

    ``inter_types`` defaults to :data:`INTER_TYPES` (extra frame columns are not written); ``load_inter``
    is what the yaml lets RecBole load: by default not ``play_count``, which labels are derived from."""
    os.makedirs(out_dir, exist_ok=True)
    inter = inter.copy()
    for c in inter.columns:  # whole numbers are written as integers: fast, and exact beyond 10 digits
        if inter[c].dtype.kind == "f":
            v = inter[c].to_numpy()
            if np.isfinite(v).all() and (v == np.round(v)).all() and (np.abs(v) < 2**53).all():
                inter[c] = v.astype(np.int64)
    write_atomic_file(os.path.join(out_dir, f"{name}.inter"), inter, dict(inter_types or INTER_TYPES))
    write_atomic_file(os.path.join(out_dir, f"{name}.item"), item,
                      dict(item_types or {c: "token" for c in item.columns}))
    write_item_text(os.path.join(out_dir, f"{name}.item_text.tsv"), item_text)
    return write_dataset_yaml(out_dir, name, list(load_inter), list(load_item))
