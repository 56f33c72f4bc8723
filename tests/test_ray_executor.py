"""The Ray executor on a real two-node Ray cluster, both nodes on this machine and bound to 127.0.0.1:
results equal to running the same tasks here, tasks spread over both nodes, a killed node's task
retried on the other, a clear error for an address where no cluster runs. Every node is started by this
file in a process group of its own (``ray start --block``) and killed with it, whatever happens; nothing
else on the machine is touched (no ``ray stop``, which stops every Ray process of the user)."""
import os
import signal
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from recbole_psrq.benchmark.executor import Task, run_task
from recbole_psrq.errors import ConfigError

ray = pytest.importorskip("ray")
from recbole_psrq.benchmark.ray_executor import RayExecutor  # noqa: E402

# `ray start` with every address it derives kept on loopback: Ray 2.6 replaces 127.0.0.1 by the
# machine's outward IP (services.get_node_ip_address), which a loopback-only cluster must not use.
LOOPBACK_RAY = ("import sys, ray._private.services as s; s.get_node_ip_address = lambda *a, **k: '127.0.0.1'; "
                "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()")
NODE_ENV = {"RAY_USAGE_STATS_ENABLED": "0",
            "RAY_worker_niceness": "0",  # Ray starts workers at niceness 15 by default: starved on a busy machine
            # notice a killed node within ~2 s instead of ~15 s
            "RAY_health_check_initial_delay_ms": "0", "RAY_health_check_period_ms": "500",
            "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "3"}
START_TIMEOUT = 60


def free_ports(n):
    """n distinct free ports: all held open at once, so no two are the same (separate calls may be)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class LoopbackCluster:
    """A head node and worker nodes on 127.0.0.1, each a ``ray start --block`` process group."""

    def __init__(self):
        self.temp_dir = tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # short: socket paths < 108 chars
        # every node, and a driver given this env, keeps its session under it: a worker node (Ray 2.6)
        # ignores --temp-dir and would use /tmp/ray, shared with anyone else's Ray on the machine
        self.env = {**os.environ, **NODE_ENV, "RAY_TMPDIR": self.temp_dir}
        self.nodes = []  # Popen of each node's `ray start --block`, in start order
        self.address = None

    def _start(self, args, ports):
        node_manager, object_manager, agent_listen, agent_grpc, metrics = ports
        log = open(os.path.join(self.temp_dir, f"node{len(self.nodes)}.log"), "w+")
        command = [sys.executable, "-c", LOOPBACK_RAY, "start", "--block", "--node-ip-address=127.0.0.1",
                   "--num-cpus=1", f"--object-store-memory={100 * 1024 ** 2}", "--disable-usage-stats",
                   f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
                   f"--dashboard-agent-listen-port={agent_listen}", f"--dashboard-agent-grpc-port={agent_grpc}",
                   f"--metrics-export-port={metrics}", *args]
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=self.env)
        proc.log = log
        self.nodes.append(proc)
        deadline = time.time() + START_TIMEOUT
        while time.time() < deadline:
            log.seek(0)
            text = log.read()
            if "Ray runtime started" in text:
                return proc
            if proc.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError(f"ray start did not come up:\n{text[-3000:]}")

    def start_head(self):
        # one allocation for all nine ports: the head's own four drawn apart from the node's five
        # once collided (client server and metrics export on the same port, Ray refused to start)
        *node_ports, port, client, dashboard, dashboard_grpc = free_ports(9)
        self._start(["--head", f"--port={port}", f"--temp-dir={os.path.join(self.temp_dir, 'ray')}", "--include-dashboard=false",
                     f"--ray-client-server-port={client}", f"--dashboard-port={dashboard}",
                     f"--dashboard-grpc-port={dashboard_grpc}"], node_ports)
        self.address = f"127.0.0.1:{port}"
        return self

    def add_node(self):
        return self._start([f"--address={self.address}"], free_ports(5))

    @staticmethod
    def kill(proc, sig=signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)  # the node's raylet, its workers and their task processes
        except ProcessLookupError:
            pass

    def stop(self):
        for proc in reversed(self.nodes):
            self.kill(proc, signal.SIGTERM)
        deadline = time.time() + 15
        for proc in reversed(self.nodes):
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
            self.kill(proc)  # whatever ignored SIGTERM
            proc.wait()
            proc.log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    c = LoopbackCluster()
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = c.temp_dir  # the drivers' session logs too
    try:
        yield c.start_head()
    finally:
        c.stop()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved


def write_json_task(tmp_path, key, sleep=0.0, value=None):
    """A tiny task: records its pid (``started``), sleeps, writes a result JSON and names it."""
    code = (f"import json, os, time; open('started', 'a').write(str(os.getpid()) + '\\n'); time.sleep({sleep}); "
            f"json.dump({{'key': {key!r}, 'value': {value!r}, 'env': os.environ['TASK_KEY'], "
            f"'path': os.environ['PYTHONPATH']}}, open('r.json', 'w')); "
            f"print('results written to r.json')")
    return Task(key=key, argv=("-c", code), workdir=str(tmp_path / key), env=(("TASK_KEY", key),))


def alive_nodes(n, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = [node for node in ray.nodes() if node["Alive"]]
        if len(alive) >= n:
            return alive
        time.sleep(0.2)
    raise AssertionError(f"expected {n} live Ray nodes, have {len(alive)}")


def connect_then_add_a_node(cluster):
    """The executor, connected while the head is the only node, and a worker node added after. A driver
    attaches to a node with its own IP, and on a one-IP cluster Ray picks any: connecting first makes it
    the head's, so that killing the worker node leaves the driver's own node alive (on a real cluster the
    driver runs on a node of its own IP, normally the head)."""
    executor = RayExecutor(address=cluster.address)
    try:
        worker = cluster.add_node()
    except BaseException:
        executor.close()
        raise
    return executor, worker


def without_wall(outcome):
    return {k: v for k, v in outcome.items() if k != "wall"}


def test_tasks_run_on_both_nodes_with_the_outcomes_of_a_local_run(cluster, tmp_path):
    executor, worker = connect_then_add_a_node(cluster)
    try:
        nodes = alive_nodes(2)
        assert {node["NodeManagerAddress"] for node in nodes} == {"127.0.0.1"}
        tasks = [write_json_task(tmp_path / "ray", f"t{i}", sleep=1.5, value=i * 1.5) for i in range(4)]
        tasks.append(Task(key="fails", argv=("-c", "import sys; print('boom'); sys.exit(3)"),
                          workdir=str(tmp_path / "ray" / "fails")))
        outcomes = dict((task.key, outcome) for task, outcome in executor.map(tasks))
        assert sorted(outcomes) == sorted(task.key for task in tasks)
        assert len({executor.nodes[t.key] for t in tasks}) == 2  # both nodes ran tasks
        local = {t.key: run_task(Task(t.key, t.argv, t.workdir.replace("/ray/", "/local/"), t.env)) for t in tasks}
        assert {k: without_wall(o) for k, o in outcomes.items()} == {k: without_wall(o) for k, o in local.items()}
        assert outcomes["t2"]["ok"] and outcomes["t2"]["result"]["value"] == 3.0
        assert outcomes["t2"]["result"]["env"] == "t2"  # Task.env reaches the task on a Ray worker
        assert not outcomes["fails"]["ok"] and outcomes["fails"]["returncode"] == 3
    finally:
        executor.close()
        cluster.kill(worker, signal.SIGTERM)
        worker.wait(15)


def test_a_task_on_a_killed_node_is_retried_on_another(cluster, tmp_path):
    executor, worker = connect_then_add_a_node(cluster)
    try:
        alive_nodes(2)
        tasks = [write_json_task(tmp_path, f"k{i}", sleep=3, value=i) for i in range(3)]
        outcomes = {}
        consumer = threading.Thread(target=lambda: outcomes.update((t.key, o) for t, o in executor.map(tasks)))
        consumer.start()
        # wait until one of them runs on the worker node (its process is in the node's process group)
        deadline, victim = time.time() + 30, None
        while victim is None and time.time() < deadline:
            time.sleep(0.1)
            for task in tasks:
                started = os.path.join(task.workdir, "started")
                pids = open(started).read().split() if os.path.exists(started) else []
                if any(_pgid(int(pid)) == worker.pid for pid in pids):
                    victim = task
        assert victim is not None, "no task started on the worker node"
        cluster.kill(worker)  # SIGKILL: the node, its workers and the running task vanish at once
        worker.wait(10)
        consumer.join(60)
        assert not consumer.is_alive(), "the executor did not finish after its worker node was killed"
        assert sorted(outcomes) == ["k0", "k1", "k2"]
        assert all(o["ok"] for o in outcomes.values()), {k: o["tail"] for k, o in outcomes.items()}
        assert [outcomes[f"k{i}"]["result"]["value"] for i in range(3)] == [0, 1, 2]
        head = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
        assert executor.nodes[victim.key] in head  # its retry ran on the surviving head node
        assert len(open(os.path.join(victim.workdir, "started")).read().split()) == 2  # it ran twice
    finally:
        executor.close()


def _pgid(pid):
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_no_cluster_at_the_address_is_a_config_error_saying_how_to_start_one():
    (port,) = free_ports(1)
    start = time.time()
    with pytest.raises(ConfigError) as error:
        RayExecutor(address=f"127.0.0.1:{port}")
    assert time.time() - start < 20
    message = str(error.value)
    assert f"127.0.0.1:{port}" in message and "ray start --head" in message and "Scaling out" in message


def test_tasks_no_node_can_hold_are_refused(cluster):
    with pytest.raises(ConfigError, match="No node of the Ray cluster can run a task needing 1 CPU and 1 GPU"):
        RayExecutor(address=cluster.address, gpus_per_task=1)
    assert not ray.is_initialized()


def test_without_an_address_a_local_instance_runs_the_tasks_and_is_removed_on_close(tmp_path):
    executor = RayExecutor(num_cpus=1)
    try:
        temp_dir = executor._temp_dir
        assert [node["NodeManagerAddress"] for node in ray.nodes()] == ["127.0.0.1"]
        task, follow_up = write_json_task(tmp_path, "solo", value=7), write_json_task(tmp_path, "next", value=8)
        seen = []

        def more(finished, outcome):  # a further task, started when the first one finishes (the tuner's rounds)
            seen.append((finished.key, outcome["result"]["value"]))
            return [follow_up] if finished is task else None

        done = list(executor.map([task], more))
        assert [(t.key, o["ok"], o["result"]["value"]) for t, o in done] == [("solo", True, 7), ("next", True, 8)]
        assert seen == [("solo", 7), ("next", 8)]
    finally:
        executor.close()
    assert not ray.is_initialized() and not os.path.exists(temp_dir)
