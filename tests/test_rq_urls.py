"""URL forms of the Redis backend that DESIGN.md promises."""

from __future__ import annotations

from plugq import Queue, Worker, connect
from plugq.testing import tasks


def test_bare_fakeredis_url_works():
    q = Queue("bare", connection="fakeredis://")
    q.empty()
    job = q.enqueue(tasks.add, 1, 2)
    Worker([q], worker_class="simple").work(burst=True)
    assert job.get_status() == "finished"
    assert job.result == 3
    assert connect("fakeredis://") is q.backend
