"""Trace every figure of a document to the results it reports:

    python -m recbole_psrq.benchmark.trace README.md

A traced region of the document starts at a line ``<!-- figures: results/mpd-5k/results.csv [more.csv] -->``
and ends at ``<!-- end figures -->``. Every decimal number in it (``0.8990``, ``−0.009``, ``+0.072``,
``7.3e-05``, ``67.5%``) must equal, at the precision it is written with, some value of one of the named
``results.csv`` files (their run rows, means, stds, differences, intervals, p-values and the tuning's chosen
values); integers (seeds, counts, years) are not checked. Exit status 1 and one line per figure found nowhere
(file:line, the figure, its context), so a report cannot quote a number its results do not contain."""
import argparse
import bisect
import csv
import json
import math
import os
import re
import sys

from recbole_psrq.errors import PSRQError

# markers are lines of their own (a marker quoted in prose is no marker)
START = re.compile(r"\s*<!--\s*figures:\s*(?P<paths>[^>]*?)\s*-->\s*")
END = re.compile(r"\s*<!--\s*end figures\s*-->\s*")
# a decimal number, optionally signed (ASCII or Unicode minus) and in e-notation, optionally a percentage;
# not part of a word, a version (1.2.1), a commit or a path
FIGURE = re.compile(r"(?<![\w.])(?P<sign>[+\-−]?)(?P<digits>\d+\.\d+)(?:e(?P<exp>[+\-−]?\d+))?(?P<pct>%?)"
                    r"(?![\w.]*\d)")


class TraceError(PSRQError):
    """A document's traced region is malformed or names a results file that cannot be read."""


def figures(text):
    """(value, half of the last written digit's unit, written text) of each decimal number in ``text``."""
    for m in FIGURE.finditer(text):
        digits, exp = m["digits"], int((m["exp"] or "0").replace("−", "-"))
        decimals = len(digits.split(".")[1])
        value = float(digits) * 10.0 ** exp * (-1 if m["sign"] in ("-", "−") else 1)
        half_unit = 0.5 * 10.0 ** (exp - decimals)
        if m["pct"]:
            value, half_unit = value / 100, half_unit / 100
        yield value, half_unit, m.group(0)


def _numbers(cell):
    """The finite numbers of one cell: a number, or the numbers inside a JSON cell (chosen values)."""
    try:
        value = float(cell)
    except ValueError:
        if not cell.startswith(("{", "[")):
            return []
        try:
            parsed = json.loads(cell)
        except ValueError:
            return []
        items = parsed.values() if isinstance(parsed, dict) else parsed
        return [n for item in items for n in _numbers(json.dumps(item) if not isinstance(item, str) else item)]
    return [value] if math.isfinite(value) else []


def csv_values(path):
    """Every finite number in a results.csv's cells (the header row left out)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise TraceError(f"cannot read {path} ({e.strerror}): a traced region names it; run the benchmark "
                         "report that writes it, or fix the path in the region's marker") from None
    return [value for row in rows[1:] for cell in row for value in _numbers(cell)]


def _found(value, half_unit, values):
    # written to its precision: the exact value lies within half a unit of the last written digit
    # (a tiny relative slack absorbs float round-off in values written exactly at the midpoint)
    slack = half_unit * (1 + 1e-9) + 1e-15
    i = bisect.bisect_left(values, value - slack)
    return i < len(values) and values[i] <= value + slack


def untraced(document):
    """(line number, figure, line) of every figure in ``document``'s traced regions that none of the
    region's results files contains, and the number of figures checked. Raises :class:`TraceError` for an
    unclosed or nested region or an unreadable results file."""
    base = os.path.dirname(os.path.abspath(document))
    with open(document) as f:
        lines = f.read().splitlines()
    missing, checked, values, start = [], 0, None, None
    for number, line in enumerate(lines, 1):
        marker = START.fullmatch(line)
        if marker:
            if values is not None:
                raise TraceError(f"{document}:{number}: a traced region starts inside the one opened at line "
                                 f"{start}; close that one with <!-- end figures --> first")
            paths = marker["paths"].split()
            if not paths:
                raise TraceError(f"{document}:{number}: the marker names no results file; write "
                                 "<!-- figures: results/<name>/results.csv -->")
            values = sorted(v for p in paths for v in csv_values(os.path.join(base, p)))
            start = number
            continue
        if END.fullmatch(line):
            if values is None:
                raise TraceError(f"{document}:{number}: <!-- end figures --> without a region to close")
            values = None
            continue
        if values is None:
            continue
        for value, half_unit, written in figures(line):
            checked += 1
            if not _found(value, half_unit, values):
                missing.append((number, written, line.strip()))
    if values is not None:
        raise TraceError(f"{document}:{start}: the traced region is never closed; add <!-- end figures -->")
    return missing, checked


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_psrq.benchmark.trace", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("documents", nargs="+", help="markdown files with traced regions (e.g. README.md)")
    args = parser.parse_args(argv)
    failed = False
    for document in args.documents:
        try:
            missing, checked = untraced(document)
        except (TraceError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for number, written, line in missing:
            print(f"{document}:{number}: {written} is in no results file of its region: {line[:160]}")
        print(f"{document}: {checked - len(missing)} of {checked} figure(s) traced to their results")
        failed |= bool(missing)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
