"""Inside a running job, ``Queue()`` and ``connect()`` mean the backend running it.

The configuration (here ``PLUGQ_URL``) points at another SQLite file; a task
that enqueues a child through a bare ``Queue()`` must put it on the worker's
own backend, on every backend, every worker class and in sync mode.
"""

from __future__ import annotations

import pytest

from plugq import Job, Queue, Worker, connect
from plugq.config import clear_settings_cache
from plugq.testing.tasks import enqueue_child


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """The configured URL: a file no job of these tests may touch."""
    path = tmp_path / "elsewhere" / "configured.db"
    path.parent.mkdir()
    monkeypatch.setenv("PLUGQ_URL", f"sqlite:///{path}")
    clear_settings_cache()
    yield path
    clear_settings_cache()


def _check_child_on_worker_backend(url, job, elsewhere):
    backend = connect(url)
    value = job.return_value()
    assert value is not None, job.exc_info
    assert value["url"] == backend.url
    child = Job.fetch(value["child"], connection=url)
    assert child.func_name == "plugq.testing.tasks.add"
    assert child.origin == "default"
    assert not elsewhere.exists(), "a job wrote to the configured backend, not its worker's"


def _worker_classes(url):
    if url.startswith(("redis://", "rediss://", "unix://")):
        return ["simple", "fork", "spawn"]
    return [None]


def test_bare_queue_in_a_job_uses_the_workers_backend(walkthrough_url, elsewhere):
    for worker_class in _worker_classes(walkthrough_url):
        q = Queue(connection=walkthrough_url)
        q.empty()
        job = q.enqueue(enqueue_child, "plugq.testing.tasks.add", 1, 2)
        Worker([q], connection=walkthrough_url, worker_class=worker_class).work(
            burst=True, max_jobs=1)
        assert job.get_status() == "finished", (worker_class, job.exc_info)
        _check_child_on_worker_backend(walkthrough_url, job, elsewhere)
        # The child is on the worker's queue, waiting: nothing ran it elsewhere.
        assert q.count == 1


def test_bare_queue_in_a_sync_job_uses_the_queues_backend(walkthrough_url, elsewhere):
    q = Queue(connection=walkthrough_url, is_async=False)
    job = q.enqueue(enqueue_child, "plugq.testing.tasks.add", 1, 2)
    assert job.get_status() == "finished", job.exc_info
    _check_child_on_worker_backend(walkthrough_url, job, elsewhere)


def test_outside_a_job_bare_connect_is_the_configured_backend(elsewhere):
    assert connect().url == f"sqlite:///{elsewhere}"
