"""Enqueue digit-sum jobs, then exit: the jobs wait in the backend for a worker.

    python producer.py --jobs 100          # backend from PLUGQ_URL / pyproject / default

Run ``python consumer.py --burst`` (or ``plugq worker --burst``) afterwards,
in another terminal or another machine sharing the backend.
"""

from __future__ import annotations

import argparse
import uuid

from tasks import digit_sum

from plugq import Queue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--queue", default="default")
    args = parser.parse_args()

    # No connection argument: the URL comes from the configuration, so the
    # same script runs on SQLite, Redis or anything else one line selects.
    queue = Queue(args.queue)
    jobs = queue.enqueue_many(
        [Queue.prepare_data(digit_sum, (uuid.uuid4().hex,)) for _ in range(args.jobs)]
    )
    print(f"Enqueued {len(jobs)} jobs on {queue.backend.safe_url()} queue {queue.name!r}")
    print(f"first job: {jobs[0].id}")


if __name__ == "__main__":
    main()
