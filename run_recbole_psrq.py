"""Train and evaluate a model, RecBole-style.

    python run_recbole_psrq.py --model=MCCA
    python run_recbole_psrq.py --model=DIN --dataset=synthetic_music --config_files="a.yaml b.yaml"
    python run_recbole_psrq.py --model=SASRec --epochs=5 --seed=1
    python run_recbole_psrq.py --checkpoint=saved/DIN-Nov-23-2026_01-00-00-4242-1a2b3c4d.pth

Any other --key=value is a RecBole config override. Prints the test metrics as the final line and
writes them as JSON next to the log file. Each run's log, JSON and checkpoint carry its own run id
(time, process id, random part), so runs started together never share a file.
"""
import argparse
import sys

from recbole_psrq.errors import PSRQError


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", default=None, help="model name (ours, then RecBole's)")
    parser.add_argument("--dataset", "-d", default=None, help="dataset name (default: synthetic_music)")
    parser.add_argument("--config_files", default="", help="space-separated yaml files")
    parser.add_argument("--checkpoint", default=None,
                        help="evaluate a saved checkpoint on test instead of training")
    args, unknown = parser.parse_known_args(argv)
    overrides = {}
    for item in unknown:
        if not item.startswith("--") or "=" not in item:
            parser.error(f"unrecognised argument {item!r}; overrides are written --key=value")
        key, value = item[2:].split("=", 1)
        overrides[key] = value
    if args.model is None and args.checkpoint is None:
        parser.error("give --model=NAME (e.g. --model=MCCA) or --checkpoint=PATH")
    return args, overrides


def main(argv=None):
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    from recbole_psrq import quick_start

    try:
        if args.checkpoint:
            test_result = quick_start.evaluate_checkpoint(args.checkpoint, overrides)
        else:
            result = quick_start.run(args.model, args.dataset, args.config_files.split(), overrides)
            test_result = result["test_result"]
            print(f"results written to {result['result_file']}")
    except PSRQError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("test result: " + quick_start.format_metrics(test_result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
