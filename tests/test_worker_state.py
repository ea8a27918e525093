"""``plugq info`` shows a worker's state, current job and counters as they are.

A worker writes them when a job starts and when it ends, not only at its
heartbeat (every 5 s with the default lease): the polls below give up well
before a heartbeat would have caught up.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from _cli_helpers import PLUGQ, clean_env, plugq_json, redis_url_or_skip, wait_until
from plugq import Queue

#: Shorter than the first heartbeat (5 s), so only a write at job start/end passes.
LIVE_WITHIN = 3.0


@pytest.fixture(params=["sqlite", "redis"])
def url(request, tmp_path):
    if request.param == "redis":
        return redis_url_or_skip(request)
    return f"sqlite:///{tmp_path / 'state.db'}"


def _worker(info: dict) -> dict:
    workers = [w for w in info["workers"] if w["name"] == "live-state"]
    assert len(workers) == 1, info["workers"]
    return workers[0]


def test_info_json_sees_busy_and_the_job_while_it_runs(url, tmp_path):
    queue = f"state-{tmp_path.name[-8:]}"
    started, release = tmp_path / "started", tmp_path / "release"
    job = Queue(queue, connection=url).enqueue(
        "plugq.testing.tasks.touch_then_wait", str(started), str(release))
    proc = subprocess.Popen(
        [PLUGQ, "worker", queue, "--url", url, "--name", "live-state", "--burst"],
        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(started.exists, 30, "the job to start")
        t0 = time.monotonic()
        busy = wait_until(
            lambda: (lambda w: w if w["state"] == "busy" and w["current_job_id"] == job.id
                     else None)(_worker(plugq_json("info", queue, "--url", url))),
            LIVE_WITHIN, "info to show the worker busy with the job")
        assert time.monotonic() - t0 < LIVE_WITHIN
        assert busy["successful_jobs"] == 0
        release.touch()
        wait_until(lambda: job.get_status() == "finished", 30, "the job to finish")
    finally:
        release.touch()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out


def test_info_json_sees_counters_when_a_job_ends(url, tmp_path):
    queue = f"count-{tmp_path.name[-8:]}"
    started, release = tmp_path / "started", tmp_path / "release"
    q = Queue(queue, connection=url)
    first = q.enqueue("plugq.testing.tasks.add", 1, 2)
    second = q.enqueue("plugq.testing.tasks.touch_then_wait", str(started), str(release))
    proc = subprocess.Popen(
        [PLUGQ, "worker", queue, "--url", url, "--name", "live-state", "--burst"],
        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(started.exists, 30, "the second job to start")
        assert first.get_status() == "finished"
        w = wait_until(
            lambda: (lambda w: w if w["current_job_id"] == second.id
                     and w["successful_jobs"] == 1 else None)(
                _worker(plugq_json("info", queue, "--url", url))),
            LIVE_WITHIN, "info to count the first job and show the second")
        assert w["state"] == "busy"
        assert w["failed_jobs"] == 0
    finally:
        release.touch()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
