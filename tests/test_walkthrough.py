"""RQ's getting-started walk-through with only the import line changed.

Runs on every backend in the repo (the ``walkthrough_url`` fixture in
conftest lists them).
"""

from __future__ import annotations

from plugq import Job, Queue, Worker  # was: from rq import Queue, Worker; from rq.job import Job
from plugq.testing.tasks import sum_numbers_from_string


def test_getting_started(walkthrough_url):
    conn = walkthrough_url
    q = Queue(connection=conn)  # no args implies the default queue
    assert repr(q) == "Queue('default')"
    q.empty()

    job = q.enqueue(sum_numbers_from_string, "hbj2-plug-2")
    job_id = job.get_id()
    assert job.get_status() == "queued"
    assert job.result is None

    d = job.to_dict()
    assert {"created_at", "data", "origin", "description", "enqueued_at", "started_at",
            "ended_at", "timeout", "status"} <= set(d)
    assert d["description"] == "plugq.testing.tasks.sum_numbers_from_string('hbj2-plug-2')"
    assert d["timeout"] == 180
    assert d["origin"] == "default"

    assert [j.id for j in q.get_jobs()] == [job_id]
    assert q.get_job_ids() == [job_id]
    assert q.fetch_job(job_id).id == job_id
    assert Job.key_for(job_id=job_id) == f"rq:job:{job_id}".encode()
    assert len(q) == 1

    q1 = Queue("queue1", connection=conn)
    assert repr(q1) == "Queue('queue1')"
    job1 = q1.enqueue(sum_numbers_from_string, "a1b2c3")
    assert len(q1) == 1

    worker = Worker([q, q1], connection=conn, name="worker1")
    assert worker.work(burst=True) is True

    assert job.get_status() == "finished"
    assert job.result == 4
    assert job1.result == 6
    assert Job.fetch(job_id, connection=conn).worker_name == "worker1"
    assert len(q) == 0

    for i in range(3):
        q1.enqueue(sum_numbers_from_string, str(i))
    assert q1.empty() == 3
    q1.enqueue(sum_numbers_from_string, "9")
    q1.delete(delete_jobs=True)
    assert len(q1) == 0
