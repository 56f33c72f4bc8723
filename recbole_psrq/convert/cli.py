"""One command for every supported public music dataset -> RecBole atomic files + item text/features.

    python -m recbole_psrq.convert <format> --src RAW_DIR --out OUT_DIR [options]
    python -m recbole_psrq.convert <format> --help        # the format's own options
    python -m recbole_psrq.convert download <dataset> --dest RAW_DIR   # public sets, checksum-verified
    python -m recbole_psrq.convert synthetic --out dataset             # regenerate the default dataset

The output folder's name is the dataset name (RecBole reads ``<data_path>/<dataset>/``); the converter
writes ``<name>.yaml`` next to the files, so ``python run_recbole_psrq.py --model=DIN
--config_files=OUT_DIR/<name>.yaml`` runs on them. Formats, label rules and choices: each converter's
module docstring and the README it generates.
"""
import argparse
import importlib
import os
import shlex
import sys

from recbole_psrq.errors import PSRQError

# format -> module with add_arguments(parser) and convert(args, command) -> stats
FORMATS = {
    "music4all": "recbole_psrq.convert.music4all",
    "music4all-onion": "recbole_psrq.convert.music4all_onion",
    "hetrec-lastfm": "recbole_psrq.convert.hetrec_lastfm",
    "lastfm-1k": "recbole_psrq.convert.lastfm_1k",
    "lfm-1b": "recbole_psrq.convert.lfm",
    "lfm-2b": "recbole_psrq.convert.lfm",
    "amazon2023": "recbole_psrq.convert.amazon2023",
    "mpd": "recbole_psrq.convert.mpd",
}
# subcommands that are not formats: module with main(argv)
TOOLS = {
    "download": "recbole_psrq.convert.download",
    "synthetic": "recbole_psrq.convert.synthetic",
}


def build_parser(fmt):
    module = importlib.import_module(FORMATS[fmt])
    parser = argparse.ArgumentParser(prog=f"python -m recbole_psrq.convert {fmt}",
                                     description=(module.__doc__ or "").split("\n\n")[0])
    parser.add_argument("--src", required=True, help="folder of the raw download (files may be .gz/.bz2)")
    parser.add_argument("--out", required=True, help="output folder; its name is the dataset name")
    parser.add_argument("--kcore", type=int, default=0,
                        help="opt-in k-core on users and items (0 = off: every valid raw row is kept)")
    parser.add_argument("--no-progress", action="store_true")
    module.add_arguments(parser, fmt)
    return module, parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TOOLS:
        return importlib.import_module(TOOLS[argv[0]]).main(argv[1:])
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in FORMATS:
        known = ", ".join(FORMATS)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: unknown format '{argv[0]}'; supported: {known} (and: {', '.join(TOOLS)})",
                  file=sys.stderr)
            return 2
        print(__doc__ + f"\nFormats: {known}\nOther subcommands: {', '.join(TOOLS)}")
        return 0
    fmt = argv[0]
    module, parser = build_parser(fmt)
    args = parser.parse_args(argv[1:])
    args.format = fmt
    args.name = os.path.basename(os.path.normpath(args.out))
    command = "python -m recbole_psrq.convert " + " ".join(shlex.quote(a) for a in argv)
    try:
        stats = module.convert(args, command)
    except PSRQError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if hasattr(module, "summary"):
        print(module.summary(args.out, stats))
    else:
        print(f"{args.out}: {stats.get('users')} users, {stats.get('items')} items, {stats.get('rows')} rows; "
              f"see {os.path.join(args.out, 'README.md')}")
    return 0

