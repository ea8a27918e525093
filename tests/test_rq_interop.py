"""plugq and plain rq on one real Redis, in both directions, through the real ``rq`` CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest

pytest.importorskip("rq")

from plugq import Job, Queue, Retry, Worker
from plugq.testing import tasks

pytestmark = pytest.mark.redis

RQ = shutil.which("rq", path=str(Path(sys.executable).parent)) or shutil.which("rq")


def rq_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    assert RQ is not None, "the rq command is not installed next to this Python"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [RQ, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def wait_until(predicate, timeout: float = 15.0, message: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {message}")
        time.sleep(0.02)


@pytest.fixture
def url(redis_server) -> str:
    redis_server.flushall()
    return redis_server.url + "/0"


def test_rq_info_shows_plugq_queues_counts_and_workers(url):
    q = Queue("interop-info", connection=url)
    for i in range(3):
        q.enqueue(tasks.add, i, i)
    idle = Worker(["interop-idle"], connection=url, name="plugq-idle-worker", worker_class="simple")
    t = threading.Thread(target=idle.work, daemon=True)
    t.start()
    try:
        wait_until(lambda: any(w.name == "plugq-idle-worker" for w in Worker.all(connection=url)),
                   message="the plugq worker to register")
        out = rq_cli("info", "--url", url)
        assert out.returncode == 0, out.stderr
        # e.g. "interop-info |███ 3, 0 executing, 0 finished, 0 failed"
        assert re.search(r"^interop-info \|\S* 3, 0 executing", out.stdout, re.M), out.stdout
        workers = rq_cli("info", "--url", url, "--only-workers", "interop-idle")
        assert workers.returncode == 0, workers.stderr
        assert re.search(r"^plugq-idle-worker .*idle.* interop-idle", workers.stdout, re.M), workers.stdout
    finally:
        idle.request_stop()
        t.join(10)
    assert not t.is_alive()


@pytest.mark.parametrize("rq_class", ["rq.worker.Worker", "rq.worker.SimpleWorker"],
                         ids=["rq-forking-worker", "rq-simple-worker"])
def test_rq_worker_burst_runs_plugq_jobs_and_plugq_reads_outcomes(url, tmp_path, rq_class):
    q = Queue("interop-a", connection=url)
    ok = q.enqueue(tasks.sum_numbers_from_string, "a1b2c3")
    kw = q.enqueue(tasks.echo, 1, "two", key=[3])
    bad = q.enqueue(tasks.fail, "told to")
    out = rq_cli("worker", "--burst", "--url", url, "--worker-class", rq_class, "interop-a")
    assert out.returncode == 0, out.stderr
    assert ok.get_status() == "finished" and ok.result == 6
    assert kw.result == {"args": [1, "two"], "kwargs": {"key": [3]}}
    assert bad.get_status() == "failed"
    assert "ValueError: told to" in bad.exc_info
    assert q.finished_job_registry.count == 2
    assert q.failed_job_registry.get_job_ids() == [bad.id]
    assert len(q) == 0


def test_rq_worker_runs_plugq_json_jobs_with_rqs_json_serializer(url):
    q = Queue("interop-json", connection=url, serializer="json")
    job = q.enqueue(tasks.add, 20, 22)
    out = rq_cli("worker", "--burst", "--url", url, "--serializer", "rq.serializers.JSONSerializer",
                 "interop-json")
    assert out.returncode == 0, out.stderr
    assert job.get_status() == "finished" and job.result == 42


def test_plain_rq_jobs_run_on_plugq_worker_and_show_in_plugq(url):
    from redis import Redis
    from rq import Queue as RQQueue
    from rq import Retry as RQRetry

    conn = Redis.from_url(url)
    rq_queue = RQQueue("interop-b", connection=conn)
    rq_ok = rq_queue.enqueue(tasks.add, 2, 3)
    rq_bad = rq_queue.enqueue(tasks.fail, "rq side", retry=RQRetry(max=1))
    q = Queue("interop-b", connection=url)
    assert sorted(q.get_job_ids()) == sorted([rq_ok.id, rq_bad.id])
    assert Job.fetch(rq_ok.id, connection=url).get_status() == "queued"
    assert Worker([q]).work(burst=True)  # plugq's worker
    assert Job.fetch(rq_ok.id, connection=url).result == 5
    failed = Job.fetch(rq_bad.id, connection=url)
    assert failed.get_status() == "failed" and failed.retries_left == 0
    assert "ValueError: rq side" in failed.exc_info
    # and rq itself agrees
    rq_ok.refresh()
    assert rq_ok.get_status() == "finished" and rq_ok.return_value() == 5


def test_plugq_retry_runs_on_rq_worker(url, tmp_path):
    q = Queue("interop-retry", connection=url)
    path = str(tmp_path / "count")
    job = q.enqueue(tasks.fail_until, path, 1, retry=Retry(max=2))
    out = rq_cli("worker", "--burst", "--url", url, "interop-retry")
    assert out.returncode == 0, out.stderr
    assert job.get_status() == "finished" and job.result == 2
    assert job.retries_left == 1


def test_rq_getting_started_with_only_the_import_changed(redis_server, url):
    # From RQ's docs, with `from rq import Queue` replaced by `from plugq import Queue`.
    from redis import Redis

    from plugq import Queue as PQueue

    q = PQueue(connection=Redis(host="127.0.0.1", port=redis_server.port))
    job = q.enqueue(tasks.sum_numbers_from_string, "http://nvie.com/2024")
    assert job.get_status() == "queued"
    out = rq_cli("worker", "--burst", "--url", url)
    assert out.returncode == 0, out.stderr
    assert job.result == 2 + 0 + 2 + 4
    assert job.get_status() == "finished"


def test_rq_dependencies_schedules_and_result_ttl_run_on_plugq_worker(url):
    from datetime import timedelta

    from redis import Redis
    from rq import Queue as RQQueue
    from rq.job import Job as RQJob

    conn = Redis.from_url(url)
    rq_queue = RQQueue("interop-c", connection=conn)
    parent = rq_queue.enqueue(tasks.add, 1, 1, result_ttl=600)
    child = rq_queue.enqueue(tasks.add, 2, 2, depends_on=parent)
    # Far enough ahead that the first burst (three jobs and a worker's start,
    # which took over a second on a loaded machine) ends before it is due.
    later = rq_queue.enqueue_in(timedelta(seconds=4), tasks.add, 3, 3)
    gone = rq_queue.enqueue(tasks.add, 4, 4, result_ttl=0)
    assert child.get_status() == "deferred" and later.get_status() == "scheduled"
    q = Queue("interop-c", connection=url)
    assert q.deferred_job_registry.get_job_ids() == [child.id]
    assert q.scheduled_job_registry.get_job_ids() == [later.id]
    due = conn.zscore("rq:scheduled:interop-c", later.id)
    assert Worker([q]).work(burst=True)
    assert time.time() < due, "the first burst outlasted the schedule: the check below proves nothing"
    assert Job.fetch(later.id, connection=url).get_status() == "scheduled"  # not run early
    time.sleep(due - time.time() + 0.1)
    assert Worker([q]).work(burst=True)
    for job, value in ((parent, 2), (child, 4), (later, 6)):
        job.refresh()  # rq's own view
        assert job.get_status() == "finished" and job.return_value() == value, job.id
    assert not RQJob.exists(gone.id, connection=conn)  # result_ttl=0: deleted at once
    out = rq_cli("info", "--url", url, "interop-c")
    assert out.returncode == 0, out.stderr
    assert re.search(r"^interop-c\s*\|\S* 0, 0 executing, 3 finished, 0 failed", out.stdout, re.M), (
        out.stdout)


def test_rq_requeue_and_rq_empty_act_on_plugq_jobs(url):
    q = Queue("interop-d", connection=url)
    bad = q.enqueue(tasks.fail, "first run")
    assert Worker([q]).work(burst=True)
    assert bad.get_status() == "failed"
    out = rq_cli("requeue", "--url", url, "--queue", "interop-d", "--all")
    assert out.returncode == 0, out.stderr
    assert bad.get_status() == "queued" and q.get_job_ids() == [bad.id]
    assert q.failed_job_registry.count == 0
    waiting = [q.enqueue(tasks.add, i, i) for i in range(3)]
    out = rq_cli("empty", "--url", url, "interop-d")
    assert out.returncode == 0, out.stderr
    assert len(q) == 0 and q.get_job_ids() == []
    from plugq import NoSuchJobError

    for j in [bad, *waiting]:
        with pytest.raises(NoSuchJobError):
            Job.fetch(j.id, connection=url)


def test_rq_reads_plugq_dependencies_and_waits_for_all_of_them(url):
    """plugq writes the dependencies set under rq 2.x's own key (``rq:job::<id>:dependencies``):
    rq sees the job's dependencies, and rq's worker, finishing one of two, leaves the
    dependent deferred."""
    from datetime import timedelta

    from redis import Redis
    from rq.job import Job as RQJob

    q = Queue("interop-deps", connection=url)
    first = q.enqueue(tasks.add, 1, 1)
    second = q.enqueue_in(timedelta(hours=1), tasks.add, 2, 2)
    both = q.enqueue(tasks.add, 3, 3, depends_on=[first, second])
    assert both.get_status() == "deferred"
    conn = Redis.from_url(url)
    assert sorted(RQJob.fetch(both.id, connection=conn).dependency_ids) == sorted([first.id, second.id])
    out = rq_cli("worker", "--burst", "--url", url, "--worker-class", "rq.worker.SimpleWorker",
                 "interop-deps")
    assert out.returncode == 0, out.stderr
    assert first.get_status() == "finished"
    assert both.get_status() == "deferred"  # still waits for the scheduled one
    assert q.get_job_ids() == []


def test_rq3_rate_limited_jobs_keep_moving_under_a_plugq_worker(url):
    """rq 3's RateLimit takes a slot at enqueue and holds back the rest in
    rq:rl:<key>:rate_limited; its worker gives the slot back at a job's end and
    queues the next. A plugq worker running those jobs does the same (else the
    held-back jobs would wait forever), including across an immediate retry
    (which keeps its slot) and a failure."""
    rq = pytest.importorskip("rq")
    if not hasattr(rq, "RateLimit"):
        pytest.skip(f"rq {rq.__version__} has no RateLimit (rq 3.0 added it)")
    from redis import Redis
    from rq import Queue as RQQueue
    from rq import RateLimit as RQRateLimit
    from rq import Retry as RQRetry

    conn = Redis.from_url(url)
    rq_queue = RQQueue("interop-rl", connection=conn)
    one = RQRateLimit("partner", concurrency=1)
    first = rq_queue.enqueue(tasks.fail, "first fails once", retry=RQRetry(max=1), rate_limit=one)
    rest = [rq_queue.enqueue(tasks.add, i, 10, rate_limit=one) for i in range(3)]
    # rq let the first through and holds back the rest
    assert conn.zrange("rq:rl:partner:allowed", 0, -1) == [first.id.encode()]
    # rq's line, first first (scored by the second of enqueue, then by id)
    line = [i.decode() for i in conn.zrange("rq:rl:partner:rate_limited", 0, -1)]
    assert sorted(line) == sorted(j.id for j in rest)
    for job in rest:
        assert job.get_status(refresh=True) == "rate_limited"

    q = Queue("interop-rl", connection=url)
    assert Worker([q], connection=url).work(burst=True)  # plugq's worker

    # Every held-back job was queued in turn and ran; the first failed after its retry.
    for i, job in enumerate(rest):
        job.refresh()
        assert job.get_status() == "finished" and job.return_value() == i + 10
    first.refresh()
    assert first.get_status() == "failed" and first.retries_left == 0
    # and rq's limiter is back at rest: no slot held, nobody waiting
    assert conn.zcard("rq:rl:partner:allowed") == 0
    assert conn.zcard("rq:rl:partner:rate_limited") == 0
    # queued by the releases in the order of rq's line, one after the other
    done = [Job.fetch(job_id, connection=url) for job_id in line]
    for before, after in pairwise(done):
        assert after.ended_at > before.ended_at


def test_rq_repeat_runs_again_under_a_plugq_worker(url):
    """rq's Repeat (rq 2.2+) on a job rq made: after each success the job runs
    again, at once for interval 0 and scheduled for a later one, as under rq's
    own worker; a failure does not repeat."""
    from redis import Redis
    from rq import Queue as RQQueue
    from rq import Repeat as RQRepeat
    from rq.job import Job as RQJob

    conn = Redis.from_url(url)
    rq_queue = RQQueue("interop-repeat", connection=conn)
    now_again = rq_queue.enqueue(tasks.add, 1, 2, repeat=RQRepeat(times=2, interval=0))
    later = rq_queue.enqueue(tasks.add, 3, 4, repeat=RQRepeat(times=2, interval=[60, 120]))
    failing = rq_queue.enqueue(tasks.fail, "no repeat", repeat=RQRepeat(times=1, interval=0))
    q = Queue("interop-repeat", connection=url)
    assert Worker([q], connection=url).work(burst=True)

    # three runs (the first and its two repeats), each one result in rq's stream
    job = RQJob.fetch(now_again.id, connection=conn)
    assert job.get_status() == "finished" and job.repeats_left == 0
    assert [r.return_value for r in job.results()] == [3, 3, 3]
    assert now_again.id not in q.scheduled_job_registry.get_job_ids()

    # one run, then scheduled 60 s on with one repeat left and the next interval first
    job = RQJob.fetch(later.id, connection=conn)
    assert job.get_status() == "scheduled" and job.repeats_left == 1
    assert job.repeat_intervals == [120]
    assert [r.return_value for r in job.results()] == [7]
    due = conn.zscore("rq:scheduled:interop-repeat", later.id)
    assert due is not None and 55 < due - time.time() <= 60
    assert later.id not in q.finished_job_registry.get_job_ids()
    assert Job.fetch(later.id, connection=url).get_status() == "scheduled"  # plugq agrees

    job = RQJob.fetch(failing.id, connection=conn)
    assert job.get_status() == "failed" and job.repeats_left == 1
