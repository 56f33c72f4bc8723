"""Validation of RecBole atomic files before RecBole reads them.

RecBole hands atomic files to ``pandas.read_csv``; a malformed row then surfaces as a pandas
``ParserError`` or a ``ValueError`` deep inside ``Dataset._load_feat`` with no hint about which file or
row is wrong. :func:`validate_atomic_file` reads the file once, cheaply, and raises a
:class:`~recbole_psrq.errors.DataFormatError` naming the file, the line, the column and the fix.
"""
import os

from recbole_psrq.errors import DataFormatError

_NUMERIC_TYPES = {"float", "float_seq"}
_KNOWN_TYPES = {"token", "token_seq", "float", "float_seq"}


def validate_atomic_file(path, field_separator="\t", seq_separator=" ", encoding="utf-8",
                         label_field=None):
    """Check header syntax, column count of every row, and that numeric columns hold numbers.

    ``label_field``: when given and present, its values must be 0 or 1 (the CTR protocol's labels).
    Returns the number of data rows.
    """
    with open(path, encoding=encoding, newline="") as f:
        header = f.readline().rstrip("\r\n")
        columns = _parse_header(path, header, field_separator)
        numeric = [(i, name) for i, (name, ftype) in enumerate(columns) if ftype in _NUMERIC_TYPES]
        seq = {i for i, (_, ftype) in enumerate(columns) if ftype.endswith("_seq")}
        label_index = next((i for i, (name, _) in enumerate(columns) if name == label_field), None)
        n_rows = 0
        for line_no, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            values = line.split(field_separator)
            if len(values) != len(columns):
                raise DataFormatError(
                    f"{path}, line {line_no}: expected {len(columns)} {_sep_name(field_separator)}-"
                    f"separated columns ({', '.join(n for n, _ in columns)}) but found "
                    f"{len(values)}: {line[:120]!r}. Fix that row (a stray separator inside a value, "
                    "or a missing value) so every row has one value per header column."
                )
            for i, name in numeric:
                value = values[i]
                parts = value.split(seq_separator) if i in seq else [value]
                for part in parts:
                    if part == "" and i in seq:
                        continue
                    try:
                        float(part)
                    except ValueError:
                        raise DataFormatError(
                            f"{path}, line {line_no}: column '{name}' is declared numeric "
                            f"({columns[i][1]}) but holds {value!r}. Write a number there "
                            f"(e.g. 1 or 0 for a label), or declare the column as "
                            f"'{name}:token' in the header if it is categorical."
                        ) from None
            if label_index is not None and values[label_index] not in ("0", "1", "0.0", "1.0"):
                raise DataFormatError(
                    f"{path}, line {line_no}: label column '{label_field}' holds "
                    f"{values[label_index]!r}; the CTR protocol needs 0 or 1. Binarise the labels "
                    "when converting the data (e.g. repeated play = 1, single play = 0)."
                )
            n_rows += 1
    return n_rows


def read_header(path, field_separator="\t", encoding="utf-8"):
    """The ``(name, type)`` columns an atomic file's header declares."""
    with open(path, encoding=encoding, newline="") as f:
        return _parse_header(path, f.readline().rstrip("\r\n"), field_separator)


def _parse_header(path, header, field_separator):
    if not header:
        raise DataFormatError(f"{path}: the file is empty; an atomic file starts with a header "
                              "line such as 'user_id:token<TAB>item_id:token'.")
    columns = []
    for entry in header.split(field_separator):
        name, sep, ftype = entry.rpartition(":")
        if not sep or ftype not in _KNOWN_TYPES:
            raise DataFormatError(
                f"{path}: header entry {entry!r} is not 'name:type' with type one of "
                f"{sorted(_KNOWN_TYPES)}. RecBole atomic files declare every column's type in the "
                "header, e.g. 'label:float'."
            )
        columns.append((name, ftype))
    return columns


def _sep_name(separator):
    return {"\t": "tab", ",": "comma", " ": "space"}.get(separator, repr(separator))


def validate_dataset_folder(folder, dataset, field_separator="\t", seq_separator=" ",
                            encoding="utf-8", label_field=None):
    """Validate every atomic file ``<folder>/<dataset>.<suffix>`` that exists. Returns row counts."""
    counts = {}
    for suffix in ("inter", "item", "user"):
        path = os.path.join(folder, f"{dataset}.{suffix}")
        if os.path.isfile(path):
            counts[suffix] = validate_atomic_file(
                path, field_separator, seq_separator, encoding,
                label_field=label_field if suffix == "inter" else None,
            )
    return counts
