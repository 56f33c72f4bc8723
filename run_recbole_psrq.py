"""Train and evaluate a model, RecBole-style.

    python run_recbole_psrq.py --model=MCCA
    python run_recbole_psrq.py --model=DIN --dataset=synthetic_music --config_files="a.yaml b.yaml"
    python run_recbole_psrq.py --model=SASRec --epochs=5 --seed=1
    python run_recbole_psrq.py --checkpoint=saved/DIN-Nov-23-2026_01-00-00-4242-1a2b3c4d.pth
    python run_recbole_psrq.py --model=MCCA --nproc=2                     # DDP: 2 processes here
    python run_recbole_psrq.py --model=MCCA --nproc=2 --world_size=4 --ip=10.0.0.1 --port=5678 --group_offset=2

Any other --key=value is a RecBole config override. Prints the test metrics as the final line and
writes them as JSON next to the log file. Each run's log, JSON and checkpoint carry its own run id
(time, process id, random part), so runs started together never share a file.

DDP (RecBole's argument names; gloo on CPU, NCCL on CUDA): --nproc processes on this machine,
--world_size processes on all machines (default nproc), --ip/--port of the machine holding rank 0
(default 127.0.0.1:5678), --group_offset = the rank of this machine's first process. Only rank 0
prints, logs and writes the checkpoint; see recbole_psrq/distributed.py.
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
    ddp = parser.add_argument_group("distributed data-parallel training (RecBole's names)")
    ddp.add_argument("--nproc", default=1, help="processes on this machine (default 1)")
    ddp.add_argument("--world_size", default=-1,
                     help="processes on all machines together (default: nproc)")
    ddp.add_argument("--ip", default=None, help="address of the machine holding rank 0 (default 127.0.0.1)")
    ddp.add_argument("--port", default=None, help="its free TCP port for the rendezvous (default 5678)")
    ddp.add_argument("--group_offset", default=0, help="global rank of this machine's first process")
    args, unknown = parser.parse_known_args(argv)
    overrides = {}
    for item in unknown:
        if not item.startswith("--") or "=" not in item:
            parser.error(f"unrecognised argument {item!r}; overrides are written --key=value")
        key, value = item[2:].split("=", 1)
        overrides[key] = value
    if args.model is None and args.checkpoint is None:
        parser.error("give --model=NAME (e.g. --model=MCCA) or --checkpoint=PATH")
    for key in ("local_rank", "offset", "single_spec"):
        if key in overrides:
            parser.error(f"--{key} is set by the DDP launcher; use --nproc, --world_size, --ip, --port "
                         "and --group_offset")
    from recbole_psrq.distributed import normalise_args

    try:
        args.distributed = normalise_args(args.nproc, args.world_size, args.ip, args.port,
                                          args.group_offset)
    except PSRQError as e:
        parser.error(str(e))
    if args.distributed and args.checkpoint:
        parser.error("--checkpoint evaluates in one process; drop --nproc/--world_size/--ip/--port")
    return args, overrides


def main(argv=None):
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    from recbole_psrq import quick_start

    try:
        if args.checkpoint:
            test_result = quick_start.evaluate_checkpoint(args.checkpoint, overrides)
        elif args.distributed:
            from recbole_psrq.distributed import launch

            result = launch(quick_start.run, args.model, args.dataset, args.config_files.split(), overrides,
                            **args.distributed)
            if result is None:  # this machine holds no rank 0: it prints nothing
                return 0
            test_result = result["test_result"]
            print(f"results written to {result['result_file']}")
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
