"""Build semantic IDs from item embeddings and report their quality.

    python -m recbole_psrq.sid --embeddings text.npz --labels music.item --label-column genre \\
        --quantizer psrq --levels 3 --codebook-size 64 --seed 0 --report report.json --plot fig.png

Embeddings: ``.npz`` in the project format (arrays ``item_id`` and ``embedding``) or ``.npy``
(memory-mapped; ``--ids`` gives one item id per line, same order and count as the rows).
Labels (optional, for the semantic-drift metrics):
- a RecBole atomic ``.item`` file (tab-separated, header ``item_id:token<TAB>genre:token...``) with
  ``--label-column genre``; for a ``token_seq`` column the first token is the item's label;
- a TSV ``item_id<TAB>label`` (a first line whose id is not a known item id is taken as a header),
  joined by id;
- a single-column file, one label per line in row order, only when it has exactly N lines.
Items without a label are left out of the label metrics with a warning (``labelled_items`` in the
report says how many were used); a labels file matching no item at all is an error.

Bad input prints a one-paragraph message and exits with status 2.
"""
import argparse
import json
import logging
import os
import sys
import time

import numpy as np

from recbole_psrq.data.embeddings import load_item_embeddings
from recbole_psrq.io import atomic_open
from recbole_psrq.errors import ConfigError, DataFormatError, PSRQError
from recbole_psrq.quantization import (QUANTIZERS, build_quantizer, sid_quality_report)
from recbole_psrq.quantization.base import nonfinite_rows
from recbole_psrq.quantization.report import MIN_DISTINCT_SID_SHARE, NMI_LEVEL1_WARN

logger = logging.getLogger("recbole_psrq.sid")


def main(argv=None):
    args = _parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("recbole_psrq").setLevel(logging.INFO)
    try:
        run(args)
    except PSRQError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def run(args):
    options = _parse_options(args.option)
    if args.threads is not None:
        options["threads"] = args.threads
    quantizer = build_quantizer(args.quantizer, n_levels=args.levels,
                                codebook_size=args.codebook_size, seed=args.seed, **options)
    item_ids, X = load_embeddings(args.embeddings, args.ids)
    _reject_nonfinite(X, item_ids, args.embeddings)
    labels = None
    if args.labels:
        labels = load_labels(args.labels, item_ids, X.shape[0], args.label_column)
    logger.info("fitting %s (levels=%d, k=%d) on %d x %d embeddings", quantizer.name,
                quantizer.n_levels, quantizer.codebook_size, X.shape[0], X.shape[1])
    start = time.perf_counter()
    codes = quantizer.fit(X).encode(X)
    fit_seconds = time.perf_counter() - start
    logger.info("fit + encode took %.1f s; computing the quality report", fit_seconds)
    report = sid_quality_report(X, codes, labels=labels, quantizer=quantizer,
                                knn_sample=args.knn_sample, seed=args.seed,
                                name=os.path.basename(args.embeddings),
                                nmi_level1_warn=args.warn_nmi_level1,
                                min_distinct_sid_share=args.warn_distinct_share)
    report["fit_seconds"] = fit_seconds
    report["config"] = {**quantizer.config, "embeddings": os.path.abspath(args.embeddings),
                        "dim": quantizer.dim}
    print(format_report(report))
    if args.report:
        with atomic_open(args.report, "w") as f:
            json.dump(report, f, indent=2)
    if args.codes:
        _save_codes(args.codes, item_ids, codes)
    if args.save_quantizer:
        quantizer.save(args.save_quantizer)
    if args.plot:
        from recbole_psrq.quantization.plot import plot_semantic_drift

        plot_semantic_drift(args.plot, X, labels, quantizer, codes, sample=args.plot_sample,
                            seed=args.seed)
        logger.info("wrote %s", args.plot)


def load_embeddings(path, ids_path=None):
    """(item_ids or None, matrix). ``.npy`` files are memory-mapped, so only chunks are ever
    converted to float32."""
    if path.endswith(".npz"):
        if ids_path:
            raise ConfigError(f"{path} already holds item ids; drop --ids (it is for .npy files).")
        return load_item_embeddings(path)
    if not path.endswith(".npy"):
        raise DataFormatError(f"{path}: embeddings must be a .npy or .npz file.")
    if not os.path.isfile(path):
        raise DataFormatError(f"Embedding file not found: {path}.")
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataFormatError(f"{path}: not a readable .npy matrix ({e}).") from e
    if X.ndim != 2:
        raise DataFormatError(
            f"{path}: embeddings must be a 2-D matrix (items x dimensions), got shape {X.shape}."
        )
    if not ids_path:
        return None, X
    item_ids = np.array(_read_lines(ids_path))
    if len(item_ids) != X.shape[0]:
        raise DataFormatError(
            f"{ids_path} has {len(item_ids)} ids but {path} has {X.shape[0]} rows; give exactly one "
            "id per embedding row, in row order."
        )
    uniq, counts = np.unique(item_ids, return_counts=True)
    if (counts > 1).any():
        raise DataFormatError(
            f"{ids_path}: duplicate item ids {uniq[counts > 1][:5].tolist()} "
            f"({int((counts > 1).sum())} in all); each row needs its own id."
        )
    return item_ids, X


def load_labels(path, item_ids, n_items, label_column=None):
    """Per-row labels (object array, None where unknown) from a ``.item`` file, a TSV or a
    single-column file (see the module docstring)."""
    lines = _read_lines(path)
    if label_column or path.endswith(".item"):
        by_id = _labels_from_atomic_item(path, lines, label_column)
    elif all("\t" not in line for line in lines):
        if len(lines) != n_items:
            raise DataFormatError(
                f"{path} has one column and {len(lines)} lines, but there are {n_items} items. A "
                "single-column labels file must have exactly one label per embedding row; otherwise "
                "use 'item_id<TAB>label' lines."
            )
        return np.array(lines, dtype=object)
    else:
        by_id = _labels_from_tsv(path, lines, item_ids)
    if item_ids is None:
        raise DataFormatError(
            f"{path} labels items by id, but the embeddings have no ids. Pass --ids ids.txt for a "
            ".npy file, or use an .npz embedding file that holds 'item_id'."
        )
    labels = np.array([by_id.get(item) for item in item_ids], dtype=object)
    missing = [item for item, label in zip(item_ids, labels) if label is None]
    if len(missing) == n_items:
        raise DataFormatError(
            f"{path}: none of the {n_items} item ids has a label (embedding ids look like "
            f"{list(item_ids[:3])}, label ids like {list(by_id)[:3]}). Check that both files use "
            "the same item tokens."
        )
    if missing:
        logger.warning("%d of %d items have no label in %s (e.g. %s); they are left out of the "
                       "label metrics", len(missing), n_items, path, missing[:5])
    return labels


def _labels_from_atomic_item(path, lines, label_column):
    if not label_column:
        raise ConfigError(f"{path} is a RecBole .item file; say which column holds the label with "
                          "--label-column (e.g. --label-column genre).")
    header = lines[0].split("\t")
    names = [field.split(":")[0] for field in header]
    if "item_id" not in names or label_column.split(":")[0] not in names:
        raise DataFormatError(
            f"{path}: the header needs columns 'item_id' and '{label_column}', it has {header}."
        )
    id_col, label_col = names.index("item_id"), names.index(label_column.split(":")[0])
    by_id = {}
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header):
            raise DataFormatError(
                f"{path} line {number}: {len(fields)} tab-separated fields, the header has "
                f"{len(header)}. Fix the line or remove it."
            )
        tokens = fields[label_col].split()
        if tokens:  # an empty cell means "no label"
            by_id[fields[id_col]] = tokens[0]
    return by_id


def _labels_from_tsv(path, lines, item_ids):
    known = set(item_ids.tolist()) if item_ids is not None else set()
    first_id = lines[0].split("\t", 1)[0]
    if item_ids is not None and first_id not in known:
        lines = lines[1:]  # header line
    by_id = {}
    for number, line in enumerate(lines, start=1):
        fields = line.split("\t", 1)
        if len(fields) != 2:
            raise DataFormatError(
                f"{path} line {number}: expected 'item_id<TAB>label', got {line!r}."
            )
        item, label = fields[0], fields[1].strip()
        if by_id.get(item, label) != label:
            raise DataFormatError(
                f"{path}: item {item!r} has two labels ({by_id[item]!r} and {label!r}); keep one."
            )
        by_id[item] = label
    return by_id


def _reject_nonfinite(X, item_ids, path):
    bad = nonfinite_rows(X)
    if bad.size:
        named = item_ids[bad[:10]].tolist() if item_ids is not None else bad[:10].tolist()
        what = "items" if item_ids is not None else "rows"
        raise DataFormatError(
            f"{path}: {bad.size} embedding row(s) contain NaN or inf, e.g. {what} {named}. Drop "
            "those items or impute their embeddings (e.g. with the modality mean) and rerun."
        )


def format_report(report):
    """The report as a readable text table: one row per level, then the scalar metrics, then one
    ``warning:`` line per warning."""
    columns = ["utilization", "perplexity", "nmi_labels", "purity_labels", "nmi_level1",
               "recon_mse_by_levels", "prefix_weights"]
    columns = [c for c in columns if c in report]
    rows = ["level  " + "  ".join(f"{c:>19}" for c in columns)]
    for level in range(report["n_levels"]):
        values = [report[c][level] for c in columns]
        rows.append(f"{level + 1:>5}  " + "  ".join(
            f"{'-' if v is None else format(v, '.4f'):>19}" for v in values))
    for key in ("unique_sids", "distinct_sid_share", "collision_rate", "max_items_per_sid",
                "recon_mse", "knn_recall@10", "labelled_items", "fit_seconds"):
        if report.get(key) is not None:
            value = report[key]
            rows.append(f"{key:>20}: {value:.4f}" if isinstance(value, float)
                        else f"{key:>20}: {value}")
    rows.extend(f"warning: {warning}" for warning in report.get("warnings", []))
    return "\n".join(rows)


def _parse_options(pairs):
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option expects KEY=VALUE (e.g. niter=25), got {pair!r}.")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _read_lines(path):
    if not os.path.isfile(path):
        raise DataFormatError(f"File not found: {path}.")
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\r\n") for line in f]
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise DataFormatError(f"{path} is empty.")
    return lines


def _save_codes(path, item_ids, codes):
    """``.npz`` with ``sid`` (N, L) int64 and ``item_id`` (row numbers when the input had no ids)."""
    ids = item_ids if item_ids is not None else np.arange(len(codes)).astype(str)
    with atomic_open(path) as f:
        np.savez(f, item_id=ids, sid=codes)


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m recbole_psrq.sid",
        description="Fit a semantic-ID quantizer on item embeddings, encode them and report SID "
                    "quality (codebook use, collisions, reconstruction, kNN recall, semantic drift).")
    parser.add_argument("--embeddings", required=True, help=".npz (item_id + embedding) or .npy")
    parser.add_argument("--ids", help="for .npy embeddings: one item id per line, in row order")
    parser.add_argument("--labels", help="labels: .item file, item_id<TAB>label TSV, or one per line")
    parser.add_argument("--label-column", help="label column of a RecBole .item file (e.g. genre)")
    parser.add_argument("--quantizer", default="psrq", help=f"one of {sorted(QUANTIZERS)}")
    parser.add_argument("--levels", type=int, help="SID length L (default: the paper's setting)")
    parser.add_argument("--codebook-size", type=int, default=256, help="k, entries per codebook")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="CPU threads for faiss/torch (default 1)")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE",
                        help="quantizer option, e.g. niter=25, prefix_weight=0.5 or "
                             "prefix_weight=auto (repeatable)")
    parser.add_argument("--knn-sample", type=int, default=2000, help="query items for kNN recall")
    parser.add_argument("--warn-nmi-level1", type=float, default=NMI_LEVEL1_WARN,
                        help="warn when a level >= 2 has NMI with the level-1 codes above this "
                             "(default %(default)s)")
    parser.add_argument("--warn-distinct-share", type=float, default=MIN_DISTINCT_SID_SHARE,
                        help="warn when distinct full SIDs / items is below this (default %(default)s)")
    parser.add_argument("--report", help="write the report as JSON here")
    parser.add_argument("--codes", help="write item_id + sid (N x L) as .npz here")
    parser.add_argument("--save-quantizer", help="write the fitted quantizer (.npz) here")
    parser.add_argument("--plot", help="write the semantic-drift figure (PNG) here")
    parser.add_argument("--plot-sample", type=int, default=3000, help="items drawn in the figure")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
