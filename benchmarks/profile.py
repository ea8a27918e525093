"""cProfile of plugq's hot paths: ``python -m benchmarks.profile [memory|sqlite|redis URL] …``.

Profiles, in this process, the three paths every job takes: ``enqueue`` (one
call per job), ``enqueue_many`` (batches of 1,000) and ``work`` (a burst
worker draining the queue: claim, run, complete). Prints the rate without the
profiler first, then the functions with the most time of their own.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
import uuid
from collections.abc import Callable

from benchmarks.tasks import digit_sum


def _url(backend: str) -> str:
    if backend == "memory":
        return f"memory://profile-{uuid.uuid4().hex}"
    if backend == "sqlite":
        return f"sqlite:///{tempfile.mkdtemp(prefix='plugq-profile-')}/profile.db"
    return backend  # a redis:// URL


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    p.add_argument("backend", nargs="?", default="memory", help="memory, sqlite or a redis:// URL")
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--paths", default="enqueue,enqueue_many,work")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumtime)")
    args = p.parse_args(argv)

    from plugq import Queue, Worker

    hexes = [uuid.uuid4().hex for _ in range(args.jobs)]

    def fresh() -> Queue:
        if args.backend not in ("memory", "sqlite"):
            import redis

            redis.Redis.from_url(args.backend).flushdb()
        return Queue("profile", connection=_url(args.backend))

    def enqueue(q: Queue) -> Callable[[], object]:
        return lambda: [q.enqueue(digit_sum, h) for h in hexes]

    def enqueue_many(q: Queue) -> Callable[[], object]:
        def run() -> None:
            for i in range(0, len(hexes), 1000):
                q.enqueue_many([Queue.prepare_data(digit_sum, (h,)) for h in hexes[i:i + 1000]])
        return run

    def work(q: Queue) -> Callable[[], object]:
        enqueue_many(q)()
        return lambda: Worker([q], worker_class="simple").work(burst=True)

    paths = {"enqueue": enqueue, "enqueue_many": enqueue_many, "work": work}
    for name in args.paths.split(","):
        make = paths[name]
        body = make(fresh())
        start = time.perf_counter()
        body()
        rate = len(hexes) / (time.perf_counter() - start)
        body = make(fresh())
        prof = cProfile.Profile()
        prof.enable()
        body()
        prof.disable()
        print(f"\n=== {name} on {args.backend}: {rate:,.0f} jobs/s without the profiler ===")
        pstats.Stats(prof, stream=sys.stdout).sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
