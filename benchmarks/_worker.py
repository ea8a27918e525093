"""A worker process of the benchmark: ``python -m benchmarks._worker '<json spec>'``.

Each system's worker runs here the way its users run it (plugq's Worker, rq's
SimpleWorker / Worker in burst mode, huey's consumer as huey_consumer sets it
up, a get/ack loop for persist-queue).

Protocol on stdin/stdout, so that imports and setup stay outside the clock:

* ``burst`` mode: print ``READY``, wait for a line on stdin (``GO``), process
  until the queue is empty (huey has no burst mode: it runs until a second
  line, ``STOP``), then print one JSON line: ``end`` (epoch seconds after the
  last job), peak RSS of this process and of its children in KiB.
* ``serve`` mode: print ``READY`` and work until terminated (latency runs).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
from typing import Any

#: The protocol channel: the original stdout. main() points fd 1 at stderr,
#: because rq's worker logs to stdout and would garble the protocol.
_proto = sys.stdout


def _ready() -> None:
    print("READY", file=_proto, flush=True)


def _wait_line() -> None:
    sys.stdin.readline()


def _peak_rss_kb() -> int:
    """Peak RSS of this process in KiB.

    getrusage's ru_maxrss survives execve on Linux, so a worker started from a
    large driver would report the driver's size; VmHWM belongs to this image.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _report(**fields: Any) -> None:
    fields["rss_kb"] = _peak_rss_kb()
    fields["children_rss_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps(fields), file=_proto, flush=True)


def run_plugq(spec: dict[str, Any]) -> None:
    from plugq import Queue, Worker

    q = Queue(spec["queue"], connection=spec["url"])
    w = Worker([q], worker_class=spec.get("worker_class"))
    _ready()
    if spec["mode"] == "burst":
        _wait_line()
        w.work(burst=True)
        _report(end=time.time())
    else:
        w.work(burst=False)


def run_rq(spec: dict[str, Any]) -> None:
    from redis import Redis
    from rq import Queue, SimpleWorker, Worker

    conn = Redis.from_url(spec["url"])
    q = Queue(spec["queue"], connection=conn)
    cls = SimpleWorker if spec["worker_class"] == "simple" else Worker
    w = cls([q], connection=conn)
    _ready()
    if spec["mode"] == "burst":
        _wait_line()
        w.work(burst=True)  # rq's defaults, logging at INFO included, as `rq worker --burst`
        _report(end=time.time())
    else:
        w.work()


def run_huey(spec: dict[str, Any]) -> None:
    from huey.consumer_options import ConsumerConfig

    from benchmarks.huey_app import make_app

    app = make_app(spec["huey"])
    # Exactly what huey_consumer does: default options, INFO logging on 'huey'.
    config = ConsumerConfig(workers=spec["workers"], worker_type=spec["worker_type"])
    config.validate()
    config.setup_logger(logging.getLogger("huey"))
    consumer = app.huey.create_consumer(**config.values)
    _ready()
    if spec["mode"] == "burst":
        _wait_line()
        consumer.start()
        _wait_line()  # the driver saw every result stored
        consumer.stop(graceful=True)
        _report(end=None)
    else:
        consumer.run()


def run_persistqueue(spec: dict[str, Any]) -> None:
    from persistqueue import SQLiteAckQueue
    from persistqueue.exceptions import Empty

    from benchmarks.tasks import digit_sum

    q = SQLiteAckQueue(spec["path"], multithreading=False)
    _ready()
    _wait_line()
    # persist-queue has no worker and no result store: the loop a user writes
    # is get -> run -> ack (the ack is the stored outcome).
    while True:
        try:
            item = q.get(block=False)
        except Empty:
            break
        digit_sum(item)
        q.ack(item)
    _report(end=time.time())


def run_procrastinate(spec: dict[str, Any]) -> None:
    from benchmarks.procrastinate_app import make_app

    app = make_app(spec["url"])
    _ready()
    if spec["mode"] == "burst":
        _wait_line()
        # What `procrastinate worker --wait=False` runs: stop when the queue is empty.
        app.run_worker(queues=["bench"], wait=False, concurrency=1,
                       install_signal_handlers=False)
        _report(end=time.time())
    else:
        app.run_worker(queues=["bench"], concurrency=1)


def run_pgqueuer(spec: dict[str, Any]) -> None:
    import asyncio
    from datetime import timedelta

    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    from benchmarks.tasks import digit_sum

    async def main() -> None:
        conn = await asyncpg.connect(spec["url"])
        qm = QueueManager(Queries(AsyncpgDriver(conn)))

        @qm.entrypoint("digit_sum")
        async def digit_sum_job(job: Job) -> None:
            digit_sum(job.payload.decode() if job.payload else "")

        _ready()
        if spec["mode"] == "burst":
            await asyncio.get_running_loop().run_in_executor(None, _wait_line)
            await qm.run(batch_size=spec["batch_size"], mode=QueueExecutionMode.drain,
                         dequeue_timeout=timedelta(seconds=1))
            _report(end=time.time())
        else:
            await qm.run(batch_size=spec["batch_size"])

    asyncio.run(main())


def run_memory(spec: dict[str, Any]) -> None:
    """memory:// lives in one process: fill, drain and verify here."""
    import random
    import uuid

    from benchmarks.tasks import digit_sum
    from plugq import Job, Queue, Worker

    q = Queue("bench", connection="memory://bench")
    hexes = [uuid.uuid4().hex for _ in range(spec["jobs"])]
    jobs = q.enqueue_many([Queue.prepare_data(digit_sum, (h,)) for h in hexes])
    w = Worker([q])
    _ready()
    _wait_line()
    start = time.time()
    w.work(burst=True)
    end = time.time()
    fetched = Job.fetch_many([j.id for j in jobs], connection=q.backend)
    finished = sum(1 for j in fetched if j is not None and j.get_status() == "finished")
    sample = random.sample(range(len(hexes)), min(50, len(hexes)))
    spot_ok = all(
        (j := fetched[i]) is not None and j.return_value() == digit_sum(hexes[i]) for i in sample
    )
    _report(start=start, end=end, finished=finished, spot_ok=spot_ok)


RUNNERS = {
    "plugq": run_plugq,
    "rq": run_rq,
    "huey": run_huey,
    "persistqueue": run_persistqueue,
    "memory": run_memory,
    "procrastinate": run_procrastinate,
    "pgqueuer": run_pgqueuer,
}


def main() -> None:
    global _proto
    _proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    spec = json.loads(sys.argv[1])
    RUNNERS[spec["kind"]](spec)


if __name__ == "__main__":
    main()
