"""What subnormal floats cost a training step on the CPU, and what ``flush_denormal: True`` gives back.

    python benchmarks/bench_denormal.py                     # RecBole's DIEN attention MLP, ~1 min
    python benchmarks/bench_denormal.py --state RUN.work/resume.pth --dataset mpd-5k \\
        --config_files results/mpd-5k-uniform/tuned/converge/DIEN.yaml --data_path converted

Weight decay can shrink a layer that stopped mattering until the products through it are subnormal
(below float32's smallest normal, 1.18e-38), which x86 CPUs compute tens of times slower. Seen in the
MPD-5k study: RecBole's DIEN (tuned weight decay 1e-4) spent 600-740 s on its 2nd-4th epochs against
150-190 s on the others, its attention MLP's weights having shrunk to a median |w| of 1.4e-21 by the
3rd epoch (measured in a resume state).

Default: RecBole's DIEN attention MLP (``SequenceAttLayer``'s layers: [4 x 64] -> 128 -> 64, sigmoid, then
a 1-unit dense layer) on 1,024 rows x 20 history steps, forward and backward (its input requires a
gradient, as the embeddings do in DIEN), once at initialisation and once with every weight at the
magnitudes measured in that state (log-uniform between each tensor's measured smallest and largest |w|,
random signs). ``--state``: instead, real training batches (forward, backward, no optimiser step: the
same weights each pass) of the model in a run's ``resume.pth`` (recbole_psrq/resume.py).

Each case alternates flush off / on ``--repeats`` times on the same inputs and keeps the median CPU
time per step (process time, so other jobs on the machine do not count); 1 torch thread, which
``flush_denormal`` needs (torch sets it for the calling thread only).
"""
import argparse
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# |w| range (smallest, largest) of DIEN's attention MLP in the resume state of an MPD-5k DIEN run
# (uniform negatives, seed 1) after its 3rd epoch; dense layer: weight and bias
DECAYED_RANGES = {
    "att_mlp_layers.mlp_layers.1.weight": (1.8e-30, 4.5e-13),
    "att_mlp_layers.mlp_layers.1.bias": (7.4e-27, 1.9e-05),
    "att_mlp_layers.mlp_layers.4.weight": (1.9e-19, 2.6e-12),
    "att_mlp_layers.mlp_layers.4.bias": (1.8e-14, 7.1e-04),
    "dense.weight": (9.5e-09, 4.3e-06),
    "dense.bias": (1.5e-05, 1.5e-05),
}


def attention_case(decayed, rows, seed=0):
    """DIEN's attention MLP and one (input, step) on it; ``decayed``: weights at the measured magnitudes."""
    import torch
    from recbole.model.layers import MLPLayers

    torch.manual_seed(seed)
    embedding = 64
    mlp = MLPLayers([4 * embedding, 128, 64], activation="sigmoid", bn=False)
    dense = torch.nn.Linear(64, 1)
    layers = torch.nn.ModuleDict({"att_mlp_layers": mlp, "dense": dense})
    if decayed:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, tensor in layers.named_parameters():
                low, high = (torch.tensor(v).log10() for v in DECAYED_RANGES[name])
                exponent = low + (high - low) * torch.rand(tensor.shape, generator=generator)
                sign = torch.randint(0, 2, tensor.shape, generator=generator) * 2 - 1
                tensor.copy_(sign * 10 ** exponent)
    queries_keys = torch.randn(rows, 4 * embedding, generator=torch.Generator().manual_seed(seed + 1))
    queries_keys.requires_grad_(True)

    def step():
        layers.zero_grad(set_to_none=True)
        queries_keys.grad = None
        dense(mlp(queries_keys)).sum().backward()

    return step


def state_case(args):
    """Real training batches of the model in a resume state (forward + backward, weights unchanged)."""
    import torch
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_psrq import quick_start

    overrides = {"torch_threads": 1}
    if args.data_path:
        overrides["data_path"] = os.path.abspath(args.data_path)
    state = torch.load(args.state, map_location="cpu", weights_only=False)
    config = quick_start.build_config(args.model, args.dataset, args.config_files, overrides)
    init_seed(config["seed"], config["reproducibility"])
    train_data, _, _ = data_preparation(config, quick_start.create_dataset(config))
    model = quick_start.resolve_model(args.model)(config, train_data._dataset)
    model.load_state_dict(state["model"])
    model.train()
    batches = []
    for batch in train_data:
        batches.append(batch)
        if len(batches) == args.batches:
            break
    position = [0]

    def step():
        model.zero_grad(set_to_none=True)
        loss = model.calculate_loss(batches[position[0] % len(batches)])
        (sum(loss) if isinstance(loss, tuple) else loss).backward()
        position[0] += 1

    return step


def cpu_seconds_per_step(step, flush, steps):
    from recbole_psrq.quick_start import torch_settings

    with torch_settings({"torch_threads": 1, "flush_denormal": flush}):  # as a run sets them
        step()  # warm-up
        start = time.process_time()
        for _ in range(steps):
            step()
        return (time.process_time() - start) / steps


def measure(name, step, steps, repeats):
    times = {False: [], True: []}
    for _ in range(repeats):
        for flush in (False, True):
            times[flush].append(cpu_seconds_per_step(step, flush, steps))
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"| {name} | {off:.4f} | {on:.4f} | {off / on:.1f} |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1024 * 20, help="attention rows (batch x history)")
    parser.add_argument("--steps", type=int, default=3, help="steps per timing")
    parser.add_argument("--repeats", type=int, default=3, help="off/on alternations (median kept)")
    parser.add_argument("--state", help="a run's resume.pth: time its model on real batches instead")
    parser.add_argument("--model", default="DIEN")
    parser.add_argument("--dataset")
    parser.add_argument("--config_files", nargs="*", default=[])
    parser.add_argument("--data_path")
    parser.add_argument("--batches", type=int, default=4, help="real batches cycled through (--state)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    if not torch.set_flush_denormal(False):
        sys.exit("this CPU cannot flush subnormals (torch.set_flush_denormal needs x86 SSE3 or ARM64)")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread; "
          f"median of {args.repeats} x {args.steps} steps\n")
    print("| case | CPU s/step, subnormals computed | flushed to zero | ratio |\n|---|---:|---:|---:|")
    if args.state:
        measure(f"{args.model}, {args.batches} real batches of {os.path.basename(args.state)}",
                state_case(args), args.steps, args.repeats)
    else:
        measure("DIEN attention MLP, initialised", attention_case(False, args.rows), args.steps, args.repeats)
        measure("DIEN attention MLP, decayed weights", attention_case(True, args.rows), args.steps, args.repeats)


if __name__ == "__main__":
    main()
