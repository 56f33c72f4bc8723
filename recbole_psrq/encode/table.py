"""Tabular features as a modality: one row of numbers per item, or per group of items (e.g. per artist).

    python -m recbole_psrq.encode table --dataset OUT_DIR --file F.csv [F2.csv ...] --key COLUMN \\
        [--item-key COLUMN] [--normalize-names] [--columns a,b,c] --name audio

Each table (``.tsv``/``.tab``: TAB-separated, else comma) has a key column and numeric feature columns
(``--columns``, default every numeric column but the key). Rows with an empty key or a missing feature are
dropped; a non-numeric feature value is an error naming the file and row. A key that occurs twice in a table
keeps the row with the largest ``count`` when the table has that column (Spotify's per-artist tables: the
most-tracked artist of that name), else the first row; across tables the first table that has a key wins.
``--normalize-names`` joins by :func:`recbole_psrq.names.normalize_name` (NFKC, lower-case, collapsed
whitespace) on both sides, else by the exact (stripped) text.

Each item gets the row of its key (``--item-key``: a column of ``<name>.item`` or ``<name>.item_text.tsv``,
default the item id), every column z-scored over the distinct matched keys (population std; a constant column
gets std 1), so all items of one group share one vector. Items whose key is in no table are left out of
``<name>.<modality>.npz`` (the semantic-ID hook gives them its unknown code) and counted in the coverage.
The MPD converter joins its artist-level audio tables with the same code.
"""
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recbole_psrq.errors import DataFormatError
from recbole_psrq.names import normalize_name


def _plain_key(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def key_function(normalize_names):
    """The join key of a name or id: :func:`normalize_name`, or the stripped text."""
    return normalize_name if normalize_names else _plain_key


def pick_by_count(frame, key, normalize_names):
    """One row per key of column ``key``: the largest ``count`` wins, ties -> the first row. Returns (frame
    indexed by the key, number of rows whose key occurs more than once)."""
    frame = frame.copy()
    frame["_key"] = frame[key].map(key_function(normalize_names))
    frame["_row"] = np.arange(len(frame))
    frame = frame[frame["_key"] != ""]
    n_dup = int(frame["_key"].duplicated(keep=False).sum())
    if "count" in frame.columns:
        cnt = pd.to_numeric(frame["count"], errors="coerce").fillna(-1)
        frame = frame.assign(_cnt=cnt).sort_values(["_key", "_cnt", "_row"], ascending=[True, False, True],
                                                   kind="mergesort")
    else:
        frame = frame.sort_values(["_key", "_row"], kind="mergesort")
    frame = frame.drop_duplicates("_key", keep="first").sort_values("_row", kind="mergesort")
    return frame.set_index("_key"), n_dup


def _read(path, hint):
    try:
        return pd.read_csv(path, sep="\t" if path.endswith((".tsv", ".tab")) else ",")
    except FileNotFoundError as e:
        raise DataFormatError(f"Feature table not found: {path}. {hint}") from e
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataFormatError(f"{path}: not a readable CSV ({e}).") from e


def read_feature_tables(paths, key, columns=None, normalize_names=False, hint=""):
    """Tables -> (DataFrame indexed by join key with ``columns`` + ``source`` (the file's name), list of
    per-file info). ``columns`` defaults to the first table's numeric columns other than ``key``; ``hint``
    ends the errors (where the tables come from)."""
    tables, info = [], []
    seen = set()
    for path in paths:
        path = os.fspath(path)
        frame = _read(path, hint)
        if columns is None:
            columns = [c for c in frame.columns if c != key and pd.api.types.is_numeric_dtype(frame[c])]
            if not columns:
                raise DataFormatError(f"{path}: no numeric column besides the key '{key}'; name the feature "
                                      "columns with --columns.")
        missing = [c for c in [key] + list(columns) if c not in frame.columns]
        if missing:
            raise DataFormatError(f"{path}: missing column(s) {missing}; the table needs the key column '{key}' "
                                  f"and the feature columns {list(columns)}. {hint}")
        for c in columns:
            values = pd.to_numeric(frame[c], errors="coerce")
            bad = values.isna() & frame[c].notna()
            if bad.any():
                r = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataFormatError(f"{path}, data row {r + 1} ({key} {frame[key].iloc[r]!r}): "
                                      f"column '{c}' is {frame[c].iloc[r]!r}, not a number.")
            frame[c] = values
        frame = frame.dropna(subset=columns)
        picked, n_dup = pick_by_count(frame, key, normalize_names)
        new = picked[~picked.index.isin(seen)]
        seen.update(new.index)
        tables.append(new[columns].assign(source=os.path.basename(path)))
        info.append({"file": path, "keys": int(len(picked)), "rows_with_duplicate_keys": n_dup,
                     "keys_added": int(len(new))})
    table = pd.concat(tables) if tables else pd.DataFrame(columns=list(columns or []) + ["source"])
    return table, info


@dataclass
class Standardized:
    """Items joined to a feature table: ``matrix`` holds one z-scored row per matched item, in item order."""
    matched: np.ndarray        # (n_items,) bool
    matrix: np.ndarray         # (matched items, columns) float32
    keys: list                 # the distinct matched keys, sorted
    mean: np.ndarray
    std: np.ndarray


def standardize_by_key(item_keys, table, columns):
    """Join items to ``table`` by key and z-score every column over the distinct matched keys (population
    std, a constant column gets std 1), so all items of one key share one vector."""
    matched = np.array([k in table.index for k in item_keys], dtype=bool)
    keys = sorted({k for k, m in zip(item_keys, matched) if m})
    per_key = table.loc[keys, columns].to_numpy(np.float64)
    mean = per_key.mean(0) if len(per_key) else np.zeros(len(columns))
    std = per_key.std(0) if len(per_key) else np.ones(len(columns))
    std = np.where(std > 0, std, 1.0)
    z = pd.DataFrame((per_key - mean) / std, index=keys, columns=columns)
    matrix = z.loc[[k for k, m in zip(item_keys, matched) if m]].to_numpy(np.float32) \
        if matched.any() else np.zeros((0, len(columns)), np.float32)
    return Standardized(matched, matrix.reshape(-1, len(columns)), keys, mean, std)
