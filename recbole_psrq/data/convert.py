"""One command for every supported public music dataset -> RecBole atomic files + item text/features.

    python -m recbole_psrq.data.convert <format> --src RAW_DIR --out OUT_DIR [options]
    python -m recbole_psrq.data.convert <format> --help        # the format's own options

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
    "music4all": "recbole_psrq.data.converters.music4all",
    "music4all-onion": "recbole_psrq.data.converters.music4all_onion",
    "hetrec-lastfm": "recbole_psrq.data.converters.hetrec_lastfm",
    "lastfm-1k": "recbole_psrq.data.converters.lastfm_1k",
    "lfm-1b": "recbole_psrq.data.converters.lfm",
    "lfm-2b": "recbole_psrq.data.converters.lfm",
    "amazon2023": "recbole_psrq.data.converters.amazon2023",
    "mpd": "recbole_psrq.data.mpd",
}


def build_parser(fmt):
    module = importlib.import_module(FORMATS[fmt])
    parser = argparse.ArgumentParser(prog=f"python -m recbole_psrq.data.convert {fmt}",
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
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in FORMATS:
        known = ", ".join(FORMATS)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: unknown format '{argv[0]}'; supported: {known}", file=sys.stderr)
            return 2
        print(__doc__ + f"\nFormats: {known}")
        return 0
    fmt = argv[0]
    module, parser = build_parser(fmt)
    args = parser.parse_args(argv[1:])
    args.format = fmt
    args.name = os.path.basename(os.path.normpath(args.out))
    command = "python -m recbole_psrq.data.convert " + " ".join(shlex.quote(a) for a in argv)
    try:
        stats = module.convert(args, command)
    except PSRQError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {stats.get('users')} users, {stats.get('items')} items, {stats.get('rows')} rows; "
          f"see {os.path.join(args.out, 'README.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
