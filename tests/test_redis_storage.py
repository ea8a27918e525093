"""RedisStorage (rq's layout, Lua primitives): the primitive-level contract on a real
redis-server and on fakeredis, and that plugq_rq never touches a private rq name."""

from __future__ import annotations

import ast
import uuid
from pathlib import Path

import pytest

pytest.importorskip("rq")

from plugq.testing.storage import StorageConformance

pytestmark = pytest.mark.redis


class TestRedisStorage(StorageConformance):
    @pytest.fixture
    def storage(self, redis_server):
        from plugq_rq.storage import RedisStorage

        redis_server.flushall()
        s = RedisStorage(redis_server.url)
        yield s
        s.close()


class TestFakeRedisStorage(StorageConformance):
    @pytest.fixture
    def storage(self):
        from plugq_rq.storage import RedisStorage

        s = RedisStorage(f"fakeredis://storage-{uuid.uuid4().hex}")
        yield s
        s.close()


# -- no private rq name ------------------------------------------------------------

PACKAGE = Path(__file__).resolve().parents[1] / "backends" / "plugq_rq"
#: namedtuple's documented methods (urlsplit's result uses ``_replace``).
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make"}


def private_rq_uses(source: str, filename: str = "<source>") -> list[str]:
    """Every place ``source`` reaches a private name of rq (or of anything but itself).

    Flags ``import rq._x`` / ``from rq._x import y`` / ``from rq.x import _y``,
    and any ``obj._attr`` on an object other than ``self``/``cls`` (how a
    private attribute of an rq module, class or object would be reached).
    """
    tree = ast.parse(source, filename)
    found: list[str] = []

    def private(name: str) -> bool:
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "rq" and any(private(p) for p in parts):
                    found.append(f"{filename}:{node.lineno} import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rq":
            if any(private(p) for p in node.module.split(".")):
                found.append(f"{filename}:{node.lineno} from {node.module}")
            for alias in node.names:
                if private(alias.name):
                    found.append(f"{filename}:{node.lineno} from {node.module} import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                continue
            if node.attr in NAMEDTUPLE_API:
                continue
            found.append(f"{filename}:{node.lineno} {ast.unparse(node)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
            "getattr", "setattr", "hasattr", "delattr"
        ) and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and isinstance(
            node.args[1].value, str
        ) and private(node.args[1].value):
            found.append(f"{filename}:{node.lineno} {ast.unparse(node)}")
    return found


def test_plugq_rq_touches_no_private_rq_name():
    files = sorted(PACKAGE.glob("*.py"))
    assert files, PACKAGE
    found = [hit for f in files for hit in private_rq_uses(f.read_text(), f.name)]
    assert found == []


@pytest.mark.parametrize("source", [
    "from rq.queue import Queue\nQueue('q')._enqueue_job(j)\n",
    "import rq\nrq.job._x\n",
    "from rq.job import _private\n",
    "from rq._internal import x\n",
    "job = make()\njob._dependency_ids = []\n",
    "getattr(job, '_id')\n",
])
def test_the_private_name_check_can_fail(source):
    assert private_rq_uses(source)


# -- claim ahead -------------------------------------------------------------------


def _fake_url() -> str:
    return f"fakeredis://ahead-{uuid.uuid4().hex}"


def test_a_stopping_worker_hands_its_claimed_ahead_job_back_as_it_was():
    from plugq import Queue, Worker
    from plugq.testing import tasks

    q = Queue("ahead", connection=_fake_url())
    jobs = [q.enqueue(tasks.add, i, i) for i in range(3)]
    assert Worker([q]).work(burst=True, max_jobs=1)
    assert jobs[0].get_status() == "finished"
    assert q.get_job_ids() == [jobs[1].id, jobs[2].id]
    again = q.fetch_job(jobs[1].id)
    assert (again.get_status(), again.attempts, again.worker_name, again.started_at) == (
        "queued", 0, None, None)
    assert q.started_job_registry.count == 0
    storage = q.backend.storage
    assert storage.redis.zcard("rq:wip:ahead") == 0
    assert Worker([q]).work(burst=True)
    assert [j.get_status() for j in jobs] == ["finished"] * 3


def test_jobs_claimed_ahead_run_once_each_in_queue_order():
    from plugq import Queue, Worker
    from plugq.testing import tasks

    q = Queue("order", connection=_fake_url())
    jobs = [q.enqueue(tasks.add, i, 0) for i in range(20)]
    assert Worker([q]).work(burst=True)
    assert [j.result for j in jobs] == list(range(20))
    assert [j.attempts for j in jobs] == [1] * 20
    started = [j.started_at for j in jobs]
    assert started == sorted(started)


# -- enqueue_many ------------------------------------------------------------------


def test_a_batch_registers_and_wakes_each_queue_once(redis_server):
    """rq:queues and the wake-up publish are per queue of the batch, not per job."""
    from plugq import Queue

    redis_server.flushall()
    url = redis_server.url
    q, other = Queue("batch", connection=url), Queue("other", connection=url)
    storage = q.backend.storage
    listener = storage.redis.pubsub()
    listener.psubscribe("plugq:wake:*")
    assert listener.get_message(timeout=5)["type"] == "psubscribe"
    jobs = q.enqueue_many([Queue.prepare_data(sum, ([i],)) for i in range(50)])
    more = other.enqueue_many([Queue.prepare_data(sum, ([i],)) for i in range(3)])
    wakes = []
    while (msg := listener.get_message(timeout=0.5)) is not None:
        wakes.append(msg["channel"])
    listener.close()
    assert wakes == [b"plugq:wake:batch", b"plugq:wake:other"]
    assert storage.redis.smembers("rq:queues") == {b"rq:queue:batch", b"rq:queue:other"}
    assert q.get_job_ids() == [j.id for j in jobs]
    assert other.get_job_ids() == [j.id for j in more]


def test_a_live_workers_claimed_ahead_job_stays_with_it_when_all_started_jobs_are_asked_for():
    """A worker back from an outage asks for every started job (now=inf) and keeps its own:
    another, live worker's job claimed ahead is not put back under it."""
    import time

    from plugq import Queue
    from plugq._rules import mark_finished
    from plugq.storage import JobStatus, WorkerRecord
    from plugq.testing import tasks

    q = Queue("inf", connection=_fake_url())
    jobs = [q.enqueue(tasks.add, i, i) for i in range(2)]
    storage = q.backend.storage
    now = time.time()
    storage.register_worker(WorkerRecord(name="live", queues=["inf"], pid=1, hostname="h",
                                         birth=now, last_heartbeat=now))
    rec = storage.claim(["inf"], "live", now)
    assert rec is not None and rec.id == jobs[0].id
    mark_finished(rec, None, now)
    assert storage.put(rec, expected={JobStatus.STARTED}, expected_attempts=rec.attempts)
    key = f"rq:job:{jobs[1].id}"
    assert storage.redis.hexists(key, "plugq_ahead")  # claimed ahead by "live"
    everything = storage.started_by_dead_workers(float("inf"))
    assert [r.id for r in everything] == [jobs[1].id]
    assert jobs[1].get_status() == "started" and storage.redis.hexists(key, "plugq_ahead")
    assert storage.claim(["inf"], "live", now).id == jobs[1].id  # still its to run


def test_commands_sent_without_a_reply_take_effect_on_one_connection(redis_server):
    """NoReply (BEGUN of a claim ahead goes through it): sent, applied in order, no reply
    waited for, one connection kept (fakeredis too)."""
    import time

    import fakeredis
    import redis

    from plugq_rq._connection import NoReply

    redis_server.flushall()
    client = redis.Redis.from_url(redis_server.url)
    sender = NoReply(client)
    assert sender.send("SET", "nr:1", "a")
    first = sender._conn
    assert sender.send(b"*3\r\n$3\r\nSET\r\n$4\r\nnr:2\r\n$1\r\nb\r\n")  # already RESP
    end = time.monotonic() + 5
    while client.get("nr:2") is None and time.monotonic() < end:
        time.sleep(0.01)
    assert (client.get("nr:1"), client.get("nr:2")) == (b"a", b"b")
    assert sender._conn is first
    sender.close()
    fake = fakeredis.FakeRedis()
    assert NoReply(fake).send("SET", "nr:3", "c")
    assert fake.get("nr:3") == b"c"
