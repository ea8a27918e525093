"""``python -m benchmarks.redis_beyond``: Redis processing with issue 16's features in use.

One in-process simple worker takes ``--measured`` digit-sum jobs from a
private redis-server, in three forms, interleaved run by run so the machine's
load hits them alike:

* **plain**: priority 0, no limit (rq's own list and nothing else);
* **priority**: the same jobs spread over priorities -1, 0, 1 and 2 (three
  plugq level lists beside rq's list; the claim picks the highest level);
* **ratelimit**: every job under one ``RateLimit(concurrency=64)``, which one
  worker never reaches (the admission runs inside the claim script, the put
  that ends a job reads the limit's line, and the holders are repaired every
  64 jobs; no job waits);
* **rate+priority**: issue 16's own words, "priorities and a rate limit in
  use": the priorities above and ``RateLimit(limit=1_000_000, period=1.0)``;
* **both**: the priorities and one limit of both forms
  (``concurrency=64, limit=1_000_000, period=1.0``).

The figure is each form's jobs/s against plain's (target: at least 0.80),
and the worker's round trips to Redis per job: requests that wait for a reply
(a command, a pipeline or a script is one), counted at redis-py's connection;
the commands sent on the ``CLIENT REPLY OFF`` connection (the mark of a job
claimed ahead being begun, see docs/redis.md) wait for nothing and are shown
apart. On a loaded machine the rates swing run to run, the round trips do not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.__main__ import redis_server
from benchmarks.tasks import digit_sum

BATCH = 1000
FORMS = ("plain", "priority", "ratelimit", "rate+priority", "both")


def _prepared(form: str, n: int) -> list[Any]:
    from plugq import Queue, RateLimit

    limits = {"ratelimit": RateLimit("bench", concurrency=64),
              "rate+priority": RateLimit("bench-rate", limit=1_000_000, period=1.0),
              "both": RateLimit("bench-both", concurrency=64, limit=1_000_000, period=1.0)}
    out = []
    for i in range(n):
        h = uuid.uuid4().hex
        options: dict[str, Any] = {}
        if form in ("priority", "rate+priority", "both"):
            options["priority"] = i % 4 - 1
        if form in limits:
            options["rate_limit"] = limits[form]
        out.append(Queue.prepare_data(digit_sum, (h,), **options))
    return out


class _RoundTrips:
    """Counts the requests redis-py sends: ``count`` those that wait for a reply
    (one per command, one per pipeline), ``unanswered`` those sent through
    :class:`plugq_rq._connection.NoReply` (``CLIENT REPLY OFF``: no reply, no wait)."""

    def __init__(self) -> None:
        from redis.connection import Connection

        from plugq_rq._connection import NoReply

        self.count = 0
        self.unanswered = 0
        self._cls, self._no_reply = Connection, NoReply
        self._orig = Connection.send_packed_command
        self._orig_send = NoReply.send
        self._silent = threading.local()

    def __enter__(self) -> _RoundTrips:
        orig, orig_send, silent = self._orig, self._orig_send, self._silent

        def counted(conn: Any, command: Any, check_health: bool = True) -> None:
            if getattr(silent, "on", False):
                self.unanswered += 1
            else:
                self.count += 1
            orig(conn, command, check_health)

        def sent(no_reply: Any, *args: Any) -> bool:
            silent.on = True
            try:
                return orig_send(no_reply, *args)
            finally:
                silent.on = False

        self._cls.send_packed_command = counted  # type: ignore[method-assign]
        self._no_reply.send = sent  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self._cls.send_packed_command = self._orig  # type: ignore[method-assign]
        self._no_reply.send = self._orig_send  # type: ignore[method-assign]


def rate(url: str, form: str, measured: int) -> tuple[float, float, float]:
    """(jobs/s, round trips per job, commands sent without a reply per job) of one
    simple worker taking ``measured`` jobs of ``form``."""
    import redis

    from plugq import Queue, Worker

    conn = redis.Redis.from_url(url)
    conn.flushdb()
    q = Queue("beyond", connection=url)
    jobs = _prepared(form, measured)
    for i in range(0, measured, BATCH):
        q.enqueue_many(jobs[i:i + BATCH])
    w = Worker([q], name=f"beyond-{uuid.uuid4().hex[:6]}")
    with _RoundTrips() as trips:
        start = time.perf_counter()
        w.work(burst=True, max_jobs=measured, with_scheduler=False)
        seconds = time.perf_counter() - start
    assert w.successful_job_count == measured, (form, w.successful_job_count)
    conn.flushdb()
    return measured / seconds, trips.count / measured, trips.unanswered / measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measured", type=int, default=3_000, help="jobs timed per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {f: [] for f in FORMS}
    trips: dict[str, list[float]] = {f: [] for f in FORMS}
    unanswered: dict[str, list[float]] = {f: [] for f in FORMS}
    with redis_server() as port:
        if port is None:
            print("no redis-server on PATH")
            return 1
        url = f"redis://127.0.0.1:{port}/0"
        rate(url, "plain", min(500, args.measured))  # warm: imports, scripts loaded
        for _ in range(args.runs):
            for form in FORMS:
                jobs_s, per_job, silent = rate(url, form, args.measured)
                rates[form].append(jobs_s)
                trips[form].append(per_job)
                unanswered[form].append(silent)
    med = {f: statistics.median(r) for f, r in rates.items()}
    figures: dict[str, Any] = {"measured": args.measured, "runs": args.runs, "rates": rates,
                               "median": med, "round_trips_per_job": trips,
                               "sent_without_reply_per_job": unanswered}
    for form in FORMS:
        # the ratio of each run to the plain run next to it: the load hits both alike
        ratio = statistics.median(a / b for a, b in zip(rates[form], rates["plain"], strict=True))
        figures[f"{form}_ratio"] = ratio
        print(f"{form:>13}: {med[form]:,.0f} jobs/s (median of {args.runs}; {ratio:.2f}x plain, "
              f"median of the per-run ratios), {statistics.median(trips[form]):.2f} round trips a job "
              f"(+ {statistics.median(unanswered[form]):.2f} commands sent without a reply)")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
