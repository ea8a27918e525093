"""Work off the queued jobs in this process (what ``plugq worker`` does).

    python consumer.py --burst          # stop when the queue is empty
    python consumer.py                  # keep waiting for jobs; Ctrl-C to stop
"""

from __future__ import annotations

import argparse
import contextlib
import logging

from plugq import Queue, Worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("queues", nargs="*", default=["default"])
    parser.add_argument("--burst", action="store_true", help="stop when the queues are empty")
    args = parser.parse_args()

    # The worker logs each job as RQ does ("default: tasks.digit_sum('…') (id)").
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    queues = [Queue(name) for name in args.queues]
    worker = Worker(queues)
    # Ctrl-C ends the run; the summary below still prints.
    with contextlib.suppress(KeyboardInterrupt):
        worker.work(burst=args.burst)
    finished = sum(q.finished_job_registry.count for q in queues)
    failed = sum(q.failed_job_registry.count for q in queues)
    print(f"{finished} finished, {failed} failed, {sum(q.count for q in queues)} still queued "
          f"on {worker.backend.safe_url()}")


if __name__ == "__main__":
    main()
