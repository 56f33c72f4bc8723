"""DDP (recbole_psrq/distributed.py): argument checks, and a 2-process CPU (gloo) run on the tiny dataset
whose gathered test metrics equal the single-process evaluation of its rank-0 checkpoint.

The rendezvous is on 127.0.0.1 at a free port; the run is a subprocess in its own session, killed with
its spawned ranks if it outlives its time limit, and ``ddp_timeout`` bounds every collective step."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

import run_recbole_psrq
from recbole_psrq.distributed import (free_port, normalise_args, single_process_config,
                                      strip_module_prefix)
from recbole_psrq.errors import ConfigError
from tests.conftest import one_epoch, same_metrics

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "run_recbole_psrq.py")
RUN_TIMEOUT_S = 240


def run_cli(args, cwd, timeout=RUN_TIMEOUT_S):
    """``python run_recbole_psrq.py ARGS`` in ``cwd``; on timeout the whole process group (the launcher
    and its spawned ranks) is killed and the test fails."""
    proc = subprocess.Popen([sys.executable, SCRIPT, *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"run_recbole_psrq.py {' '.join(args)} ran past {timeout} s:\n{out[-3000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out


# ---------------------------------------------------------------------- arguments
@pytest.mark.parametrize("argv, message", [
    (["--nproc=2", "--world_size=1"], "smaller than --nproc=2"),
    (["--nproc=0"], "--nproc must be at least 1"),
    (["--nproc=two"], "--nproc must be an integer"),
    (["--nproc=2", "--world_size=4", "--group_offset=3", "--ip=10.0.0.1"], "--group_offset=3 does not fit"),
    (["--nproc=2", "--world_size=4"], "give --ip="),
    (["--nproc=2", "--port=99999"], "--port must be a TCP port"),
    (["--port=5678"], "--ip/--port are for distributed runs"),
    (["--nproc=2", "--local_rank=1"], "--local_rank is set by the DDP launcher"),
])
def test_bad_ddp_arguments_stop_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_recbole_psrq.parse_args(["--model=MCCA", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_checkpoint_evaluation_is_single_process(capsys):
    with pytest.raises(SystemExit):
        run_recbole_psrq.parse_args(["--checkpoint=x.pth", "--nproc=2"])
    assert "--checkpoint evaluates in one process" in capsys.readouterr().err


def test_ddp_arguments_are_normalised():
    assert normalise_args() is None
    assert normalise_args(nproc=1, world_size=1) is None
    assert normalise_args(nproc=2) == {"nproc": 2, "world_size": 2, "ip": "127.0.0.1", "port": 5678,
                                       "group_offset": 0}
    assert normalise_args(nproc="2", world_size="4", ip="10.0.0.1", port="29500", group_offset="2") == \
        {"nproc": 2, "world_size": 4, "ip": "10.0.0.1", "port": 29500, "group_offset": 2}
    with pytest.raises(ConfigError, match="world_size"):
        normalise_args(nproc=3, world_size=2)


def test_a_trainer_with_its_own_evaluation_is_refused():
    from recbole.trainer import Trainer

    from recbole_psrq.distributed import distributed_trainer

    class OwnEvaluation(Trainer):
        def evaluate(self, eval_data, *args, **kwargs):
            return {}

    with pytest.raises(ConfigError, match="not supported for Foo"):
        distributed_trainer(OwnEvaluation, {"model": "Foo"}, None, None)


def test_checkpoint_config_and_keys_of_a_ddp_run_load_in_one_process():
    config = {"single_spec": False, "local_rank": 1, "world_size": 2, "nproc": 2,
              "device": torch.device("cpu")}

    class Config(dict):
        def __getitem__(self, key):
            return self.get(key)

    config = single_process_config(Config(config))
    assert (config["single_spec"], config["local_rank"], config["world_size"]) == (True, 0, 1)
    plain = {"a.weight": 1, "b": 2}
    assert strip_module_prefix({"module." + k: v for k, v in plain.items()}) == plain
    assert strip_module_prefix(plain) == plain


# ---------------------------------------------------------------------- a 2-process run
@pytest.mark.slow
def test_two_process_run_equals_single_process_evaluation_of_its_checkpoint(workdir, tiny_data_path):
    """Gathered evaluation: every test row once (the catch-all bucket counts them), metrics computed once on
    rank 0 = a single process evaluating the rank-0 checkpoint, which loads without a module. prefix.
    eval_batch_size 97 makes uneven batches (rank 0 scores more of them than rank 1)."""
    from recbole_psrq import quick_start

    buckets = {"coldauc": {"max_count": 29}, "coldauc_every": {"max_count": 10 ** 9, "count": "all"}}
    overrides = {**one_epoch(tiny_data_path, eval_batch_size=97), "ddp_timeout": 120, "torch_threads": 1,
                 "cold_buckets": buckets}
    port = free_port()
    code, out = run_cli(["--model=MCCA", "--nproc=2", "--ip=127.0.0.1", f"--port={port}",
                         *(f"--{k}={v}" for k, v in overrides.items())], cwd=str(workdir))
    assert code == 0, out[-3000:]
    lines = out.strip().splitlines()
    assert lines[-1].startswith("test result: auc: ")
    assert lines[-1].count("test result:") == 1 and out.count("results written to") == 1  # rank 0 only
    result_file = lines[-2].split("results written to ", 1)[1]
    with open(result_file, encoding="utf-8") as f:
        result = json.load(f)
    # gradients were averaged: both ranks ended training with the same weights, bit for bit
    assert result["distributed"] == {"world_size": 2, "backend": "gloo", "weights_in_sync": True}
    ddp_metrics = result["test_result"]
    assert ddp_metrics["coldauc_every_rows"] == result["protocol_checks"]["test_rows"]
    assert ddp_metrics["coldauc_every_share"] == 1.0
    # only rank 0 wrote outputs: one log, one JSON, one checkpoint
    assert len(os.listdir(workdir / "log" / "MCCA")) == 2
    checkpoints = [p for p in os.listdir(workdir / "saved") if p.endswith(".pth")]
    assert checkpoints == [os.path.basename(result["checkpoint"])]
    state = torch.load(result["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    assert not any(key.startswith("module.") for key in state)

    single = quick_start.evaluate_checkpoint(result["checkpoint"])
    assert same_metrics(single, ddp_metrics), (single, ddp_metrics)


def test_a_ddp_run_frees_its_process_group_before_the_process_exits(workdir, tiny_data_path, monkeypatch):
    """The DDP model sits in reference cycles that hold the process group; left to interpreter exit, gloo's
    threads are destroyed there and a rank aborts after its run succeeded (SIGABRT, 1 run in ~10). A
    one-process group in this process: after run() no DistributedDataParallel object is left, without
    any garbage collection here."""
    import gc

    from recbole_psrq import quick_start
    from recbole_psrq.distributed import _loopback_interface

    monkeypatch.setenv("GLOO_SOCKET_IFNAME", _loopback_interface())  # as launch() does: loopback only

    spec = {"nproc": 1, "world_size": 1, "ip": "127.0.0.1", "port": free_port(), "group_offset": 0,
            "local_rank": 0}
    gc.disable()  # an automatic collection between run() and the count would hide a leak
    try:
        result = quick_start.run("MCCA", overrides={**one_epoch(tiny_data_path), "ddp_timeout": 60,
                                                    "torch_threads": 1}, distributed=spec)
        alive = [o for o in gc.get_objects() if type(o) is torch.nn.parallel.DistributedDataParallel]
    finally:
        gc.enable()
    assert result["distributed"]["world_size"] == 1
    assert alive == []
    assert not torch.distributed.is_initialized()
