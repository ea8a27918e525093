"""The Redis storage's enqueue paths and the worker's canceled-while-running check.

Every enqueue, single or batch, is one Lua script (``INSERT``) that replaces a
job with the same id; a server refusing scripts is refused at connect with a
clear error (the primitives are Lua). A job canceled while it runs stays
canceled, with or without callbacks, on every worker class.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("rq")

from plugq import Queue, Worker
from plugq.testing import tasks

pytestmark = pytest.mark.redis


@pytest.fixture(params=["redis", "fakeredis"])
def queue(request):
    if request.param == "fakeredis":
        url = f"fakeredis://paths-{uuid.uuid4().hex}"
    else:
        server = request.getfixturevalue("redis_server")
        server.flushall()
        url = server.db_url(0)
    return Queue(f"paths-{uuid.uuid4().hex[:8]}", connection=url)


def _work(q: Queue) -> None:
    Worker([q]).work(burst=True)


@pytest.mark.parametrize("batch", [0, 1, 40], ids=["enqueue", "batch-of-1", "batch-of-40"])
def test_reenqueued_id_replaces_failed_job(queue, batch):
    queue.enqueue(tasks.fail, "first", job_id="again")
    _work(queue)
    assert queue.fetch_job("again").get_status() == "failed"
    if batch == 0:
        queue.enqueue(tasks.add, 2, 3, job_id="again")
    else:
        datas = [Queue.prepare_data(tasks.add, (2, 3), job_id="again")]
        datas += [Queue.prepare_data(tasks.add, (i, i)) for i in range(batch - 1)]
        queue.enqueue_many(datas)
    job = queue.fetch_job("again")
    assert (job.get_status(), job.args, job.exc_info) == ("queued", (2, 3), None)
    assert "again" not in queue.failed_job_registry.get_job_ids()
    assert queue.get_job_ids().count("again") == 1
    _work(queue)
    assert queue.fetch_job("again").return_value() == 5


def test_returned_job_reads_as_fetched(queue):
    job = queue.enqueue(tasks.add, 1, 2, job_timeout=1.5, meta={"k": 1}, ttl=100)
    fetched = queue.fetch_job(job.id)
    assert job._record == fetched._record


def test_a_server_refusing_scripts_is_a_clear_error(redis_server):
    """An ACL without EVALSHA/EVAL: refused at connect, naming what is missing."""
    import redis

    from plugq import BackendUnavailableError

    redis_server.flushall()
    admin = redis.Redis.from_url(redis_server.url)
    user = f"noscript{uuid.uuid4().hex[:6]}"
    admin.acl_setuser(user, enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                      commands=["+@all", "-@scripting"])
    try:
        host_port = redis_server.url.split("://", 1)[1]
        with pytest.raises(BackendUnavailableError, match="scripting"):
            Queue("noscript", connection=f"redis://{user}:pw@{host_port}/0")
    finally:
        admin.acl_deluser(user)


@pytest.mark.parametrize("worker_class", ["simple", "fork"])
@pytest.mark.parametrize("callback", [False, True], ids=["no-callback", "on-success"])
def test_canceled_while_running_stays_canceled(redis_server, tmp_path, worker_class, callback):
    redis_server.flushall()
    q = Queue("cancel-run", connection=redis_server.db_url(0))
    started, release = tmp_path / "started", tmp_path / "release"
    options = {"on_success": tasks.on_success_record, "meta": {"callback_file": str(tmp_path / "cb")}}
    job = q.enqueue(tasks.touch_then_wait, str(started), str(release), **(options if callback else {}))
    worker = threading.Thread(target=lambda: Worker([q], worker_class=worker_class).work(burst=True))
    worker.start()
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    job.cancel()
    Path(release).touch()
    worker.join(30)
    assert not worker.is_alive()
    assert q.fetch_job(job.id).get_status() == "canceled"
