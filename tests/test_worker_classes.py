"""Worker classes on every multi-process storage: simple (default), fork, spawn.

With fork (and spawn) the parent enforces a job's timeout from outside: a job
stuck in C code that never returns to the interpreter is killed at its
timeout, failed with a timeout error, and the worker takes the next job.
"""

from __future__ import annotations

import time
import uuid

import pytest

from plugq import NotSupportedError, Queue, Worker
from plugq.testing import tasks


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'classes.db'}"
    pytest.importorskip("rq")
    server = request.getfixturevalue("redis_server")
    server.flushall()
    return server.db_url(0)


@pytest.mark.slow
def test_fork_kills_a_job_stuck_in_c_past_its_timeout_and_goes_on(url):
    q = Queue(f"stuck-{uuid.uuid4().hex[:6]}", connection=url)
    stuck = q.enqueue(tasks.stuck_in_c, 10**9, job_timeout=1)
    after = q.enqueue(tasks.add, 2, 3)
    began = time.monotonic()
    w = Worker([q], worker_class="fork")
    assert w.work(burst=True)
    took = time.monotonic() - began
    assert took < 30, f"the stuck job held the worker {took:.1f} s"
    assert stuck.get_status() == "failed"
    assert "JobTimeoutException" in stuck.exc_info and "killed" in stuck.exc_info
    assert after.get_status() == "finished" and after.result == 5
    assert (w.successful_job_count, w.failed_job_count) == (1, 1)


@pytest.mark.slow
@pytest.mark.parametrize("worker_class", ["fork", "spawn"])
def test_isolated_classes_run_jobs_with_results_meta_and_failures(url, worker_class):
    q = Queue(f"iso-{uuid.uuid4().hex[:6]}", connection=url)
    ok = q.enqueue(tasks.report_progress, 2)
    bad = q.enqueue(tasks.fail, "nope")
    slow = q.enqueue(tasks.busy, 5, job_timeout=1)
    assert Worker([q], worker_class=worker_class).work(burst=True)
    assert ok.result == 2 and ok.get_meta()["progress"] == 2 and ok.attempts == 1
    assert bad.get_status() == "failed" and "ValueError: nope" in bad.exc_info
    assert slow.get_status() == "failed" and "JobTimeoutException" in slow.exc_info


def test_simple_is_the_default_and_memory_refuses_fork():
    q = Queue("mem-classes", connection=f"memory://{uuid.uuid4().hex}")
    job = q.enqueue(tasks.add, 1, 1)
    with pytest.raises(NotSupportedError, match="simple"):
        Worker([q], worker_class="fork").work(burst=True)
    assert Worker([q]).work(burst=True) and job.result == 2


def _forked_children() -> list[int]:
    """Children of this process running this same program (a fork worker's job processes)."""
    import os
    from pathlib import Path

    me = os.getpid()
    cmdline = Path(f"/proc/{me}/cmdline").read_bytes()
    found = []
    for task in Path(f"/proc/{me}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline:
                    found.append(int(pid))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_a_sigkilled_fork_child_fails_its_job_which_is_retried_and_the_worker_goes_on(url, tmp_path):
    import os
    import signal
    import threading

    from plugq import Retry

    q = Queue(f"kill-{uuid.uuid4().hex[:6]}", connection=url)
    started, release = tmp_path / "started", tmp_path / "release"
    victim = q.enqueue(tasks.touch_then_wait, str(started), str(release), retry=Retry(max=1))
    after = q.enqueue(tasks.add, 1, 1)
    w = Worker([q], worker_class="fork")
    t = threading.Thread(target=lambda: w.work(burst=True), daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    children = _forked_children()
    assert len(children) == 1, children
    killed_at = time.monotonic()
    os.kill(children[0], signal.SIGKILL)
    release.touch()  # the retry runs through
    t.join(60)
    assert not t.is_alive()
    assert time.monotonic() - killed_at < 30
    assert victim.get_status() == "finished" and victim.attempts == 2
    assert after.get_status() == "finished" and after.result == 2
