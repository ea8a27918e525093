"""``python -m benchmarks.redis_depth``: Redis memory per queued job, and processing under a deep queue.

* bytes of Redis ``used_memory`` per queued job, 20,000 digit-sum jobs
  enqueued with ``enqueue_many`` (plugq) and rq's ``enqueue_many`` (raw rq),
  same server, one after the other;
* plugq's processing rate (one in-process simple worker, ``max_jobs``) with
  ``--deep`` jobs queued behind it, against the same with only the measured
  jobs queued: "flat" means the two rates match within noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.__main__ import redis_server
from benchmarks.tasks import digit_sum

BATCH = 1000


def _hexes(n: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(n)]


def _used(conn: Any) -> int:
    return int(conn.info("memory")["used_memory"])


def plugq_bytes_per_job(url: str, n: int) -> float:
    import redis

    from plugq import Queue

    conn = redis.Redis.from_url(url)
    conn.flushdb()
    q = Queue("depth", connection=url)
    q.enqueue(digit_sum, "warm")
    q.empty()
    before = _used(conn)
    hexes = _hexes(n)
    for i in range(0, n, BATCH):
        q.enqueue_many([Queue.prepare_data(digit_sum, (h,)) for h in hexes[i:i + BATCH]])
    after = _used(conn)
    assert len(q) == n
    conn.flushdb()
    return (after - before) / n


def rq_bytes_per_job(url: str, n: int) -> float:
    import redis
    from rq import Queue

    conn = redis.Redis.from_url(url)
    conn.flushdb()
    q = Queue("depth", connection=conn)
    q.enqueue(digit_sum, "warm")
    q.empty()
    before = _used(conn)
    hexes = _hexes(n)
    for i in range(0, n, BATCH):
        with conn.pipeline() as pipe:
            q.enqueue_many([Queue.prepare_data(digit_sum, (h,)) for h in hexes[i:i + BATCH]],
                           pipeline=pipe)
            pipe.execute()
    after = _used(conn)
    assert q.count == n
    conn.flushdb()
    return (after - before) / n


def plugq_rate(url: str, measured: int, behind: int) -> float:
    """Jobs/s of one simple worker taking ``measured`` jobs with ``behind`` more queued."""
    import redis

    from plugq import Queue, Worker

    conn = redis.Redis.from_url(url)
    conn.flushdb()
    q = Queue("depth", connection=url)
    hexes = _hexes(measured + behind)
    for i in range(0, len(hexes), BATCH):
        q.enqueue_many([Queue.prepare_data(digit_sum, (h,)) for h in hexes[i:i + BATCH]])
    w = Worker([q], name=f"depth-{uuid.uuid4().hex[:6]}")
    start = time.perf_counter()
    w.work(burst=True, max_jobs=measured, with_scheduler=False)
    seconds = time.perf_counter() - start
    assert w.successful_job_count == measured
    conn.flushdb()
    return measured / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="queued jobs for the memory figure")
    parser.add_argument("--deep", type=int, default=200_000, help="jobs queued behind the measured ones")
    parser.add_argument("--measured", type=int, default=3_000, help="jobs timed for each rate")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    with redis_server() as port:
        if port is None:
            print("no redis-server on PATH")
            return 1
        url = f"redis://127.0.0.1:{port}/0"
        plugq_b = statistics.median(plugq_bytes_per_job(url, args.jobs) for _ in range(args.runs))
        rq_b = statistics.median(rq_bytes_per_job(url, args.jobs) for _ in range(args.runs))
        shallow, deep = [], []
        for _ in range(args.runs):  # interleaved: the machine's load hits both alike
            shallow.append(plugq_rate(url, args.measured, 0))
            deep.append(plugq_rate(url, args.measured, args.deep))
    figures = {
        "plugq_bytes_per_queued_job": plugq_b, "rq_bytes_per_queued_job": rq_b,
        "bytes_ratio": plugq_b / rq_b, "rate_shallow": statistics.median(shallow),
        "rate_deep": statistics.median(deep), "deep": args.deep, "measured": args.measured,
    }
    figures["rate_ratio"] = figures["rate_deep"] / figures["rate_shallow"]
    print(f"Redis memory per queued job ({args.jobs:,} queued): plugq {plugq_b:,.0f} bytes, "
          f"raw rq {rq_b:,.0f} bytes ({figures['bytes_ratio']:.2f}x)")
    print(f"plugq processing, one simple worker: {figures['rate_shallow']:,.0f} jobs/s with "
          f"{args.measured:,} queued, {figures['rate_deep']:,.0f} jobs/s with {args.deep:,} more "
          f"queued behind ({figures['rate_ratio']:.2f}x)")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
