"""Print each queue's job counts and the workers, from the public API.

    python monitor.py               # once
    python monitor.py --watch 1     # every second until Ctrl-C

(``plugq info`` and ``plugq info --interval 1`` show the same, as tables.)
"""

from __future__ import annotations

import argparse
import time

from plugq import Queue, Worker


def report() -> str:
    lines = []
    for q in Queue.all():
        lines.append(
            f"{q.name}: queued={q.count} started={q.started_job_registry.count} "
            f"finished={q.finished_job_registry.count} failed={q.failed_job_registry.count} "
            f"scheduled={q.scheduled_job_registry.count} deferred={q.deferred_job_registry.count}"
        )
    if not lines:
        lines.append("no queues yet")
    workers = Worker.all()
    lines.append(f"workers: {len(workers)}")
    for w in workers:
        lines.append(f"  {w.name} {w.state} on {', '.join(w.queue_names())}"
                     f" current job: {w.current_job_id or '-'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watch", type=float, metavar="SECONDS", help="repeat every SECONDS")
    args = parser.parse_args()
    try:
        while True:
            print(report(), flush=True)
            if args.watch is None:
                break
            time.sleep(args.watch)
            print()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
