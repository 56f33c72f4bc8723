"""The local executor (recbole_psrq/benchmark/executor.py): a task's outcome, and further tasks started as
tasks finish (how the tuner runs each study's next round without waiting for the other studies)."""
import json

import pytest

from recbole_psrq.benchmark.executor import LocalExecutor, Task, run_task
from recbole_psrq.errors import ConfigError


def task(tmp_path, key, sleep=0.0, code=None):
    """A process that records when it ran, sleeps and writes its result JSON (or runs ``code``)."""
    code = code or (f"import json, time; start = time.time(); time.sleep({sleep}); json.dump({{'key': {key!r}, "
                    f"'start': start, 'end': time.time()}}, open('r.json', 'w')); print('results written to r.json')")
    return Task(key=key, argv=("-c", code), workdir=str(tmp_path / key))


def test_a_tasks_outcome_is_the_json_it_names_or_why_it_failed(tmp_path):
    ok = run_task(task(tmp_path, "ok"))
    assert ok["ok"] and ok["returncode"] == 0 and ok["result"]["key"] == "ok" and ok["wall"] > 0
    assert json.load(open(tmp_path / "ok" / "r.json")) == ok["result"]  # run in its own working folder
    failed = run_task(task(tmp_path, "fails", code="import sys; print('boom'); sys.exit(3)"))
    assert not failed["ok"] and failed["returncode"] == 3 and failed["result"] is None and "boom" in failed["tail"]
    silent = run_task(task(tmp_path, "silent", code="print('done')"))
    assert not silent["ok"] and silent["returncode"] == 0
    assert silent["tail"] == "the process printed no 'results written to <file>' line\ndone"


@pytest.mark.parametrize("jobs", [1, 2])
def test_further_tasks_run_when_the_tasks_before_them_finish(tmp_path, jobs):
    first = [task(tmp_path, "a"), task(tmp_path, "b")]
    seen = []

    def more(finished, outcome):
        seen.append((finished.key, outcome["result"]["key"]))
        return [task(tmp_path, finished.key + "2")] if len(finished.key) == 1 else None

    done = [(t.key, o["ok"]) for t, o in LocalExecutor(jobs).map(first, more)]
    assert sorted(done) == [("a", True), ("a2", True), ("b", True), ("b2", True)]
    assert sorted(seen) == [(k, k) for k in ("a", "a2", "b", "b2")]  # every outcome reaches more
    position = {key: i for i, (key, _) in enumerate(done)}
    assert position["a"] < position["a2"] and position["b"] < position["b2"]
    # without more, the given tasks only
    assert sorted(t.key for t, _ in LocalExecutor(jobs).map(first)) == ["a", "b"]


def test_no_more_processes_than_jobs_and_none_idle_while_tasks_wait(tmp_path):
    tasks = [task(tmp_path, "short", sleep=0.1), task(tmp_path, "long", sleep=2.0), task(tmp_path, "queued", 0.1)]
    extra = iter([task(tmp_path, "further", sleep=0.1)])
    results = {o["result"]["key"]: o["result"] for _, o in LocalExecutor(2).map(tasks, lambda t, o: list(extra))}
    assert len(results) == 4

    def running_at(moment):
        return sum(r["start"] <= moment < r["end"] for r in results.values())

    assert max(running_at(r["start"]) for r in results.values()) == 2
    # the queued and the further task run beside the long one, as soon as a process is free
    assert results["queued"]["end"] < results["long"]["end"] and results["further"]["end"] < results["long"]["end"]


def test_jobs_below_one_are_refused():
    with pytest.raises(ConfigError, match="--jobs must be at least 1, got 0"):
        LocalExecutor(0)
