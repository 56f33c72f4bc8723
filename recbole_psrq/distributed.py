"""Distributed data-parallel (DDP) training for the runner, on CPU (gloo) and CUDA (NCCL).

    python run_recbole_psrq.py --model=MCCA --nproc=2                        # one machine, 2 processes
    python run_recbole_psrq.py --model=MCCA --nproc=2 --world_size=4 --ip=10.0.0.1 --port=5678 \\
        --group_offset=0                                                     # machine 1 of 2 (ranks 0, 1)
    python run_recbole_psrq.py --model=MCCA --nproc=2 --world_size=4 --ip=10.0.0.1 --port=5678 \\
        --group_offset=2                                                     # machine 2 of 2 (ranks 2, 3)

The argument names are RecBole's (``run_recbole.py``); what differs from RecBole 1.2.1's own DDP:

* **Backend by device**: gloo when the run's device is the CPU, NCCL on CUDA (RecBole hard-codes NCCL
  and ``cuda:<local_rank>``). A CUDA run needs at least ``nproc`` visible GPUs (``gpu_id``).
* **Training**: every rank builds the model with its own seed, then DDP broadcasts rank 0's parameters;
  each rank trains on its share of every batch (RecBole's ``DistributedSampler``, ``train_batch_size /
  world_size`` rows per rank, so one step still sees ``train_batch_size`` rows) and gradients are
  averaged. No ``SyncBatchNorm`` on CPU (torch has none there): batch-norm layers normalise per rank.
* **Evaluation** (:meth:`DistributedTrainer.evaluate`): the evaluation batches are exactly those of a
  single process (``eval_batch_size`` rows each); rank r scores batches r, r + W, r + 2W, ... with rank
  0's weights (broadcast first), collects their per-row values, and rank 0 puts every batch back in
  order and computes **every metric once on all rows** (RecBole's and ``evaluation.py``'s). No row is
  scored twice (RecBole pads with duplicate users) and nothing is averaged per rank (RecBole's
  ``_map_reduce``), so the result equals single-process evaluation of the same weights. Rank 0 sends it
  to the other ranks, so early stopping decides the same everywhere.
* **Data and SIDs**: the first process of each machine (rank 0 on the first) builds the dataset first,
  fitting and caching the SIDs; the others wait, then build it (a cache hit). Every rank then checks
  that it holds the same test rows and SID fields as rank 0 (a different cache on another machine is an
  error, not a silent difference).
* **Outputs**: only rank 0 logs to a file, writes the checkpoint (a plain ``state_dict``, no
  ``module.`` prefix, loadable by a single process) and the result JSON; the run id is rank 0's.
"""
import datetime
import gc
import hashlib
import ipaddress
import os
import socket

from recbole_psrq.errors import ConfigError, PSRQError

DEFAULT_IP = "127.0.0.1"
DEFAULT_PORT = 5678


# ---------------------------------------------------------------------- arguments
def normalise_args(nproc=1, world_size=-1, ip=None, port=None, group_offset=0):
    """Check RecBole's DDP arguments; return None for a single-process run, else a dict with
    ``nproc``, ``world_size``, ``ip``, ``port``, ``group_offset``. Raises :class:`ConfigError`."""
    nproc = _as_int("nproc", nproc)
    world_size = _as_int("world_size", world_size)
    group_offset = _as_int("group_offset", group_offset)
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1 (processes on this machine), got {nproc}.")
    if world_size == -1:
        world_size = nproc
    if world_size < 1:
        raise ConfigError(f"--world_size must be at least 1 (processes on all machines together, default "
                          f"--nproc), got {world_size}.")
    if world_size < nproc:
        raise ConfigError(f"--world_size={world_size} is smaller than --nproc={nproc}: world_size counts the "
                          "processes of every machine, so it is at least this machine's nproc. Omit "
                          "--world_size on one machine.")
    if not 0 <= group_offset <= world_size - nproc:
        raise ConfigError(
            f"--group_offset={group_offset} does not fit: this machine's ranks are group_offset .. "
            f"group_offset + nproc - 1, which must lie in 0 .. world_size - 1 = {world_size - 1} (nproc "
            f"{nproc}). Give the first machine --group_offset=0 and each next one the previous offset plus the "
            "previous machine's nproc.")
    if world_size == 1:
        if ip is not None or port is not None:
            raise ConfigError("--ip/--port are for distributed runs; add --nproc=N (N > 1) or --world_size.")
        return None
    if world_size > nproc and ip is None:
        raise ConfigError(f"--world_size={world_size} spans several machines (--nproc={nproc} here): give "
                          "--ip=<address of the machine holding rank 0> and --port, the same on every machine.")
    ip = DEFAULT_IP if ip is None else str(ip)
    if not ip or any(c.isspace() for c in ip) or ":" in ip.strip("[]") and not _is_ipv6(ip):
        raise ConfigError(f"--ip={ip!r} is not a host name or address.")
    port = DEFAULT_PORT if port is None else _as_int("port", port)
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be a TCP port (1..65535), got {port}.")
    return {"nproc": nproc, "world_size": world_size, "ip": ip, "port": port,
            "group_offset": group_offset}


def _as_int(name, value):
    try:
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise ValueError
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"--{name} must be an integer, got {value!r}.") from None


def _is_ipv6(ip):
    try:
        return ipaddress.ip_address(ip.strip("[]")).version == 6
    except ValueError:
        return False


def _is_loopback(ip):
    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip.strip("[]")).is_loopback
    except ValueError:
        return False


def free_port(ip=DEFAULT_IP):
    """A TCP port free on ``ip`` right now (for tests and local runs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------- launching
def launch(target, model, dataset=None, config_files=(), overrides=None, saved=True, *, nproc, world_size,
           ip, port, group_offset):
    """Start ``nproc`` processes on this machine (ranks group_offset .. group_offset + nproc - 1), each
    running ``target(model, dataset, config_files, overrides, saved=saved, distributed=...)``
    (:func:`recbole_psrq.quick_start.run`, passed in: this module does not import the runner); return
    rank 0's result (None on a machine without rank 0). A :class:`PSRQError` in any process is raised
    here, naming the rank."""
    import torch.multiprocessing as mp

    spec = {"nproc": nproc, "world_size": world_size, "ip": ip, "port": port, "group_offset": group_offset}
    if world_size == nproc and _is_loopback(ip):
        # one machine: keep gloo's connections on the loopback interface (else it picks the interface
        # the host name resolves to)
        os.environ.setdefault("GLOO_SOCKET_IFNAME", _loopback_interface())
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    failure = None
    try:
        mp.spawn(_worker, args=(queue, target, model, dataset, list(config_files), dict(overrides or {}),
                                saved, spec), nprocs=nproc, join=True)
    except Exception as e:  # noqa: BLE001 -- a child's PSRQError is reported through the queue
        failure = e
    result, errors = None, []
    while not queue.empty():
        kind, rank, payload = queue.get()
        if kind == "result":
            result = payload
        else:
            errors.append((rank, payload))
    if errors:
        rank, message = sorted(errors)[0]
        raise ConfigError(f"rank {rank}: {message}")
    if failure is not None:
        raise failure
    return result


def _loopback_interface():
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        names = []
    return "lo" if "lo" in names or not names else next((n for n in names if n.startswith("lo")), "lo")


def _worker(local_rank, queue, target, model, dataset, config_files, overrides, saved, spec):
    spec = dict(spec, local_rank=local_rank)
    rank = spec["group_offset"] + local_rank
    try:
        result = target(model, dataset, config_files, overrides, saved=saved, distributed=spec)
    except PSRQError as e:
        queue.put(("error", rank, str(e)))
        raise SystemExit(2)
    if rank == 0:
        queue.put(("result", rank, result))


# ---------------------------------------------------------------------- inside one process
class Context:
    """One process's place in the group: ``rank`` (global), ``local_rank``, ``world_size``, ``device``."""

    def __init__(self, spec):
        self.spec = dict(spec)
        self.local_rank = int(spec["local_rank"])
        self.rank = int(spec["group_offset"]) + self.local_rank
        self.world_size = int(spec["world_size"])
        self.backend = None
        self.device = None

    @property
    def is_main(self):
        return self.rank == 0

    def setup(self, config):
        """Choose the device and backend, set RecBole's DDP keys on ``config`` and join the group."""
        import torch
        import torch.distributed as dist

        device = config["device"]
        if device.type == "cuda":
            visible = torch.cuda.device_count()
            if visible < self.spec["nproc"]:
                raise ConfigError(
                    f"--nproc={self.spec['nproc']} on CUDA needs one GPU per process, but {visible} "
                    f"{'is' if visible == 1 else 'are'} visible (gpu_id={config['gpu_id']!r}): set "
                    "--gpu_id=0,1,... with at least nproc ids, or --nproc to the number of GPUs.")
            self.backend, self.device = "nccl", torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        else:
            self.backend, self.device = "gloo", torch.device("cpu")
            if not config["torch_threads"]:
                # the processes share the machine's cores; torch's default would oversubscribe them
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(self.spec["nproc"])))
        config["device"] = self.device
        config["single_spec"] = False
        config["local_rank"] = self.local_rank
        config["world_size"] = self.world_size
        config["nproc"] = self.spec["nproc"]
        config["ip"] = self.spec["ip"]
        config["port"] = self.spec["port"]
        config["offset"] = self.spec["group_offset"]
        if not self.is_main:  # as RecBole: only rank 0 reports
            config["show_progress"] = False
        timeout = datetime.timedelta(seconds=float(config["ddp_timeout"] or 1800))
        dist.init_process_group(backend=self.backend, init_method=f"tcp://{_host(self.spec['ip'])}:"
                                f"{self.spec['port']}", rank=self.rank, world_size=self.world_size,
                                timeout=timeout)
        return self

    def teardown(self):
        import torch.distributed as dist

        # The run's DDP model and reducer sit in reference cycles (trainer <-> its hooks) that still hold the
        # process group; collected only at interpreter exit, gloo's threads are destroyed there and the
        # process aborts ("terminate called without an active exception", SIGABRT; 1 run in ~10).
        gc.collect()
        if dist.is_initialized():
            dist.destroy_process_group()

    def broadcast(self, value):
        """Rank 0's ``value`` on every rank."""
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_ok(self, ok_on_main):
        """Rank 0's verdict on every rank (so every rank raises together instead of waiting)."""
        return bool(self.broadcast(bool(ok_on_main) if self.is_main else None))

    def build_dataset(self, build):
        """The first process of each machine builds first (fits and caches the SIDs), the others wait
        and then build (cache hit); every rank must then hold rank 0's data."""
        import torch.distributed as dist

        first = self.local_rank == 0
        if not first:
            dist.barrier()
        try:
            data = build()
        finally:
            if first:
                dist.barrier()
        digests = [None] * self.world_size
        dist.all_gather_object(digests, dataset_digest(data))
        different = [r for r, d in enumerate(digests) if d != digests[0]]
        if different:
            raise ConfigError(
                f"ranks {different} built other data than rank 0 (test rows or SID fields differ): "
                "every machine must read the same dataset and the same SID cache (sid_cache_dir on a "
                "shared file system, or copied from the machine of rank 0 before the run).")
        return data

    def weights_in_sync(self, model):
        """True when every rank holds rank 0's parameters bit for bit (the gradients were averaged)."""
        import torch
        import torch.distributed as dist

        h = hashlib.sha256()  # parameters only: buffers (batch-norm statistics) are rank 0's at evaluation
        for name, tensor in model.named_parameters():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        digests = [None] * self.world_size
        dist.all_gather_object(digests, h.hexdigest())
        return all(d == digests[0] for d in digests)

    def quiet_logging(self):
        """Ranks > 0 log nothing but errors, to no file (rank 0 writes the log)."""
        import logging

        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        root.setLevel(logging.ERROR)


def _host(ip):
    return f"[{ip.strip('[]')}]" if _is_ipv6(ip) else ip


def dataset_digest(data):
    """sha256 of the test rows' digest and every SID item field: equal on ranks that hold the same data."""
    import numpy as np

    h = hashlib.sha256()
    h.update(repr((len(data), (getattr(data, "protocol_report", None) or {}).get("test_digest"))).encode())
    item_feat = getattr(data, "item_feat", None)
    if item_feat is not None:
        for field in sorted(f for f in item_feat.columns if f.endswith("_sid")):
            column = item_feat[field]  # a tensor (Interaction) or a pandas Series of arrays
            values = column.to_numpy() if hasattr(column, "to_numpy") else column.numpy()
            h.update(field.encode())
            for value in values:
                h.update(np.ascontiguousarray(np.asarray(value)).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------- the trainer
class _NullBoard:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def distributed_trainer(trainer_class, config, model, context):
    """An instance of ``trainer_class`` (RecBole's trainer for the model) made data-parallel: see the
    module docstring. Only trainers that evaluate with RecBole's ``Trainer.evaluate`` are supported."""
    from unittest import mock

    import recbole.trainer.trainer as recbole_trainer

    if trainer_class.evaluate is not recbole_trainer.Trainer.evaluate:
        raise ConfigError(f"DDP (--nproc/--world_size) is not supported for {config['model']}: its trainer "
                          f"{trainer_class.__name__} evaluates in its own way. Run it in one process.")
    _install_evaluate()
    cls = type(f"Distributed{trainer_class.__name__}", (_DistributedMixin, trainer_class), {})
    board = mock.patch.object(recbole_trainer, "get_tensorboard", lambda logger: _NullBoard()) \
        if not context.is_main else _nullcontext()
    with board:
        return cls(config, model, context)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


class _DistributedMixin:
    def __init__(self, config, model, context):
        import torch
        from torch.nn.parallel import DistributedDataParallel

        self.context = context
        # RecBole's AbstractTrainer would wrap the model for NCCL/CUDA only (device_ids=[local_rank],
        # SyncBatchNorm): build as a single process, then wrap for the actual device
        config["single_spec"] = True
        try:
            super().__init__(config, model)
        finally:
            config["single_spec"] = False
        cuda = context.device.type == "cuda"
        if cuda:
            converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            if converted is not self.model:
                raise ConfigError(f"{config['model']} is a bare batch-norm layer; DDP cannot wrap it.")
        self.distributed_model = DistributedDataParallel(
            self.model, device_ids=[context.device.index] if cuda else None)
        self._reduce_hook_set = False
        step = self.optimizer.step

        def synced_step(*args, **kwargs):
            if not self._reduce_hook_set:
                raise ConfigError(
                    f"DDP: the training loop of {type(self).__mro__[2].__name__} did not synchronise the "
                    "gradients (it never calls set_reduce_hook), so the ranks would drift apart. Run "
                    f"{config['model']} in one process.")
            self._reduce_hook_set = False
            return step(*args, **kwargs)

        self.optimizer.step = synced_step

    def _save_checkpoint(self, *args, **kwargs):
        # RecBole lets every process with local_rank 0 save, i.e. one per machine: rank 0 only
        if self.context.is_main:
            return super()._save_checkpoint(*args, **kwargs)
        return None

    def set_reduce_hook(self):
        super().set_reduce_hook()
        self._reduce_hook_set = True

    def _broadcast_model(self, load_file=None):
        """Every rank gets rank 0's weights: from ``load_file`` (read by rank 0 only) or its memory."""
        import torch
        import torch.distributed as dist

        other = None
        if load_file is not None and self.context.is_main:
            checkpoint = torch.load(load_file, map_location=self.device, weights_only=False)
            self.model.load_state_dict(checkpoint["state_dict"])
            other = checkpoint.get("other_parameter")
            self.logger.info(f"Loading model structure and parameters from {load_file}")
        if load_file is not None:
            other = self.context.broadcast(other)
            if not self.context.is_main:
                self.model.load_other_parameter(other)
        for tensor in list(self.model.parameters()) + list(self.model.buffers()):
            dist.broadcast(tensor.data, src=0)

    def _gathered_evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        import torch
        import torch.distributed as dist
        from recbole.data.dataloader import FullSortEvalDataLoader
        from recbole.utils import EvaluatorType

        if not eval_data:
            return None
        self._broadcast_model((model_file or self.saved_model_file) if load_best_model else None)
        self.model.eval()
        if isinstance(eval_data, FullSortEvalDataLoader):
            eval_func = self._full_sort_batch_eval
            if self.item_tensor is None:
                self.item_tensor = eval_data._dataset.get_item_feature().to(self.device)
        else:
            eval_func = self._neg_sample_batch_eval
        if self.config["eval_type"] == EvaluatorType.RANKING:
            self.tot_item_num = eval_data._dataset.item_num

        # the batches of a single process: RecBole divided the loader's step by world_size for its own
        # DistributedSampler; recompute the undivided one (the torch DataLoader itself is not used here)
        eval_data._init_batch_size_and_step()
        step, n = eval_data.step, eval_data.sample_size
        n_batches = (n + step - 1) // step
        struct = self.eval_collector.data_struct
        before = set(struct._data_dict)
        pieces = []
        with torch.no_grad():
            for b in range(self.context.rank, n_batches, self.context.world_size):
                batched = eval_data.collate_fn(list(range(b * step, min(n, (b + 1) * step))))
                interaction, scores, positive_u, positive_i = eval_func(batched)
                self.eval_collector.eval_batch_collect(scores, interaction, positive_u, positive_i)
                pieces.append((b, {key: struct._data_dict.pop(key).cpu()
                                   for key in list(struct._data_dict) if key not in before}))
        gathered = [None] * self.context.world_size if self.context.is_main else None
        dist.gather_object(pieces, gathered, dst=0)
        result = None
        if self.context.is_main:
            ordered = sorted((piece for rank_pieces in gathered for piece in rank_pieces),
                             key=lambda piece: piece[0])
            if [b for b, _ in ordered] != list(range(n_batches)):
                raise RuntimeError(f"DDP evaluation: gathered batches {[b for b, _ in ordered]}, expected "
                                   f"0..{n_batches - 1}")
            for _, values in ordered:
                for key, value in values.items():
                    struct.update_tensor(key, value)
            self.eval_collector.model_collect(self.model)
            result = self.evaluator.evaluate(self.eval_collector.get_data_struct())
            self.wandblogger.log_eval_metrics(result, head="eval")
        else:
            self.eval_collector.get_data_struct()  # resets the per-evaluation values, as on rank 0
        return self.context.broadcast(result)


def _install_evaluate():
    from recbole_psrq.evaluation import _wrap_evaluate

    # the training split's item counts reach the collector as in Trainer.evaluate (evaluation.py)
    if "evaluate" not in _DistributedMixin.__dict__:
        _DistributedMixin.evaluate = _wrap_evaluate(_DistributedMixin._gathered_evaluate)


def single_process_config(config):
    """Reset the DDP keys of a checkpoint's config so that one process evaluates it."""
    import torch

    if config["single_spec"] is False or config["world_size"] not in (None, 1, -1):
        config["single_spec"] = True
        config["local_rank"] = 0
        config["world_size"] = 1
        config["nproc"] = 1
        device = config["device"]
        cuda = getattr(device, "type", str(device)).startswith("cuda") and torch.cuda.is_available()
        config["device"] = torch.device("cuda") if cuda else torch.device("cpu")
    return config


def strip_module_prefix(state_dict):
    """A ``DistributedDataParallel`` state_dict (every key ``module.``-prefixed) as a plain one."""
    if state_dict and all(key.startswith("module.") for key in state_dict):
        return type(state_dict)((key[len("module."):], value) for key, value in state_dict.items())
    return state_dict


__all__ = ["normalise_args", "launch", "Context", "distributed_trainer", "single_process_config",
           "strip_module_prefix", "free_port", "dataset_digest"]
