"""plugq on its three backends: memory://, sqlite:/// and redis:// (real rq underneath)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.common import NotApplicable, ProcessRun, System, WorkerProc, new_hexes
from benchmarks.tasks import digit_sum, stamp

#: Jobs per enqueue_many call in the bulk runs (plugq and rq alike).
BULK_BATCH = 1000


class PlugqSystem(System):
    """The parts every plugq backend shares: the public API, nothing backend-specific."""

    queue_name = "bench"
    worker_class: str | None = None

    def url(self) -> str:
        raise NotImplementedError

    def unavailable(self) -> str | None:
        try:
            self.reset()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def reset(self) -> None:
        from plugq import Queue

        self.run_no += 1
        self.queue = Queue(self.queue_name, connection=self.url())

    def enqueue_single(self, hexes: Sequence[str]) -> list[Any]:
        enqueue = self.queue.enqueue
        return [enqueue(digit_sum, h) for h in hexes]

    def enqueue_bulk(self, hexes: Sequence[str]) -> list[Any]:
        from plugq import Queue

        jobs: list[Any] = []
        for i in range(0, len(hexes), BULK_BATCH):
            jobs += self.queue.enqueue_many(
                [Queue.prepare_data(digit_sum, (h,)) for h in hexes[i:i + BULK_BATCH]]
            )
        return jobs

    def queued_count(self) -> int:
        return self.queue.count

    def worker_spec(self, mode: str, workers: int) -> dict[str, Any]:
        return {"kind": "plugq", "mode": mode, "url": self.url(), "queue": self.queue_name,
                "worker_class": self.worker_class}

    def verify(self, handles: Sequence[Any], hexes: Sequence[str]) -> tuple[bool, str]:
        from plugq import Job

        fetched = Job.fetch_many([j.id for j in handles], connection=self.queue.backend)
        finished = sum(1 for j in fetched if j is not None and j.get_status() == "finished")
        sample = random.sample(range(len(hexes)), min(50, len(hexes)))
        bad = [i for i in sample
               if (j := fetched[i]) is None or j.return_value() != digit_sum(hexes[i])]
        ok = finished == len(hexes) and not bad
        return ok, f"{finished}/{len(hexes)} finished, {len(sample) - len(bad)}/{len(sample)} values ok"

    def enqueue_stamp(self, hex_string: str) -> Any:
        return self.queue.enqueue(stamp, hex_string)

    def stamp_result(self, handle: Any) -> tuple[float, int] | None:
        job = self.queue.fetch_job(handle.id)
        if job is None or job.get_status() != "finished":
            return None
        value: tuple[float, int] = job.return_value()
        return value


class PlugqMemory(PlugqSystem):
    name = "plugq-memory"
    aliases = frozenset({"memory", "plugq"})
    multi_process = False  # one process holds the store

    def url(self) -> str:
        return f"memory://bench{self.run_no}"

    def reset(self) -> None:
        from plugq.connection import forget

        # Drop the previous run's store so the driver does not grow run after run.
        forget(self.url())
        super().reset()

    def process(self, hexes: Sequence[str], workers: int) -> ProcessRun:
        # memory:// is in-process, so the fill, the drain and the check all
        # happen in one fresh worker process (its RSS is then meaningful).
        proc = WorkerProc({"kind": "memory", "jobs": len(hexes)}, self.log_path("w1"))
        try:
            proc.send("GO")
            r = proc.report()
        finally:
            proc.kill()
        ok = r["finished"] == len(hexes) and r["spot_ok"]
        detail = f"{r['finished']}/{len(hexes)} finished, spot-check {'ok' if r['spot_ok'] else 'BAD'}"
        return ProcessRun(r["end"] - r["start"], len(hexes), ok, r["rss_kb"], detail)

    def latency(self, samples: int) -> list[float]:
        from plugq import Worker

        self.reset()
        worker = Worker([self.queue])
        sent: list[tuple[float, Any]] = []

        def produce() -> None:
            try:
                time.sleep(0.2)
                for h in new_hexes(samples):
                    t = time.time()
                    sent.append((t, self.enqueue_stamp(h)))
                    time.sleep(0.05)
                time.sleep(0.1)
            finally:
                worker.request_stop()

        # The worker runs in the main thread, as `plugq worker` does (job
        # timeouts use SIGALRM there); the producer is the other thread.
        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        worker.work(burst=False)
        producer.join()
        out = []
        for t, job in sent:
            r = self.stamp_result(job)
            if r is None:
                raise RuntimeError(f"latency job {job.id} did not finish")
            out.append(r[0] - t)
        return out

    def drain_10k(self) -> tuple[float, bool]:
        """The issue's 'a 10,000-job test drains in < 1 s': seconds to drain 10,000 queued jobs."""
        from plugq import Worker

        self.reset()
        hexes = new_hexes(10_000)
        jobs = self.enqueue_bulk(hexes)
        start = time.perf_counter()
        Worker([self.queue]).work(burst=True)
        seconds = time.perf_counter() - start
        ok, _ = self.verify(jobs, hexes)
        self.reset()
        return seconds, ok


class PlugqSqlite(PlugqSystem):
    """plugq's default SQLite settings (WAL, synchronous=normal).

    ``synchronous="full"`` is the ``plugq-sqlite-full`` row: an fsync per
    commit, the durability huey's SqliteHuey has by default, so the ratio
    against huey can be read like for like.
    """

    name = "plugq-sqlite"
    aliases = frozenset({"sqlite", "plugq"})
    peer = "huey-sqlite"

    def __init__(self, workdir: Any, synchronous: str | None = None) -> None:
        super().__init__(workdir)
        self.synchronous = synchronous
        if synchronous is not None:
            self.name = f"plugq-sqlite-{synchronous}"
            self.aliases = frozenset({"sqlite", "plugq", self.name})

    def url(self) -> str:
        query = f"?synchronous={self.synchronous}" if self.synchronous else ""
        return f"sqlite:///{self.workdir}/{self.name}-{self.run_no}.db{query}"

    def reset(self) -> None:
        from plugq.connection import forget

        forget(self.url())
        super().reset()


class PlugqRedis(PlugqSystem):
    """plugq on redis:// runs rq's own workers; ``worker_class`` picks rq's class."""

    aliases = frozenset({"redis", "plugq-redis", "plugq"})

    def __init__(self, workdir: Any, redis_url: str | None, worker_class: str) -> None:
        super().__init__(workdir)
        self.redis_url = redis_url
        self.worker_class = worker_class
        self.name = f"plugq-redis-{worker_class}"
        self.peer = f"rq-{worker_class}"
        self.measures_enqueue = worker_class == "simple"
        self.job_scale = 1.0 if worker_class == "simple" else 0.25

    def url(self) -> str:
        if self.redis_url is None:
            raise NotApplicable("no redis-server on PATH")
        return self.redis_url

    def reset(self) -> None:
        import redis

        redis.Redis.from_url(self.url()).flushdb()
        super().reset()
