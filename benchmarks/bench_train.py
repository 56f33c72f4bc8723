"""Training-step time of MCCA vs DIN on identical batches, and MCCA's full-sort cost.

    python benchmarks/bench_train.py                       # defaults below, ~2-4 min on 2 cores
    python benchmarks/bench_train.py --steps 30 --threads 2 --items 20000

Data: a generated labeled dataset (``--users`` x ``--rows``, ``--items`` items with Zipf popularity,
random 0/1 labels, level-prefixed text/audio/joint SIDs, k=64, L=3) written to a temp folder, so the
benchmark depends on nothing else in the repository. Each codebook's SIDs are drawn from a pool of
``--sid-share`` x items random SID tuples: the default 0.052 is the default dataset's collision rate
(156 distinct joint PSRQ SIDs for its 3,000 tracks), which is what the full sort shares work over.
Both models get the SID fields as item features (DIN pools each SID token_seq with its
``properties/model/DIN.yaml`` setting, so it attends over [item, text SID, audio SID, joint SID];
MCCA attends per codebook), history length
MAX_ITEM_LIST_LENGTH = 20 (positive-only histories of the ctr protocol), the same Adam optimiser,
batch size ``--batch-size``. The models alternate step by step over the same list of batches (so a
change in machine load hits both), after ``--warmup`` steps each; the median per step is reported.

Full sort: ``MCCA.full_sort_predict`` (the SID branches once per distinct query SID) against
``MCCA.full_sort_predict_per_pair`` (every branch per (row, item) pair) for ``--sort-rows`` history rows
over all items at the default chunk: time per pair of each, the speed-up, the largest score difference,
the same for ``full_sort_bf16``, and the shared path called with one row at a time (as RecBole's
top-k evaluation calls it when ``eval_batch_size`` < 2 x items). Then time and peak resident memory of
``full_sort_predict`` (free heap returned with malloc_trim, VmHWM reset via /proc/self/clear_refs, peak
minus the RSS before the call; it includes the (rows x items) score matrix) for several
``full_sort_chunk_size`` values; peak memory follows the chunk, not the catalogue size.
"""
import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def write_data(folder, n_users, n_items, n_rows, sid_share, seed=0, codebook=64, levels=3):
    rng = np.random.default_rng(seed)
    name = "benchtrain"
    path = os.path.join(folder, name)
    os.makedirs(path, exist_ok=True)
    users = np.sort(rng.integers(0, n_users, n_rows))
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(n_items, size=n_rows, p=popularity / popularity.sum())
    labels = rng.integers(0, 2, n_rows)
    stamps = np.arange(n_rows)  # exact in float32, as RecBole stores times: ties would shorten histories
    with open(os.path.join(path, f"{name}.inter"), "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\tlabel:float\n")
        for u, i, t, y in zip(users, items, stamps, labels):
            f.write(f"u{u}\ti{i}\t{t}\t{y}\n")
    # per codebook: a pool of distinct SID tuples, one drawn per item
    n_sids = max(1, round(sid_share * n_items))
    pools = [[" ".join(f"l{j + 1}_{c}" for j, c in enumerate(row)) for row in
              np.unique(rng.integers(0, codebook, (n_sids, levels)), axis=0)] for _ in range(3)]
    with open(os.path.join(path, f"{name}.item"), "w") as f:
        f.write("item_id:token\ttext_sid:token_seq\taudio_sid:token_seq\tjoint_sid:token_seq\n")
        for i in range(n_items):
            sids = ["l1_unk l2_unk l3_unk" if z == 1 and i % 10 == 0 else pool[rng.integers(len(pool))]
                    for z, pool in enumerate(pools)]
            f.write(f"i{i}\t" + "\t".join(sids) + "\n")
    return name


def overrides(data_path, args):
    return {"data_path": data_path, "train_batch_size": args.batch_size, "eval_batch_size": 4096,
            "MAX_ITEM_LIST_LENGTH": 20, "sid_modalities": [], "sid_report_label_column": None,
            "mcca_modalities": ["text", "audio"],
            "load_col": {"inter": ["user_id", "item_id", "timestamp", "label"],
                         "item": ["item_id", "text_sid", "audio_sid", "joint_sid"]}}


def current_rss_kb():
    return int(re.search(r"VmRSS:\s+(\d+)", open("/proc/self/status").read()).group(1))


def peak_rss_kb():
    return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1))


def release_free_heap():
    """Return freed heap pages to the OS (glibc malloc_trim), so RSS deltas show live memory."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--rows", type=int, default=100000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20, help="measured steps per model")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sid-share", type=float, default=0.052,
                        help="distinct SIDs per item of each codebook (default: the default dataset's joint SIDs)")
    parser.add_argument("--sort-rows", type=int, default=16)
    parser.add_argument("--chunks", type=int, nargs="+", default=[512, 1024, 4096, 32768])
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    import recbole
    from recbole.data import data_preparation
    from recbole.data.interaction import Interaction

    from recbole.data.dataset import SequentialDataset

    from recbole_psrq import quick_start
    from recbole_psrq.data.history import PositiveHistoryMixin
    from recbole_psrq.model.mcca import MCCA

    class BenchDataset(PositiveHistoryMixin, SequentialDataset):
        """positive-only histories (the ctr protocol's); SIDs come from the .item file"""

    print(f"python {platform.python_version()}, torch {torch.__version__}, recbole {recbole.__version__}, "
          f"numpy {np.__version__}; torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.2f} (start)")
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)  # RecBole may write log/ and saved/ relative to the CWD
        try:
            name = write_data(tmp, args.users, args.items, args.rows, args.sid_share)
            mcca_config = quick_start.build_config("MCCA", dataset=name, overrides=overrides(tmp, args))
            din_config = quick_start.build_config("DIN", dataset=name, overrides=overrides(tmp, args))
            dataset = BenchDataset(mcca_config)
            train, _, _ = data_preparation(mcca_config, dataset)
            need = args.warmup + args.steps
            batches = []
            while len(batches) < need:
                for batch in train:
                    batches.append(batch)
                    if len(batches) == need:
                        break
            mean_len = float(torch.cat([b["item_length"].float() for b in batches]).mean())
            print(f"data: {len(dataset)} rows, {dataset.item_num - 1} items, batch {args.batch_size}, "
                  f"history <= 20 (mean length {mean_len:.1f})")

            torch.manual_seed(0)
            models = {"MCCA": MCCA(mcca_config, train._dataset),
                      "DIN": quick_start.resolve_model("DIN")(din_config, train._dataset)}
            optims = {k: torch.optim.Adam(m.parameters(), lr=1e-3) for k, m in models.items()}
            times = {k: [] for k in models}
            for step, batch in enumerate(batches):
                for key in (("MCCA", "DIN") if step % 2 == 0 else ("DIN", "MCCA")):
                    model, opt = models[key], optims[key]
                    model.train()
                    t0 = time.perf_counter()
                    opt.zero_grad()
                    loss = model.calculate_loss(batch)
                    loss.backward()
                    opt.step()
                    if step >= args.warmup:
                        times[key].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) * 1000 for k, v in times.items()}
            params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
            for k in models:
                q1, q3 = np.percentile(np.array(times[k]) * 1000, [25, 75])
                print(f"train step {k:5s}: median {med[k]:7.1f} ms  (IQR {q1:.1f}-{q3:.1f}, "
                      f"{len(times[k])} steps), {params[k]:,} parameters")
            print(f"ratio MCCA / DIN per training step: {med['MCCA'] / med['DIN']:.2f}  (target <= 1.5)")

            model = models["MCCA"].eval()
            rows = Interaction({k: batches[0][k][:args.sort_rows] for k in ("item_id_list", "item_length")})
            n_items = model.n_items
            T, H = 20, sum(model.attention_hidden_size)
            naive_mb = args.sort_rows * n_items * T * H * 4 / 2**20
            joint = model.joint_sid_tokens[1:]  # the real items' joint SIDs: the SID branches' queries
            distinct = len(torch.unique(joint, dim=0))
            print(f"full sort: {args.sort_rows} rows x {n_items} items, {distinct} distinct joint SIDs "
                  f"({distinct / len(joint):.1%} of the items)")
            pairs = args.sort_rows * n_items
            scores, seconds = {}, {}
            with torch.no_grad():
                for key, run, bf16 in (("per pair", model.full_sort_predict_per_pair, False),
                                       ("shared", model.full_sort_predict, False),
                                       ("bf16", model.full_sort_predict, True)):
                    model.full_sort_bf16 = bf16
                    t0 = time.perf_counter()
                    scores[key] = run(rows)
                    seconds[key] = time.perf_counter() - t0
                model.full_sort_bf16 = False
                # RecBole's top-k evaluation passes eval_batch_size // items rows per call: often one
                t0 = time.perf_counter()
                for r in range(args.sort_rows):
                    model.full_sort_predict(rows[r:r + 1])
                seconds["1 row/call"] = time.perf_counter() - t0
            for key, value in seconds.items():
                print(f"full sort {key:10s}: {value:6.2f} s, {value / pairs * 1e6:5.2f} us per (row, item) pair, "
                      f"speed-up {seconds['per pair'] / value:.2f}x over per pair")
            print(f"full sort shared vs per pair: max |score difference| "
                  f"{(scores['shared'] - scores['per pair']).abs().max():.2e} (speed-up target >= 3x)")
            bf16_error = (scores["bf16"] - scores["shared"]).abs()
            print(f"full sort bf16 vs fp32 shared: |score difference| max {bf16_error.max():.2e}, "
                  f"mean {bf16_error.mean():.2e}")
            print(f"full sort: {args.sort_rows} rows x {n_items} items; an unchunked branch would hold "
                  f"~{naive_mb:,.0f} MiB of activation-unit hidden states; scores alone "
                  f"{args.sort_rows * n_items * 4 / 2**20:.1f} MiB")
            for chunk in args.chunks:
                model.full_sort_chunk_size = chunk
                with torch.no_grad():
                    release_free_heap()
                    base = current_rss_kb()
                    can_reset = reset_peak()
                    t0 = time.perf_counter()
                    scores = model.full_sort_predict(rows)
                    elapsed = time.perf_counter() - t0
                    peak = peak_rss_kb() - base if can_reset else float("nan")
                del scores
                print(f"full sort chunk {chunk:6d} pairs: {elapsed:6.2f} s "
                      f"({elapsed / args.sort_rows * 1000:.1f} ms per row), peak RSS +{peak / 1024:.0f} MiB")
            print(f"load average {os.getloadavg()[0]:.2f} (end)")
        finally:
            os.chdir(cwd)


if __name__ == "__main__":
    main()
