"""``--executor ray``: every :class:`~recbole_psrq.benchmark.executor.Task` is one Ray task, run by
:func:`~recbole_psrq.benchmark.executor.run_task` on whichever node Ray schedules it on, with the CPUs
(and GPUs) it declares. A task whose node dies is retried on another node (``max_retries``); a Python
error inside ``run_task`` is not retried. The task's result JSON is read on the node and only the outcome
comes back, so the driver (this process, which alone writes records) never reads a node's working
folder. What every node must share: the project code, its Python environment and the dataset at the
same paths as on the driver (README, "Scaling out").

Ray is imported only when this executor is built: the benchmark driver stays free of it otherwise.
"""
import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
import warnings

from recbole_psrq.benchmark.executor import PROJECT_ROOT, further, run_task
from recbole_psrq.errors import ConfigError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
START_HINT = (
    "Start a cluster first: on the head node `ray start --head --port=6379`, on every other node "
    "`ray start --address=<head ip>:6379`, each from this project's Python environment, with the project "
    "and the dataset at the same path on every node; then pass `--ray-address <head ip>:6379` (or "
    "`--ray-address auto` on a node of the cluster). Without --ray-address a one-machine Ray instance is "
    "started. See README, 'Scaling out'.")


def _import_ray():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ray 2.6.3 imports the deprecated pkg_resources
        try:
            import ray
        except ImportError as e:
            raise ConfigError(f"--executor ray needs the ray package ({e}); install it with "
                              "`pip install ray==2.6.3` in this environment and on every node.") from None
    return ray


def _run_on_node(task):
    """The Ray task: ``run_task`` here, and the id of the node it ran on (for logs and tests)."""
    import ray

    return run_task(task), ray.get_runtime_context().get_node_id()


def _host_port(address):
    """``(host, port)`` of a ``host:port`` address, None for ``auto``, ``ray://...`` and other forms."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or "/" in address or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _check_reachable(address, timeout):
    """Fail fast, naming the fix, when nothing listens at the address: ``ray.init`` itself retries a
    missing GCS for minutes before giving up."""
    target = _host_port(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=timeout).close()
    except OSError as e:
        raise ConfigError(f"No Ray cluster answers at --ray-address {address} ({e.strerror or e}). "
                          f"{START_HINT}") from None


@contextlib.contextmanager
def _loopback_node_ip(ray, pin):
    """Ray 2.6 turns a 127.0.0.1 node address into the machine's outward IP (found by "connecting" a UDP
    socket to 8.8.8.8); a cluster whose nodes all bound to loopback needs the driver on loopback too."""
    if not pin:
        yield
        return
    constants = ray._private.ray_constants
    saved = constants.ENABLE_RAY_CLUSTER
    constants.ENABLE_RAY_CLUSTER = False  # makes services.get_node_ip_address() answer 127.0.0.1
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = saved


class RayExecutor:
    """Runs tasks as Ray tasks on the cluster at ``address`` (``host:port`` of the head node, or ``auto``
    on a node of the cluster); ``address=None`` starts a Ray instance on this machine, bound to 127.0.0.1.

    ``map(tasks)`` yields ``(task, outcome)`` as tasks finish, the outcome being what ``run_task``
    returned on the node. A task Ray could not finish (its node died more than ``max_retries`` times,
    or ``run_task`` raised) yields a failed outcome whose ``tail`` says why. ``nodes`` maps each
    finished task's key to the id of the node that ran it."""

    name = "ray"

    def __init__(self, address=None, cpus_per_task=1, gpus_per_task=0, max_retries=3, connect_timeout=10,
                 num_cpus=None):
        if not float(cpus_per_task) > 0:
            raise ConfigError(f"cpus_per_task must be positive, got {cpus_per_task}.")
        if float(gpus_per_task) < 0:
            raise ConfigError(f"gpus_per_task must be 0 or more, got {gpus_per_task}.")
        ray = self._ray = _import_ray()
        self.address, self.nodes, self._temp_dir = address, {}, None
        if address:
            _check_reachable(address, connect_timeout)
        if ray.is_initialized():
            ray.shutdown()
        options = dict(log_to_driver=False,  # task output stays in the node's logs; outcomes carry tails
                       logging_level=logging.ERROR,
                       # the code a worker unpickles (this module, Task) is the project's, at the same path
                       runtime_env={"env_vars": {"PYTHONPATH": PROJECT_ROOT}})
        host = (_host_port(address) or ("",))[0] if address else "127.0.0.1"
        if host in LOOPBACK_HOSTS:
            options["_node_ip_address"] = "127.0.0.1"
        try:
            with _loopback_node_ip(ray, host in LOOPBACK_HOSTS):
                if address:
                    ray.init(address=address, **options)
                else:
                    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a local instance reports nothing
                    # short: Ray's socket paths under it must stay within 107 characters
                    self._temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
                    # workers at the driver's priority, as with the local executor (Ray's default: nice 15)
                    ray.init(num_cpus=num_cpus, include_dashboard=False, _temp_dir=self._temp_dir,
                             object_store_memory=200 * 1024 ** 2, _system_config={"worker_niceness": 0},
                             **options)
        except Exception as e:  # noqa: BLE001 -- Ray raises many types; the user needs the address and the fix
            self._cleanup()
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise ConfigError(f"Could not connect to {where}: {type(e).__name__}: {e}. {START_HINT}") from None
        self._check_resources(cpus_per_task, gpus_per_task)
        self._remote = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=int(max_retries),
                                  retry_exceptions=False)(_run_on_node)

    def _check_resources(self, cpus, gpus):
        """A task no node can hold would wait forever: refuse it now."""
        nodes = [n["Resources"] for n in self._ray.nodes() if n.get("Alive")]
        if not any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
            have = ", ".join(f"{r.get('CPU', 0):g} CPU/{r.get('GPU', 0):g} GPU" for r in nodes) or "no live node"
            self.close()
            raise ConfigError(f"No node of the Ray cluster can run a task needing {cpus:g} CPU and {gpus:g} GPU "
                              f"(nodes: {have}); lower the per-task CPUs/GPUs or add nodes.")

    def map(self, tasks, more=None):
        """Yield ``(task, outcome)`` as tasks finish, in completion order; ``more`` as in
        :meth:`recbole_psrq.benchmark.executor.LocalExecutor.map`."""
        ray = self._ray
        pending = {}  # ref -> (task, when it was submitted)

        def submit(new_tasks):
            pending.update((self._remote.remote(task), (task, time.time())) for task in new_tasks)

        submit(tasks)
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                task, submitted = pending.pop(ref)
                try:
                    outcome, node = ray.get(ref)
                    self.nodes[task.key] = node
                except ray.exceptions.RayError as e:
                    outcome = {"ok": False, "result": None, "wall": time.time() - submitted, "returncode": None,
                               "tail": f"Ray could not finish the task ({type(e).__name__}; a node lost more "
                                       f"than max_retries times, or run_task raised):\n"
                                       + "\n".join(str(e).strip().splitlines()[-15:])}
                submit(further(more, task, outcome))
                yield task, outcome
        finally:  # the driver stopped early (an error, Ctrl-C): do not leave tasks running on the cluster
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)

    def close(self):
        if self._ray.is_initialized():
            self._ray.shutdown()
        self._cleanup()

    def _cleanup(self):
        if self._temp_dir:
            _kill_processes_using(self._temp_dir)
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None


def _kill_processes_using(temp_dir):
    """``ray.shutdown`` can leave the local instance's dashboard agent behind (Ray 2.6): end what still
    names the instance's private folder on its command line, and nothing else."""
    marker = os.fsencode(temp_dir)
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()) if os.path.isdir("/proc") else ():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker in f.read() and pid != os.getpid():
                    os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
