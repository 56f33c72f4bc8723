"""Where runs and tuning trials execute. Every unit of work is a :class:`Task`: one Python process
(``run_recbole_psrq.py`` for a benchmark run, ``recbole_psrq.tune.trial`` for a tuning trial) started in
a working folder of its own, which prints ``results written to <file>``; the task returns that file's
JSON. Executors only run tasks and hand their outcomes back to the driver, which alone writes records
(atomically), so a killed or resumed study never sees a half-written record.

- ``local`` (default, :class:`LocalExecutor`): a pool of ``--jobs N`` processes on this machine.
- ``ray`` (:class:`recbole_psrq.benchmark.ray_executor.RayExecutor`): every task is a Ray task with
  declared CPUs (and GPUs when configured), retried when its node dies.
``recbole_psrq.benchmark.runner.make_executor`` builds either from the command-line options.
"""
import collections
import json
import os
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

from recbole_psrq.errors import ConfigError

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULT_LINE = "results written to "


@dataclass(frozen=True)
class Task:
    """``python <argv...>`` run in ``workdir``; ``key`` names it in logs and outcomes."""
    key: str
    argv: tuple
    workdir: str
    env: tuple = ()  # extra environment variables, (name, value) pairs


def _die_with_parent():
    """Linux: the run is killed when the process that started it dies (a Ray worker cancelled or lost
    with its node), instead of finishing orphaned and unrecorded."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_task(task):
    """Run one task here and return its outcome: ``{"ok", "result" (the JSON it wrote, or None), "wall",
    "tail" (the end of its output, for failures), "returncode"}``."""
    os.makedirs(task.workdir, exist_ok=True)
    start = time.time()
    proc = subprocess.run([sys.executable, *task.argv], cwd=task.workdir, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": PROJECT_ROOT, **dict(task.env)},
                          preexec_fn=_die_with_parent)
    wall = time.time() - start
    tail = "\n".join(((proc.stderr or "") + (proc.stdout or "")).strip().splitlines()[-15:])
    outcome = {"ok": False, "result": None, "wall": wall, "tail": tail, "returncode": proc.returncode}
    written = [line[len(RESULT_LINE):] for line in proc.stdout.splitlines() if line.startswith(RESULT_LINE)]
    if proc.returncode == 0 and written:
        with open(os.path.join(task.workdir, written[-1])) as f:
            outcome.update(ok=True, result=json.load(f))
    elif proc.returncode == 0:
        outcome["tail"] = f"the process printed no '{RESULT_LINE}<file>' line\n{tail}"
    return outcome


def further(more, task, outcome):
    """The tasks ``more`` (an executor's ``map`` argument, or None) asks to run after ``task``."""
    return list((more(task, outcome) if more else None) or ())


def earlier_seconds(result):
    """The training time a resumed run or trial spent in the processes before the last one, up to their
    last saved validation (0 when it was not resumed): added to the last process's wall time, a record's
    time is what the run cost, less the work redone after a kill."""
    return ((result or {}).get("resumed") or {}).get("earlier_seconds", 0.0)


class LocalExecutor:
    """Runs tasks in ``jobs`` concurrent processes on this machine."""

    name = "local"

    def __init__(self, jobs=1):
        if int(jobs) < 1:
            raise ConfigError(f"--jobs must be at least 1, got {jobs}.")
        self.jobs = int(jobs)

    def map(self, tasks, more=None):
        """Yield ``(task, outcome)`` as tasks finish, in completion order. ``more(task, outcome)``, called
        as each task finishes (before it is yielded), returns further tasks to run (or None): the tuner
        starts a study's next round when its own round ends, so no process waits for the others' rounds."""
        if self.jobs == 1:
            queue = collections.deque(tasks)
            while queue:
                task = queue.popleft()
                outcome = run_task(task)
                queue.extend(further(more, task, outcome))
                yield task, outcome
            return
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:  # threads only wait on processes
            running = {pool.submit(run_task, task): task for task in tasks}
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    task, outcome = running.pop(future), future.result()
                    running.update((pool.submit(run_task, t), t) for t in further(more, task, outcome))
                    yield task, outcome

    def close(self):
        pass
