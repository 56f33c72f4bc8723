"""What every dataset converter shares: finding and reading raw files (plain, ``.gz``, ``.bz2``; LF or CRLF),
errors that name file and line, counting malformed rows instead of dropping them silently, aggregating
listening events per (user, item), the paper's label rules, opt-in filters, and writing the RecBole atomic
files + generated README in one layout.

Output layout of every converter (``OUT_DIR``, all TAB-separated UTF-8, LF line ends, written atomically):
- ``<name>.inter``: ``user_id:token item_id:token timestamp:float label:float [extra numeric columns]``
- ``<name>.item``: ``item_id:token`` (+ token columns a dataset ships, e.g. ``artist_id:token``)
- ``<name>.item_text.tsv``: ``item_id text ...`` (the text the encoders embed; no tabs/newlines inside)
- ``<name>.<feature>.npz``: shipped audio/content descriptors in the embedding format the SID hook reads
- ``<name>.yaml``: the RecBole dataset config; ``load_col`` names only ``user_id item_id timestamp label``
- ``<name>.stats.json`` and ``README.md``: counts, malformed-row report, the choices made, the command.
"""
import bz2
import csv
import gzip
import hashlib
import io
import json
import os
import re
import sys
import time

import numpy as np
import pandas as pd

from recbole_psrq.errors import ConfigError, DataFormatError
from recbole_psrq.io import atomic_open
from recbole_psrq.names import normalize_name

COMPRESSED_SUFFIXES = ("", ".gz", ".bz2")
DEFAULT_FIX = "Check that the file is the unmodified original."
DEFAULT_CHUNK_ROWS = 1_000_000
NAME_ID_PREFIX = "nm:"
UNKNOWN_ARTIST_ID = "[unknown]"
_CONTROL = re.compile(r"[\t\r\n\x0b\x0c]+")
_SPACES = re.compile(r" {2,}")
# the item text of every converter whose items are tracks ("track by artist.")
TEXT_TEMPLATE = "{track} by {artist}. Genres: {genres}."
TEXT_TEMPLATE_NO_GENRES = "{track} by {artist}."


def make_text(track, artist, genres):
    track = track or "(untitled)"
    artist = artist or "(unknown artist)"
    if genres:
        return TEXT_TEMPLATE.format(track=track, artist=artist, genres=", ".join(genres))
    return TEXT_TEMPLATE_NO_GENRES.format(track=track, artist=artist)


def log(args, message):
    """Progress line on stderr (stdout holds the converter's result), unless ``--no-progress``."""
    if not getattr(args, "no_progress", False):
        print(f"[{getattr(args, 'format', 'convert')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- files
def _candidates(src, names):
    return [os.path.join(src, name + suffix) for name in names for suffix in COMPRESSED_SUFFIXES]


def find_optional(src, *names):
    """Path of the first of ``names`` (each also tried with ``.gz`` / ``.bz2``) inside ``src``, or None."""
    return next((path for path in _candidates(src, names) if os.path.isfile(path)), None)


def find_input(src, *names, dataset="the dataset", hint=""):
    """:func:`find_optional` for a required file: when none is found, a :class:`DataFormatError` listing every
    path tried and ``hint`` (where to get the file)."""
    path = find_optional(src, *names)
    if path is None:
        raise DataFormatError(
            f"{dataset}: none of the expected files was found in {src} (tried: {', '.join(_candidates(src, names))}). "
            + (hint or "Pass --src pointing at the folder of your download."))
    return path


def open_binary(path):
    """Open a file for binary reading, decompressing ``.gz`` / ``.bz2`` by suffix."""
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".bz2"):
        return bz2.open(path, "rb")
    return open(path, "rb")


def open_text(path, encoding="utf-8", errors="strict"):
    """:func:`open_binary` as text; ``newline=""`` keeps CR characters, so callers see CRLF ends."""
    return io.TextIOWrapper(open_binary(path), encoding=encoding, errors=errors, newline="")


def clean_text(value):
    """One-line text for ``.item_text.tsv``: tabs/newlines -> space, runs of spaces collapsed."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return _SPACES.sub(" ", _CONTROL.sub(" ", str(value))).strip()


class MalformedRows:
    """Counts rows that could not be parsed, keeps the first few as examples for the report.

    Converters skip such rows only where the dataset is known to contain them (Last.fm-1K) and always
    report how many; elsewhere a malformed row is an error naming file and line."""

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

    def as_dict(self):
        return {"total": self.total, "by_file": dict(self.counts), "examples": list(self.examples)}


# ------------------------------------------------------------------------------------------- reading
def read_header(path, encoding="utf-8"):
    """Field names of the first line of a (possibly compressed) TAB-separated file, stripped."""
    with open_binary(path) as f:
        first = f.readline()
    return [c.strip() for c in _decode(first, path, 1, encoding, DEFAULT_FIX).rstrip("\r\n").split("\t")]


def _decode(raw, path, lineno, encoding, fix):
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise _decode_error(path, lineno, e.reason, e.start, encoding, fix) from e


def _decode_error(path, lineno, reason, byte, encoding, fix):
    return DataFormatError(f"{path}, line {lineno}: not valid {encoding} ({reason} at byte {byte} of the line). {fix}")


def iter_table(path, columns, header=False, encoding="utf-8", use=None, int_columns=(), malformed=None,
               chunk_rows=DEFAULT_CHUNK_ROWS, fix=DEFAULT_FIX):
    """Stream a TAB-separated file without quoting: yields ``(frame, lines)`` per chunk of ``chunk_rows`` rows,
    ``frame`` holding the ``use`` columns (default: all ``columns``) as str, ``int_columns`` as int64, and
    ``lines`` (int64) the 1-based line of every row in the file.

    Lines end at LF (a CRLF end is stripped, a stray CR inside a field stays in it); blank lines are skipped.
    With ``header=True`` the first line must name ``columns``. A line with the wrong number of fields, or not
    valid ``encoding``, is an error naming the file and the line, unless ``malformed`` (a
    :class:`MalformedRows`) is given: then it is counted, kept as an example and skipped (when the chunk that
    would hold it is read, as a line-by-line reader would). A value of ``int_columns`` that is not an integer is
    an error naming the file and the line.

    Lines are checked in bulk (numpy) and split by pandas' C parser: the speed of ``read_csv`` with every
    line validated and numbered."""
    with open_binary(path) as f:
        lineno = 0
        if header:
            lineno = 1
            got = _decode(f.readline(), path, 1, encoding, fix).rstrip("\r\n")
            if [c.strip() for c in got.split("\t")] != list(columns):
                raise DataFormatError(f"{path}, line 1: expected the header {chr(9).join(columns)!r} "
                                      f"(TAB-separated), found {got!r}. {fix}")
        parts, part_lines, rows = [], [], 0
        for block in _line_blocks(f):
            lines = _BlockLines(block, len(columns), encoding, all_undecodable=malformed is not None)
            while lines.left:
                data, numbers = lines.take(chunk_rows - rows, lineno, path, malformed, fix)
                lineno += lines.taken
                parts.append(data)
                part_lines.append(numbers)
                rows += len(numbers)
                if rows == chunk_rows:
                    numbers = np.concatenate(part_lines)
                    yield _parse_lines(b"".join(parts), numbers, columns, use, int_columns, encoding, path, fix), numbers
                    parts, part_lines, rows = [], [], 0
        if rows:
            numbers = np.concatenate(part_lines)
            yield _parse_lines(b"".join(parts), numbers, columns, use, int_columns, encoding, path, fix), numbers


_READ_BYTES = 1 << 24


def _line_blocks(f):
    """Successive blocks of whole lines of the binary file ``f``, CRLF ends made LF."""
    rest = b""
    while True:
        more = f.read(_READ_BYTES)
        block = rest + more
        if not more:
            if block:  # the last line, without LF
                yield block[:-1] if block.endswith(b"\r") else block
            return
        cut = block.rfind(b"\n") + 1
        block, rest = block[:cut], block[cut:]
        if block:
            yield block.replace(b"\r\n", b"\n") if b"\r" in block else block


class _BlockLines:
    """The lines of one block, checked in bulk: field counts (numpy) and, unless the block is ASCII, decoding."""

    def __init__(self, block, n, encoding, all_undecodable):
        self.block, self.n, self.encoding = block, n, encoding
        octets = np.frombuffer(block, dtype=np.uint8)
        self.ends = np.flatnonzero(octets == ord("\n")) + 1
        if not block.endswith(b"\n"):
            self.ends = np.append(self.ends, len(block))
        self.starts = np.concatenate(([0], self.ends[:-1]))
        self.fields = np.diff(np.searchsorted(np.flatnonzero(octets == ord("\t")), self.ends), prepend=0) + 1
        self.undecodable = self._undecodable(all_undecodable)
        self.bad = np.union1d(np.flatnonzero(self.fields != n), list(self.undecodable)).astype(np.int64)
        self.next = 0
        self.taken = 0

    @property
    def left(self):
        return len(self.ends) - self.next

    def _undecodable(self, all_of_them):
        """{line index: (reason, byte in the line)} of lines that are not valid ``encoding`` (only the first
        one unless ``all_of_them``)."""
        bad = {}
        pos = 0
        if self.block.isascii():
            return bad
        while True:
            try:
                str(memoryview(self.block)[pos:], self.encoding)
                return bad
            except UnicodeDecodeError as e:
                i = int(np.searchsorted(self.ends, pos + e.start, side="right"))
                bad[i] = (e.reason, pos + e.start - int(self.starts[i]))
                if not all_of_them:
                    return bad
                pos = int(self.ends[i])

    def take(self, count, before, path, malformed, fix):
        """The next ``count`` lines (those after line ``before`` of the file): the bytes of the good ones and
        their line numbers; blank lines dropped, bad ones raised or reported to ``malformed``."""
        first, stop = self.next, min(self.next + count, len(self.ends))
        self.next, self.taken = stop, stop - first
        keep = np.ones(stop - first, dtype=bool)
        for i in self.bad[(self.bad >= first) & (self.bad < stop)].tolist():
            keep[i - first] = False
            lineno = before + 1 + i - first
            if i in self.undecodable:
                reason, byte = self.undecodable[i]
                if malformed is None:
                    raise _decode_error(path, lineno, reason, byte, self.encoding, fix)
                malformed.add(path, lineno, f"not valid {self.encoding}")
            elif self.block[self.starts[i]:self.ends[i]].strip():
                reason = f"expected {self.n} TAB-separated fields, found {self.fields[i]}"
                if malformed is None:
                    raise DataFormatError(f"{path}, line {lineno}: {reason}. {fix}")
                malformed.add(path, lineno, reason)
        # the runs of kept lines: a few slices, not one per line
        edges = first + np.flatnonzero(np.diff(np.concatenate(([0], keep.view(np.int8), [0]))))
        data = b"".join(self.block[self.starts[a]:self.ends[b - 1]] for a, b in zip(edges[::2], edges[1::2]))
        return data, before + 1 + np.flatnonzero(keep)


def _parse_lines(data, lines, columns, use, int_columns, encoding, path, fix):
    """Checked lines -> DataFrame; a bad integer is found again with :func:`parse_numbers` to name its line."""
    positions = range(len(columns)) if use is None else [list(columns).index(c) for c in use]

    def read(integers):
        frame = pd.read_csv(io.BytesIO(data), sep="\t", header=None, names=range(len(columns)), usecols=positions,
                            dtype={p: (np.int64 if integers and columns[p] in int_columns else str) for p in positions},
                            quoting=csv.QUOTE_NONE, na_filter=False, encoding=encoding, engine="c",
                            lineterminator="\n", skip_blank_lines=False, index_col=False)
        frame.columns = [columns[p] for p in frame.columns]  # positional: feature files may repeat a name
        return frame

    try:
        return read(integers=True)
    except (ValueError, OverflowError):
        if not int_columns:
            raise
    frame = read(integers=False)
    for c in int_columns:
        frame[c] = parse_numbers(frame[c], lines, path, c, fix=fix, integer=True)
    return frame


def read_table(path, columns, **options):
    """A whole (small) file as one ``(frame, lines)``; options as for :func:`iter_table`."""
    frames, lines = [], []
    for frame, ln in iter_table(path, columns, **options):
        frames.append(frame)
        lines.append(ln)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns}), np.zeros(0, dtype=np.int64)
    return pd.concat(frames, ignore_index=True), np.concatenate(lines)


def parse_numbers(values, lines, path, column, fix=DEFAULT_FIX, integer=False, missing=()):
    """Str values -> float64 (``integer``: int64) array; values in ``missing`` (compared stripped and lower-case)
    read as NaN; any other value that is not a finite number (an integer) is an error naming file, line and
    value."""
    text = pd.Series(values, dtype=object).reset_index(drop=True)
    parsed = pd.to_numeric(text, errors="coerce")
    if integer and parsed.dtype.kind == "i":  # exact: large ids never pass through float64
        return parsed.to_numpy(np.int64)
    numbers = parsed.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numbers)
    if missing and bad.any():
        bad &= ~text.str.strip().str.lower().isin(missing).to_numpy()
    if integer:
        bad |= np.isfinite(numbers) & ((numbers != np.round(numbers)) | (np.abs(numbers) >= 2.0**63))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataFormatError(f"{path}, line {int(lines[i])}: column '{column}' holds {text[i]!r}, not "
                              f"{'an integer' if integer else 'a number'}. {fix}")
    return numbers.astype(np.int64) if integer else numbers


def unix_seconds(values, fmt=None):
    """Date-time strings -> unix seconds (float64, UTC; ``fmt`` a strptime format, default ISO 8601); NaN where
    a value does not parse."""
    parsed = pd.to_datetime(pd.Series(values, dtype=object), format=fmt or "ISO8601", errors="coerce", utc=True)
    seconds = (parsed.astype("int64") // 10**9).astype(np.float64).to_numpy()
    seconds[parsed.isna().to_numpy()] = np.nan
    return seconds


def parse_datetimes(values, lines, path, column, fmt=None, fix=DEFAULT_FIX):
    """:func:`unix_seconds`; the first unparseable value is an error naming file, line and value."""
    seconds = unix_seconds(values, fmt)
    bad = np.flatnonzero(np.isnan(seconds))
    if len(bad):
        i = int(bad[0])
        raise DataFormatError(f"{path}, line {int(lines[i])}: column '{column}' holds {np.asarray(values)[i]!r}, "
                              "not a date-time" + (f" in the format {fmt}" if fmt else "") + f". {fix}")
    return seconds


# --------------------------------------------------------------------------------- ids and aggregation
def stable_id(prefix, *parts, length=16):
    """Whitespace-free id derived from text parts: ``prefix + sha1(parts joined by U+001F)[:length]``."""
    return prefix + hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:length]


def name_id(*names):
    """Id of an entity known only by name(s): :data:`NAME_ID_PREFIX` + :func:`stable_id` of the normalised names
    (NFKC, lower-case, whitespace collapsed), so spelling variants of one name share an id."""
    return stable_id(NAME_ID_PREFIX, *(normalize_name(n) for n in names))


def artist_id_from_name(name):
    """:func:`name_id` of an artist name; :data:`UNKNOWN_ARTIST_ID` without a name."""
    return name_id(name) if normalize_name(name) else UNKNOWN_ARTIST_ID


def name_token(value):
    """Artist/store/genre name -> a readable RecBole token: the normalised name with double quotes dropped
    (RecBole reads atomic files with the csv module's quoting; a leading quote would swallow lines)."""
    return " ".join(normalize_name(value).replace('"', "").split())


class TokenCoder:
    """Ids (str or int) -> dense int64 codes in first-seen order, stable across calls (streaming)."""

    def __init__(self):
        self.codes = {}

    def __len__(self):
        return len(self.codes)

    def encode(self, values):
        inverse, uniques = pd.factorize(pd.Series(values, copy=False))
        codes = self.codes
        # setdefault evaluates len(codes) before inserting: a new token gets the next code
        mapped = np.fromiter((codes.setdefault(u, len(codes)) for u in uniques), dtype=np.int64, count=len(uniques))
        return mapped[inverse]

    def tokens(self):
        return np.asarray(list(self.codes), dtype=object)

    def decode(self, codes):
        return self.tokens()[np.asarray(codes, dtype=np.int64)]


class EventAggregator:
    """Stream of (user, item[, time][, count]) rows -> one row per (user, item) pair.

    Per pair: ``timestamp`` = earliest time, ``play_count`` = number of rows (or sum of ``counts``),
    ``first_row`` = index of the pair's first row in the input (0-based, input order). Memory is O(distinct
    pairs), so logs of billions of events stream through in chunks."""

    _COMPACT_ROWS = 5_000_000

    def __init__(self):
        self.users, self.items = TokenCoder(), TokenCoder()
        self.rows = 0        # input rows seen
        self.events = 0      # events (= rows, or the sum of counts)
        self._parts, self._pending, self._base = [], 0, 0
        self._firsts = []

    def add(self, users, items, times=None, counts=None, item_firsts=None):
        """Rows of ``users`` / ``items`` ids, ``times`` (default 0) and ``counts`` (default 1 a row);
        ``item_firsts``: per-row item metadata (a DataFrame) whose values at each item's first row
        :meth:`item_firsts` returns."""
        n = len(users)
        seen = len(self.items)
        item_codes = self.items.encode(items)
        if item_firsts is not None:
            new = item_codes >= seen  # codes of items first seen now are >= seen, in order of appearance
            self._firsts.append(item_firsts[new].iloc[np.unique(item_codes[new], return_index=True)[1]])
        if n == 0:
            return
        key = (self.users.encode(users) << 32) | item_codes
        times = np.zeros(n) if times is None else np.asarray(times, dtype=np.float64)
        counts = np.ones(n, dtype=np.int64) if counts is None else np.asarray(counts)
        part = pd.DataFrame({"key": key, "t": times, "n": counts,
                             "o": np.arange(self.rows, self.rows + n, dtype=np.int64)})
        self._parts.append(self._reduce(part))
        self._pending += len(self._parts[-1])
        self.rows += n
        self.events += counts.sum().item()
        # compact when the parts added since the last compaction outgrow both the threshold and the
        # compacted part itself (doubling keeps the total work O(N log N) for any number of pairs)
        if self._pending - self._base > max(self._COMPACT_ROWS, self._base) and len(self._parts) > 1:
            self._parts = [self._reduce(pd.concat(self._parts, ignore_index=True))]
            self._pending = self._base = len(self._parts[0])

    @staticmethod
    def _reduce(frame):
        return frame.groupby("key", sort=False).agg(t=("t", "min"), n=("n", "sum"), o=("o", "min")).reset_index()

    def item_firsts(self):
        """DataFrame indexed by item id: the ``item_firsts`` values of each item's first row."""
        return pd.concat(self._firsts, ignore_index=True).set_axis(self.items.tokens())

    def result(self):
        """DataFrame ``user_id, item_id`` (the ids as given), ``timestamp, play_count, first_row``, sorted by user
        id (string order), then timestamp, then ``first_row``: the input's order, reproducible."""
        if not self._parts:
            return pd.DataFrame({"user_id": pd.Series(dtype=object), "item_id": pd.Series(dtype=object),
                                 "timestamp": pd.Series(dtype=np.float64),
                                 "play_count": pd.Series(dtype=np.int64), "first_row": pd.Series(dtype=np.int64)})
        if len(self._parts) > 1:
            self._parts = [self._reduce(pd.concat(self._parts, ignore_index=True))]
        agg = self._parts[0]
        key, times, first_rows = agg["key"].to_numpy(), agg["t"].to_numpy(), agg["o"].to_numpy()
        users = self.users.tokens()
        # as sort_inter(frame, tie="first_row"), with the user ranks computed on the codes
        order = np.lexsort((first_rows, times, _rank(users)[key >> 32]))
        return pd.DataFrame({"user_id": users[key[order] >> 32], "item_id": self.items.decode(key[order] & 0xFFFFFFFF),
                             "timestamp": times[order], "play_count": agg["n"].to_numpy()[order],
                             "first_row": first_rows[order]})


def aggregate_events(path, columns, user, item, time_column=None, count_column=None, header=True, int_columns=(),
                     time_format=None, item_firsts=(), chunk_rows=DEFAULT_CHUNK_ROWS, fix=DEFAULT_FIX,
                     time_fix=None, progress=None):
    """Stream a file of listening events (one per line; ``time_column`` holds date-times in ``time_format``, a
    strptime format, default ISO 8601, or ``"unix"`` for integer seconds) or of play counts (``count_column``,
    no time) into an
    :class:`EventAggregator`. Ids are str (an empty one is an error) or integers (``int_columns``); a bad value
    or a negative count is an error naming file and line. ``item_firsts``: columns kept per item from its first
    line (:meth:`EventAggregator.item_firsts`); ``progress(aggregator)`` is called after every chunk."""
    unix = time_format == "unix"
    ints = list(int_columns) + ([time_column] if unix else []) + ([count_column] if count_column else [])
    use = [c for c in (user, item, time_column, count_column) if c] + list(item_firsts)
    agg = EventAggregator()
    for frame, lines in iter_table(path, columns, header=header, use=use, int_columns=ints, chunk_rows=chunk_rows,
                                   fix=fix):
        for c in (user, item):
            if c not in ints:
                empty = np.flatnonzero(frame[c].str.strip().eq("").to_numpy())
                if len(empty):
                    raise DataFormatError(f"{path}, line {int(lines[empty[0]])}: empty '{c}'. {fix}")
        if time_column is None:
            times = None
        elif unix:
            times = frame[time_column].to_numpy(np.float64)
        else:
            times = parse_datetimes(frame[time_column].to_numpy(), lines, path, time_column, time_format,
                                    time_fix or fix)
        counts = frame[count_column].to_numpy() if count_column else None
        if counts is not None and (counts < 0).any():
            i = int(np.flatnonzero(counts < 0)[0])
            raise DataFormatError(f"{path}, line {int(lines[i])}: negative count {counts[i]}. {fix}")
        agg.add(frame[user].to_numpy(), frame[item].to_numpy(), times, counts,
                frame[list(item_firsts)] if item_firsts else None)
        if progress:
            progress(agg)
    return agg


def position_in_user(pairs):
    """Placeholder time for data without one: each pair's position among its user's pairs in file order
    (0, 1, 2, ... by ``first_row``)."""
    return pairs.groupby("user_id", sort=False)["first_row"].rank(method="first").to_numpy(np.float64) - 1


def sort_inter(frame, time_column="timestamp", tie="item_id", numeric_users=False):
    """Rows ordered by user, then ``time_column``, then ``tie`` (stable, index reset). Str ids sort as strings;
    with ``numeric_users`` users sort as numbers when every user id is an integer literal."""
    order = np.lexsort((_sort_key(frame[tie]), frame[time_column].to_numpy(),
                        _sort_key(frame["user_id"], numeric_users)))
    return frame.iloc[order].reset_index(drop=True)


def _sort_key(values, numeric=False):
    """Per-row sort rank of ``values`` (numbers as they are)."""
    if values.dtype.kind in "iuf":
        return values.to_numpy()
    codes, uniques = pd.factorize(values)
    return _rank(uniques, numeric)[codes]


def _rank(ids, numeric=False):
    """Sort rank of each of the distinct ``ids``: string order, or as numbers (``numeric``, every id an integer
    literal)."""
    keys = np.asarray(ids, dtype=object).astype(str)
    if numeric and len(keys) and pd.Series(keys).str.fullmatch(r"-?\d+").all():
        keys = pd.to_numeric(pd.Series(keys)).to_numpy()
    return np.unique(keys, return_inverse=True)[1]


# --------------------------------------------------------------------------------------------- labels
LABEL_RULES = ("repeat", "user-median")


def add_label_arguments(parser, default="repeat", quantile=True):
    """``--label-rule`` (and ``--label-quantile``) of the converters whose labels come from play counts."""
    parser.add_argument("--label-rule", choices=LABEL_RULES, default=default,
                        help="repeat (the paper's Music4All rule): play count >= 2 -> 1, else 0; user-median: play "
                             f"count >= the user's median play count -> 1 (default: {default})")
    if quantile:
        parser.add_argument("--label-quantile", type=float, default=0.5,
                            help="quantile of the user's play counts used by user-median (default 0.5)")


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


def apply_label_rule(rule, users, counts, quantile=0.5):
    """Labels (float64 0/1) of play-count rows by rule name: ``repeat`` (:func:`repeat_labels`) or
    ``user-median`` (:func:`per_user_threshold_labels` at ``quantile``, default the median)."""
    if rule == "repeat":
        return repeat_labels(counts)
    if rule == "user-median":
        return per_user_threshold_labels(users, counts, quantile)[0]
    raise ConfigError(f"--label-rule must be one of {', '.join(LABEL_RULES)}, got {rule!r}.")


def label_and_kcore(pairs, rule, k, quantile=0.5):
    """``pairs`` (``user_id, item_id, play_count, ...``) with a ``label`` column by ``rule``, then the opt-in
    k-core: labelling first, so a user's labels come from all of the user's pairs whatever the k-core keeps.
    Returns (frame, stats)."""
    labelled = pairs.assign(label=apply_label_rule(rule, pairs["user_id"].to_numpy(), pairs["play_count"].to_numpy(),
                                                   quantile))
    kept, rounds = kcore(labelled, k)
    return kept, {"kcore": k, "kcore_rounds": rounds, "rows_removed_by_kcore": len(pairs) - len(kept),
                  "label_rule": rule}


def label_play_counts(pairs, args, extra_columns=()):
    """The play-count converters' rows (HetRec, Last.fm-1K, LFM-1b/2b): str ids, labels from all of a user's
    pairs, then the opt-in k-core; ordered by user (numeric ids as numbers), time, item. Returns (frame, stats)."""
    pairs = pairs.assign(user_id=pairs["user_id"].astype(str), item_id=pairs["item_id"].astype(str))
    inter, stats = label_and_kcore(pairs[["user_id", "item_id", "timestamp", "play_count", *extra_columns]],
                                   args.label_rule, args.kcore, args.label_quantile)
    stats["label_quantile"] = args.label_quantile
    return sort_inter(inter, numeric_users=True), stats


def describe_label_rule(rule, quantile=0.5, count="play count"):
    """One sentence for a generated README."""
    if rule == "repeat":
        return (f"`repeat` (the paper's Music4All rule): label 1 when the {count} of the (user, item) pair is "
                ">= 2 (played repeatedly), 0 when it is 1.")
    q = "median" if quantile == 0.5 else f"{quantile:g}-quantile"
    return (f"`user-median`: label 1 when the {count} is >= the {q} of that user's {count} values over all "
            "the user's items (pandas linear-interpolated quantile, computed before any k-core), else 0; a "
            "user with a single item gets 1.")


def label_counts(labels):
    labels = np.asarray(labels)
    pos = int((labels == 1).sum())
    return {"positive": pos, "negative": int(len(labels) - pos),
            "positive_pct": round(100.0 * pos / max(len(labels), 1), 2)}


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


def zscore_columns(matrix):
    """Per-column z-score (population std; a constant column gets std 1). Returns (z, mean, std)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    mean = matrix.mean(axis=0) if len(matrix) else np.zeros(matrix.shape[1])
    std = matrix.std(axis=0) if len(matrix) else np.ones(matrix.shape[1])
    std = np.where(std > 0, std, 1.0)
    return (matrix - mean) / std, mean, std


# ------------------------------------------------------------------------------------------- writing
INTER_TYPES = {"user_id": "token", "item_id": "token", "timestamp": "float", "label": "float"}


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


def _whole_floats_as_int(frame):
    """Float columns holding only whole numbers -> int64 for writing: pandas writes ints many times faster than
    it formats floats, and exactly beyond the 10 digits of ``%.10g``."""
    frame = frame.copy()
    for c in frame.columns:
        if frame[c].dtype.kind == "f":
            v = frame[c].to_numpy()
            if np.isfinite(v).all() and (v == np.round(v)).all() and (np.abs(v) < 2**53).all():
                frame[c] = v.astype(np.int64)
    return frame


def write_outputs(out_dir, name, inter, item, item_text, extra_inter=(), embeddings=None, audio=None,
                  load_item=None):
    """Write ``<name>.inter`` (:data:`INTER_TYPES` + the float columns ``extra_inter``), ``<name>.item`` (every
    column a token), ``<name>.item_text.tsv``, one ``<name>.<feature>.npz`` per ``embeddings`` entry
    (``{feature: (ids, matrix, dtype)}``) and ``<name>.yaml``: ``load_col`` names :data:`INTER_TYPES` only (an
    extra column such as ``play_count`` determines the label and must never be a feature) and ``load_item``
    (default: every item column); ``sid_embedding_files`` lists ``audio`` (a feature name) and a
    ``<name>.text.npz`` an encoder already wrote there."""
    from recbole_psrq.data.embeddings import save_item_embeddings

    write_atomic_file(os.path.join(out_dir, f"{name}.inter"), _whole_floats_as_int(inter),
                      {**INTER_TYPES, **{c: "float" for c in extra_inter}})
    write_atomic_file(os.path.join(out_dir, f"{name}.item"), item, {c: "token" for c in item.columns})
    write_item_text(os.path.join(out_dir, f"{name}.item_text.tsv"), item_text)
    for feature, (ids, matrix, dtype) in (embeddings or {}).items():
        save_item_embeddings(os.path.join(out_dir, f"{name}.{feature}.npz"), ids, matrix, dtype=dtype)
    files = {"text": f"{name}.text.npz"} if os.path.isfile(os.path.join(out_dir, f"{name}.text.npz")) else {}
    if audio:
        files["audio"] = f"{name}.{audio}.npz"
    return write_dataset_yaml(out_dir, name, list(INTER_TYPES), list(load_item or item.columns), files)


def write_play_count_dataset(args, stats, inter, item, item_text, render_readme, started, noun):
    """Files, stats and README of a play-count converter (see :func:`label_play_counts`); returns ``stats``."""
    write_outputs(args.out, stats["name"], inter, item, item_text, extra_inter=["play_count"], load_item=["item_id"])
    stats.update(users=int(inter["user_id"].nunique()), items=len(item), rows=len(inter),
                 labels=label_counts(inter["label"]), seconds=round(time.time() - started, 2))
    write_stats_and_readme(args.out, stats, render_readme(stats))
    log(args, f"{stats['users']} users, {stats['items']} {noun}, {stats['rows']} rows -> {args.out}")
    return stats


def write_stats_and_readme(out_dir, stats, readme_text):
    with atomic_open(os.path.join(out_dir, f"{stats['name']}.stats.json"), "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    with atomic_open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write(readme_text)


def check_args(args):
    """The dataset name (:func:`check_name`), after checking the options converters share, before any long read."""
    name = check_name(args.name)
    if getattr(args, "chunk_rows", 1) < 1:
        raise ConfigError(f"--chunk-rows must be >= 1, got {args.chunk_rows}.")
    if not 0.0 <= getattr(args, "label_quantile", 0.5) <= 1.0:
        raise ConfigError(f"--label-quantile must be in [0, 1], got {args.label_quantile}.")
    return name


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


# --------------------------------------------------------------------------------------------- README
def render_readme(title, intro, command, numbers, sections, notes=()):
    """Markdown README in the converters' shared layout: title, licence/citation paragraph, the exact
    command, a table of ``numbers`` ((label, value) pairs) followed by ``notes`` (paragraphs), then
    ``sections`` ((heading, [paragraphs]))."""
    lines = [f"# {title}", "", intro, "", "## Command", "", "```", command or "(called from Python)", "```", "",
             "## Numbers", "", "| | value |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in numbers]
    for p in notes:
        lines += ["", p]
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


def kcore_row(s, removed="rows"):
    """README numbers row of the opt-in k-core (``s``: the stats of :func:`label_and_kcore`)."""
    return ("k-core", f"{s['kcore'] or 'off'} ({s['kcore_rounds']} rounds, {fmt_count(s['rows_removed_by_kcore'])} "
                      f"{removed} removed)")


# README pieces of the play-count converters (HetRec, Last.fm-1K, LFM-1b/2b): same label, same files
def play_count_label_row(labels):
    return ("label 1 / label 0", f"{labels['positive']} / {labels['negative']} ({labels['positive_pct']}% positive)")


def play_count_label_choices(s, count="play count", source=None):
    """README bullets on the label; ``source``: what the play_count column holds, when not play counts."""
    return [f"- **Label**: {describe_label_rule(s['label_rule'], s['label_quantile'], count)}",
            f"- **play_count**{f' column = {source}. It' if source else ''} is written to the file but not listed "
            f"under `load_col` in `{s['name']}.yaml`: the label is computed from it, so a model must not see it."]


def play_count_files_section(s, item, item_text, inter_note=""):
    """README "Files" section; ``item`` / ``item_text``: what those files hold."""
    name = s["name"]
    return ("Files", ["\n".join([
        f"- `{name}.inter` — `user_id:token item_id:token timestamp:float label:float play_count:float`{inter_note}.",
        f"- `{name}.item` — {item}.",
        f"- `{name}.item_text.tsv` — {item_text}.",
        f"- `{name}.yaml` — the RecBole dataset config (`--config_files`); no audio ships with this dataset, "
        "text embeddings are made later by an encoder.",
        f"- `{name}.stats.json` — all numbers of this page."]), f"Conversion time: {s['seconds']} s."])
