"""plugq's SQLite backend beside huey's SqliteHuey, same machine, same run.

Measures, on a fresh file each:

* single enqueue: ``Queue.enqueue`` one job at a time (huey: calling a task);
* bulk enqueue: ``Queue.enqueue_many`` in batches (huey has no bulk enqueue;
  its row is single enqueue again, for reference);
* processing: one worker draining N queued jobs end to end (claim, run,
  store the result). huey is driven by the same loop its consumer's worker
  runs (``dequeue`` then ``execute``), without the consumer's polling
  sleeps, which flatters huey.

Both run the task ``digit_sum(uuid4 hex)`` and keep results. Run::

    .venv/bin/python benchmarks/bench_sqlite.py [--jobs 5000] [--bulk 50000]
    .venv/bin/python benchmarks/bench_sqlite.py --latency   # idle CPU, wake-up delay
    .venv/bin/python benchmarks/bench_sqlite.py --features  # priority / RateLimit overhead
    .venv/bin/python benchmarks/bench_sqlite.py --features --instructions  # the same, counted

``--instructions`` runs each worker under valgrind's callgrind and reports
the instructions it executed per job: the same count run after run, whatever
else the machine does (on a shared machine the wall-clock rows move 10-15 %
from run to run, more than the differences they are meant to show). It
leaves out the time spent in the kernel (SQLite's writes to the WAL) and
cache effects, so it complements the timed rows rather than replacing them.

Not a test: numbers depend on the machine. Prints rates and ratios.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

from plugq import Queue, RateLimit, Worker
from plugq.testing.tasks import digit_sum
from plugq_sqlite import SqliteStorage


def _rate(n: int, fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def bench_plugq(folder: str, jobs: int, bulk: int, synchronous: str = "normal") -> dict[str, float]:
    url = f"sqlite:///{folder}/plugq-{synchronous}.db?synchronous={synchronous}"
    backend = SqliteStorage(url)
    q = Queue("bench", connection=backend)
    args = [uuid.uuid4().hex for _ in range(max(jobs, bulk))]

    def single() -> None:
        for a in args[:jobs]:
            q.enqueue(digit_sum, a)

    out = {"enqueue": _rate(jobs, single)}

    def process() -> None:
        Worker([q], connection=backend).work(burst=True)
        assert len(q) == 0

    out["process"] = _rate(jobs, process)
    assert q.finished_job_registry.count == jobs

    def many() -> None:
        for start in range(0, bulk, 1000):
            q.enqueue_many([Queue.prepare_data(digit_sum, (a,)) for a in args[start:start + 1000]])

    out["enqueue_many"] = _rate(bulk, many)
    assert len(q) == bulk
    backend.close()
    return out


def bench_huey(folder: str, jobs: int) -> dict[str, float]:
    from huey import SqliteHuey

    huey = SqliteHuey("bench", filename=f"{folder}/huey.db")
    task = huey.task()(digit_sum)
    args = [uuid.uuid4().hex for _ in range(jobs)]

    def single() -> None:
        for a in args:
            task(a)

    out = {"enqueue": _rate(jobs, single)}

    def process() -> None:
        while (t := huey.dequeue()) is not None:
            huey.execute(t)

    out["process"] = _rate(jobs, process)
    assert huey.pending_count() == 0
    return out


#: --features: what each row adds to the plain enqueue. The limits are far
#: above what one worker reaches, so they never hold a job back: the row
#: measures what admission costs, not throttling.
FEATURES: dict[str, Callable[[int], dict[str, object]]] = {
    "plain": lambda n: {},
    "priority": lambda n: {"priority": n % 11 - 5},
    "concurrency": lambda n: {"rate_limit": RateLimit("bench-c", concurrency=8)},
    "rate": lambda n: {"rate_limit": RateLimit("bench-r", limit=1_000_000, period=1.0)},
    # Priorities and a rate limit, as issue 16 puts it (each form of RateLimit);
    # "both" has both forms in one limit, with priorities.
    "concurrency+priority": lambda n: {"priority": n % 11 - 5,
                                       "rate_limit": RateLimit("bench-cp", concurrency=8)},
    "rate+priority": lambda n: {"priority": n % 11 - 5,
                                "rate_limit": RateLimit("bench-rp", limit=1_000_000, period=1.0)},
    "both": lambda n: {"priority": n % 11 - 5,
                       "rate_limit": RateLimit("bench-b", concurrency=8, limit=1_000_000,
                                               period=1.0)},
}


def bench_features(folder: str, jobs: int, first: int = 0) -> dict[str, float]:
    """One worker draining ``jobs`` queued jobs, per row of :data:`FEATURES`, on a fresh file each.

    The rows run in turn starting from row ``first``: across runs every row
    gets to go first, so a busy moment or a cold cache favours none of them.
    """
    names = list(FEATURES)
    out = {}
    for name in names[first % len(names):] + names[: first % len(names)]:
        extra = FEATURES[name]
        backend = SqliteStorage(f"sqlite:///{folder}/features-{name}.db")
        q = Queue("bench", connection=backend)
        for n in range(jobs):
            q.enqueue(digit_sum, uuid.uuid4().hex, **extra(n))

        worker = Worker([q], connection=backend)
        cpu = time.process_time()
        out[name] = _rate(jobs, partial(worker.work, burst=True))
        # CPU time as well: on a shared machine it moves far less than the
        # wall clock (WAL with synchronous=NORMAL does not fsync per commit,
        # so the worker's time is nearly all CPU).
        out[f"{name} cpu"] = jobs / (time.process_time() - cpu)
        assert q.finished_job_registry.count == jobs, name
        backend.close()
    return {key: out[key] for name in names for key in (name, f"{name} cpu")}


_DRAIN = """
import sys
from plugq import Queue, Worker
from plugq_sqlite import SqliteStorage
backend = SqliteStorage("sqlite:///" + sys.argv[1])
Worker([Queue("bench", connection=backend)], connection=backend).work(burst=True)
"""


def _instructions(path: str) -> int:
    """Instructions a worker process executes draining the file at ``path`` (callgrind)."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, "-c", _DRAIN, path],
        capture_output=True, text=True, check=True,
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no count:\n{out.stderr[-2000:]}")
    return int(found.group(1))


_WARM_UP = 20


def count_features(folder: str, jobs: int) -> dict[str, float]:
    """Instructions per job of a worker draining ``jobs`` jobs, per row of :data:`FEATURES`.

    Each row also drains a file of :data:`_WARM_UP` jobs, whose count is
    taken off: start-up, shutdown and what the first jobs do once (imports
    of the task's module and of the engine's parts a row uses), so what is
    left is what each further job costs.
    """
    out = {}
    for name, extra in FEATURES.items():
        counts = []
        for n in (_WARM_UP, _WARM_UP + jobs):
            path = f"{folder}/count-{name}-{n}.db"
            backend = SqliteStorage(f"sqlite:///{path}")
            q = Queue("bench", connection=backend)
            for i in range(n):
                q.enqueue(digit_sum, uuid.uuid4().hex, **extra(i))
            backend.close()
            counts.append(_instructions(path))
        out[name] = (counts[1] - counts[0]) / jobs
    return out


_IDLE_WORKER = """
import sys
from plugq import Queue, RateLimit, Worker
url = sys.argv[1]
Worker([Queue("latency", connection=url)], connection=url, name="idle").work()
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_latency(folder: str, samples: int, idle_seconds: float, poll: str) -> dict[str, float]:
    """An idle worker process: its CPU use while idle, then enqueue-to-start delays."""
    url = f"sqlite:///{folder}/latency.db" + (f"?poll={poll}" if poll else "")
    backend = SqliteStorage(url)
    q = Queue("latency", connection=backend)
    worker = subprocess.Popen([sys.executable, "-c", _IDLE_WORKER, url])
    try:
        deadline = time.monotonic() + 30
        while not backend.list_workers():
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not start")
            time.sleep(0.05)
        time.sleep(1.5)  # past its start-up work
        cpu0, wall0 = _cpu_seconds(worker.pid), time.monotonic()
        time.sleep(idle_seconds)
        idle_cpu = (_cpu_seconds(worker.pid) - cpu0) / (time.monotonic() - wall0)
        delays = []
        for _ in range(samples):
            # Random gaps, so the enqueues do not fall into step with the polling.
            time.sleep(random.uniform(0.02, 0.12))
            job = q.enqueue(digit_sum, uuid.uuid4().hex)
            deadline = time.monotonic() + 10
            while (rec := backend.get(job.id)) is None or rec.started_at is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("the job never started")
                time.sleep(0.002)
            assert rec.enqueued_at is not None
            delays.append(rec.started_at - rec.enqueued_at)
    finally:
        worker.kill()
        worker.wait()
        backend.close()
    delays.sort()
    return {
        "idle_cpu_percent": 100 * idle_cpu,
        "median_ms": 1000 * statistics.median(delays),
        "p90_ms": 1000 * delays[int(0.9 * (len(delays) - 1))],
        "max_ms": 1000 * delays[-1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000, help="jobs for enqueue and processing")
    parser.add_argument("--bulk", type=int, default=50000, help="jobs for enqueue_many")
    parser.add_argument("--runs", type=int, default=3, help="runs of each; the best is shown")
    parser.add_argument("--latency", action="store_true",
                        help="instead: idle worker CPU use and enqueue-to-start delay")
    parser.add_argument("--features", action="store_true",
                        help="instead: processing with priorities and rate limits against plain")
    parser.add_argument("--instructions", action="store_true",
                        help="with --features: instructions per job under valgrind, not time")
    parser.add_argument("--samples", type=int, default=200, help="jobs for --latency")
    parser.add_argument("--poll", default="", help="the URL's poll= for --latency")
    opts = parser.parse_args(argv)
    if opts.latency:
        with tempfile.TemporaryDirectory() as folder:
            lat = bench_latency(folder, opts.samples, idle_seconds=10.0, poll=opts.poll)
        print(f"poll={opts.poll or 'default'}: idle worker CPU: "
              f"{lat['idle_cpu_percent']:.2f}% of one core")
        print(f"enqueue -> start over {opts.samples} jobs: median {lat['median_ms']:.1f} ms, "
              f"p90 {lat['p90_ms']:.1f} ms, max {lat['max_ms']:.1f} ms")
        return 0

    def best(runs: list[dict[str, float]]) -> dict[str, float]:
        return {key: max(r[key] for r in runs) for key in runs[0]}

    if opts.features and opts.instructions:
        if shutil.which("valgrind") is None:
            parser.error("--instructions needs valgrind (apt-get install valgrind)")
        with tempfile.TemporaryDirectory() as folder:
            counted = count_features(folder, opts.jobs)
        print(f"python={sys.version.split()[0]} jobs={opts.jobs}; 1 worker, "
              "instructions per job (callgrind) and plain's count over the row's")
        for name in FEATURES:
            print(f"{name:21}{counted[name]:12,.0f}{counted['plain'] / counted[name]:7.0%}")
        return 0
    if opts.features:
        runs = []
        for run in range(opts.runs):
            with tempfile.TemporaryDirectory() as folder:
                runs.append(bench_features(folder, opts.jobs, first=run))
        top = best(runs)
        print(f"cpus={os.cpu_count()} python={sys.version.split()[0]} jobs={opts.jobs} "
              f"best of {opts.runs} runs; 1 worker, processing (jobs/s), wall and CPU time")
        for name in FEATURES:
            wall, cpu = top[name], top[f"{name} cpu"]
            print(f"{name:21}{wall:10,.0f}{wall / top['plain']:7.0%}"
                  f"{cpu:10,.0f}{cpu / top['plain cpu']:7.0%}")
        return 0

    huey_runs, our_runs, full_runs = [], [], []
    for _ in range(opts.runs):
        # Interleaved, so a busy moment on the machine hits every system alike.
        with tempfile.TemporaryDirectory() as folder:
            huey_runs.append(bench_huey(folder, opts.jobs))
            our_runs.append(bench_plugq(folder, opts.jobs, opts.bulk))
            full_runs.append(bench_plugq(folder, opts.jobs, opts.bulk, synchronous="full"))
    huey, ours, full = best(huey_runs), best(our_runs), best(full_runs)
    print(f"cpus={os.cpu_count()} python={sys.version.split()[0]} jobs={opts.jobs} "
          f"bulk={opts.bulk} best of {opts.runs} runs")
    print(f"{'':28}{'plugq':>12}{'plugq full':>12}{'huey':>12}{'ratio':>8}")
    for key, label in (("enqueue", "single enqueue (jobs/s)"),
                       ("process", "1-worker processing (jobs/s)")):
        print(f"{label:28}{ours[key]:12,.0f}{full[key]:12,.0f}{huey[key]:12,.0f}"
              f"{ours[key] / huey[key]:7.2f}x")
    print(f"{'enqueue_many (jobs/s)':28}{ours['enqueue_many']:12,.0f}{full['enqueue_many']:12,.0f}"
          f"{'-':>12}")
    print("plugq: synchronous=NORMAL (default), 'plugq full': ?synchronous=full; "
          "huey: SqliteHuey defaults (WAL, SQLite's default synchronous=FULL)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
