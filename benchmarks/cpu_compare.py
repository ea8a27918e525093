"""CPU-time micro benchmark of the engine path: enqueue, one burst worker, enqueue_many.

Counts ``time.process_time()`` (this process's CPU), best of several runs, so
other processes on a loaded machine move the figures far less than wall-clock
ones. Compare two trees by running it with each tree's interpreter, back to
back::

    python benchmarks/cpu_compare.py 4
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
import uuid

from plugq import Queue, Worker
from plugq.testing import tasks

N = 3000


def measure(url: str) -> tuple[float, float, float]:
    """Jobs per CPU second: single enqueues, one burst worker, one enqueue_many batch."""
    q = Queue("b", connection=url)
    for _ in range(50):  # warm-up: imports, prepared statements
        q.enqueue(tasks.add, 1, 2)
    Worker([q]).work(burst=True)
    t = time.process_time()
    for i in range(N):
        q.enqueue(tasks.add, i, 1)
    enqueue = N / (time.process_time() - t)
    t = time.process_time()
    Worker([q]).work(burst=True)
    process = N / (time.process_time() - t)
    t = time.process_time()
    q.enqueue_many([Queue.prepare_data(tasks.add, (i, 1)) for i in range(N)])
    many = N / (time.process_time() - t)
    return enqueue, process, many


def main() -> None:
    logging.disable(logging.CRITICAL)
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    folder = tempfile.mkdtemp()
    results: dict[str, list[tuple[float, float, float]]] = {"memory": [], "sqlite": []}
    for _ in range(runs):
        results["memory"].append(measure(f"memory://cmp-{uuid.uuid4().hex}"))
        results["sqlite"].append(measure(f"sqlite:///{folder}/cmp-{uuid.uuid4().hex}.db"))
    for name, found in results.items():
        enqueue, process, many = (max(r[i] for r in found) for i in range(3))
        print(f"{name}: enqueue {enqueue:,.0f}/s  process {process:,.0f}/s  "
              f"enqueue_many {many:,.0f}/s (CPU time, best of {runs})")


if __name__ == "__main__":
    main()
