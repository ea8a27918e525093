"""plugq benchmarks against the peers users would pick instead (raw rq, huey, persist-queue).

Run ``python -m benchmarks --help``. Every system runs the same trivial task
(:func:`benchmarks.tasks.digit_sum`) and every processing figure times the whole
job path, from jobs being available on the queue to the last result stored,
with every result verified afterwards. See docs/performance.md.

This package is imported by worker subprocesses (rq, huey, plugq workers), so
importing it must stay cheap: nothing heavy at module level.
"""
