"""Dashboard server time with a large store: ``python -m benchmarks.dashboard``.

Fills a SQLite file and a private redis-server with ``--jobs`` jobs (default
100,000) across three queues and the statuses a busy system has, then asks
the dashboard (in-process, through its ASGI app) for the overview, queue
pages and the JSON and metrics endpoints, and prints the median and worst
server time of each from the ``Server-Timing`` header the app sets.

The jobs are made through the public API: enqueue_many, then workers run the
ones that should end finished or failed (``result_ttl=-1`` so they stay).
On Redis, running tens of thousands of jobs through rq takes minutes, so
``--redis-ran`` (default 5,000) of them are run and the rest stay queued.
Target (issue 17): the overview and a queue page under 100 ms each.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from plugq import Queue, Worker, connect
from plugq.testing import tasks

BATCH = 5000


def fill(url: str, jobs: int, ran: int) -> dict[str, int]:
    """``jobs`` jobs in queues default/high/emails; ``ran`` of them finished or failed."""
    backend = connect(url)
    names = ("default", "high", "emails")
    share = {"default": 0.7, "high": 0.2, "emails": 0.1}
    made = 0
    for name in names:
        q = Queue(name, connection=backend)
        n_total = int(jobs * share[name]) if name != "emails" else jobs - made
        n_ran = int(ran * share[name])
        n_fail = n_ran // 20
        made += n_total
        done = 0
        while done < n_ran:
            size = min(BATCH, n_ran - done)
            batch = [
                Queue.prepare_data(tasks.fail if i < n_fail * size // max(n_ran, 1) else tasks.add,
                                   args=("x",) if i < n_fail * size // max(n_ran, 1) else (i, 1),
                                   result_ttl=-1, failure_ttl=-1)
                for i in range(size)
            ]
            q.enqueue_many(batch)
            Worker([q], connection=backend, worker_class="simple").work(burst=True)
            done += size
        left = n_total - n_ran
        while left > 0:
            size = min(BATCH, left)
            q.enqueue_many([Queue.prepare_data(tasks.add, args=(i, 2)) for i in range(size)])
            left -= size
    counts: dict[str, int] = {}
    for name in names:
        q = Queue(name, connection=backend)
        counts[f"{name}:queued"] = q.count
        counts[f"{name}:finished"] = q.finished_job_registry.count
        counts[f"{name}:failed"] = q.failed_job_registry.count
    return counts


def measure(url: str, repeat: int) -> list[tuple[str, float, float]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from plugq.dashboard import create_app

    client = TestClient(create_app(url), base_url="http://127.0.0.1:9181")
    paths = [
        "/",
        "/queues/default?status=queued",
        "/queues/default?status=queued&page=500",
        "/queues/default?status=finished",
        "/queues/default?status=failed",
        "/failed",
        "/api/overview",
        "/api/chart (cold)",
        "/api/chart (warm)",
        "/metrics",
    ]
    rows = []
    for path in paths:
        times = []
        dash = client.app.state.dashboard  # type: ignore[attr-defined]
        for _ in range(repeat):
            # The chart is cached for 5 s: measure its computation, from scratch
            # (cold: a dashboard just started) or with the ended_at cache warm.
            dash._chart = None
            if path.endswith("(cold)"):
                dash._ended = type(dash._ended)()
            r = client.get(path.split(" ")[0])
            r.raise_for_status()
            times.append(float(r.headers["server-timing"].split("dur=")[1]))
        rows.append((path, statistics.median(times), max(times)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--sqlite-ran", type=int, default=80_000,
                        help="jobs run to finished/failed on SQLite (default 80,000)")
    parser.add_argument("--redis-ran", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--only", choices=["sqlite", "redis"], default=None)
    args = parser.parse_args(argv)
    # The failing jobs would each print a traceback.
    for logger in ("plugq", "rq"):
        logging.getLogger(logger).setLevel(logging.CRITICAL)
        logging.getLogger(logger).propagate = False
    workdir = Path(tempfile.mkdtemp(prefix="plugq-dash-bench-"))
    try:
        targets: list[tuple[str, str, int, Any]] = []
        if args.only in (None, "sqlite"):
            targets.append(("sqlite", f"sqlite:///{workdir / 'bench.db'}", args.sqlite_ran, None))
        if args.only in (None, "redis"):
            binary = shutil.which("redis-server")
            if binary is None:
                print("redis-server not found: Redis skipped", file=sys.stderr)
            else:
                from plugq.testing.redis_server import RedisServer

                server = RedisServer(binary, workdir)
                server.start()
                targets.append(("redis", server.url, args.redis_ran, server))
        for name, url, ran, server in targets:
            try:
                t0 = time.perf_counter()
                counts = fill(url, args.jobs, ran)
                print(f"\n## {name}: {sum(counts.values()):,} jobs "
                      f"({', '.join(f'{k} {v:,}' for k, v in counts.items() if v)}) "
                      f"filled in {time.perf_counter() - t0:.0f} s")
                print("| request | median ms | worst ms |\n|---|--:|--:|")
                for path, med, worst in measure(url, args.repeat):
                    print(f"| `{path}` | {med:.1f} | {worst:.1f} |")
            finally:
                if server is not None:
                    server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
