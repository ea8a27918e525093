"""The peers, each with its default settings and used the way its documentation shows."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import NotApplicable, System
from benchmarks.plugq_systems import BULK_BATCH
from benchmarks.tasks import digit_sum, stamp


class RawRq(System):
    """rq itself on the same Redis: SimpleWorker or the forking Worker, burst mode."""

    aliases = frozenset({"rq", "raw-rq"})
    queue_name = "bench"

    def __init__(self, workdir: Path, redis_url: str | None, worker_class: str) -> None:
        super().__init__(workdir)
        self.redis_url = redis_url
        self.worker_class = worker_class
        self.name = f"rq-{worker_class}"
        self.measures_enqueue = worker_class == "simple"
        self.job_scale = 1.0 if worker_class == "simple" else 0.25

    def unavailable(self) -> str | None:
        if self.redis_url is None:
            return "no redis-server on PATH"
        try:
            import rq  # noqa: F401
        except ImportError:
            return "rq is not installed (pip install plugq[redis])"
        return None

    def reset(self) -> None:
        from redis import Redis
        from rq import Queue

        assert self.redis_url is not None
        self.run_no += 1
        self.conn = Redis.from_url(self.redis_url)
        self.conn.flushdb()
        self.queue = Queue(self.queue_name, connection=self.conn)

    def close(self) -> None:
        if hasattr(self, "conn"):
            self.conn.close()

    def enqueue_single(self, hexes: Sequence[str]) -> list[Any]:
        enqueue = self.queue.enqueue
        return [enqueue(digit_sum, h) for h in hexes]

    def enqueue_bulk(self, hexes: Sequence[str]) -> list[Any]:
        from rq import Queue

        jobs: list[Any] = []
        for i in range(0, len(hexes), BULK_BATCH):
            # rq's documented bulk form: enqueue_many inside one pipeline.
            with self.conn.pipeline() as pipe:
                jobs += self.queue.enqueue_many(
                    [Queue.prepare_data(digit_sum, (h,)) for h in hexes[i:i + BULK_BATCH]],
                    pipeline=pipe,
                )
                pipe.execute()
        return jobs

    def queued_count(self) -> int:
        return self.queue.count

    def worker_spec(self, mode: str, workers: int) -> dict[str, Any]:
        return {"kind": "rq", "mode": mode, "url": self.redis_url, "queue": self.queue_name,
                "worker_class": self.worker_class}

    def verify(self, handles: Sequence[Any], hexes: Sequence[str]) -> tuple[bool, str]:
        from rq.job import Job

        fetched = Job.fetch_many([j.id for j in handles], connection=self.conn)
        finished = sum(1 for j in fetched if j is not None and j.get_status() == "finished")
        sample = random.sample(range(len(hexes)), min(50, len(hexes)))
        bad = [i for i in sample
               if (j := fetched[i]) is None or j.return_value() != digit_sum(hexes[i])]
        ok = finished == len(hexes) and not bad
        return ok, f"{finished}/{len(hexes)} finished, {len(sample) - len(bad)}/{len(sample)} values ok"

    def enqueue_stamp(self, hex_string: str) -> Any:
        return self.queue.enqueue(stamp, hex_string)

    def stamp_result(self, handle: Any) -> tuple[float, int] | None:
        handle.refresh()
        if handle.get_status(refresh=False) != "finished":
            return None
        value: tuple[float, int] = handle.return_value()
        return value


class Huey(System):
    """huey with SqliteHuey or RedisHuey, default storage settings, its own consumer."""

    def __init__(self, workdir: Path, kind: str, redis_port: int | None = None) -> None:
        super().__init__(workdir)
        self.kind = kind
        self.redis_port = redis_port
        self.name = f"huey-{kind}"
        self.aliases = frozenset({"huey", self.name})

    def unavailable(self) -> str | None:
        try:
            import huey  # noqa: F401
        except ImportError:
            return "huey is not installed (pip install plugq[bench])"
        if self.kind == "redis" and self.redis_port is None:
            return "no redis-server on PATH"
        return None

    def spec(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:{self.workdir}/huey-{self.run_no}.db"
        return f"redis:{self.redis_port}"

    def reset(self) -> None:
        from benchmarks.huey_app import make_app

        self.run_no += 1
        self.app = make_app(self.spec())
        self.app.huey.flush()

    def close(self) -> None:
        if hasattr(self, "app"):
            self.app.huey.storage.close()

    def enqueue_single(self, hexes: Sequence[str]) -> list[Any]:
        task = self.app.digit_sum
        return [task(h) for h in hexes]  # calling a huey task enqueues it

    def enqueue_bulk(self, hexes: Sequence[str]) -> list[Any]:
        raise NotApplicable("huey has no bulk enqueue")

    def queued_count(self) -> int:
        return int(self.app.huey.pending_count())

    def worker_spec(self, mode: str, workers: int) -> dict[str, Any]:
        # huey runs N workers as one consumer with a pool; N processes = `-k process -w N`.
        return {"kind": "huey", "mode": mode, "huey": self.spec(), "workers": workers,
                "worker_type": "thread" if workers == 1 else "process"}

    def worker_processes(self, workers: int) -> int:
        return 1

    def done_count(self) -> int | None:
        return int(self.app.huey.result_count())

    def verify(self, handles: Sequence[Any], hexes: Sequence[str]) -> tuple[bool, str]:
        stored = int(self.app.huey.result_count())
        sample = random.sample(range(len(hexes)), min(50, len(hexes)))
        bad = [i for i in sample
               if self.app.huey.result(handles[i].id, preserve=True) != digit_sum(hexes[i])]
        ok = stored == len(hexes) and not bad and self.app.huey.pending_count() == 0
        return ok, f"{stored}/{len(hexes)} results, {len(sample) - len(bad)}/{len(sample)} values ok"

    def enqueue_stamp(self, hex_string: str) -> Any:
        return self.app.stamp(hex_string)

    def stamp_result(self, handle: Any) -> tuple[float, int] | None:
        value = self.app.huey.result(handle.id, preserve=True)
        return None if value is None else (float(value[0]), int(value[1]))


class PersistQueue(System):
    """persist-queue's SQLiteAckQueue: a durable queue with acks, no worker, no result store."""

    name = "persistqueue-ack"
    aliases = frozenset({"persist-queue", "persistqueue", "persistqueue-ack"})
    has_results = False

    def unavailable(self) -> str | None:
        try:
            import persistqueue  # noqa: F401
        except ImportError:
            return "persist-queue is not installed (pip install plugq[bench])"
        return None

    def path(self) -> str:
        return str(self.workdir / f"pq-{self.run_no}")

    def reset(self) -> None:
        from persistqueue import SQLiteAckQueue

        self.run_no += 1
        self.q = SQLiteAckQueue(self.path(), multithreading=False)

    def enqueue_single(self, hexes: Sequence[str]) -> list[Any]:
        put = self.q.put
        for h in hexes:
            put(h)
        return list(hexes)

    def enqueue_bulk(self, hexes: Sequence[str]) -> list[Any]:
        raise NotApplicable("SQLiteAckQueue has no bulk put")

    def queued_count(self) -> int:
        return int(self.q.qsize())

    def worker_spec(self, mode: str, workers: int) -> dict[str, Any]:
        return {"kind": "persistqueue", "mode": mode, "path": self.path()}

    def verify(self, handles: Sequence[Any], hexes: Sequence[str]) -> tuple[bool, str]:
        from persistqueue import SQLiteAckQueue

        q = SQLiteAckQueue(self.path(), multithreading=False)
        acked = int(q.acked_count())
        ok = acked == len(hexes) and q.qsize() == 0
        return ok, f"{acked}/{len(hexes)} acked (no result store: acks only)"
