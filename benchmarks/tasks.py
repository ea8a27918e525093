"""The benchmark tasks, shared by every system.

Kept in a module that imports nothing from plugq, rq or huey so that a worker
importing it (an rq work-horse imports the task module in every forked child)
pays the same tiny cost on every system.
"""

from __future__ import annotations

import time


def digit_sum(hex_string: str) -> int:
    """The benchmark task: digit sum of a uuid4 hex (same body as plugq.testing.tasks.digit_sum)."""
    return sum(int(c, 16) for c in hex_string)


def stamp(hex_string: str) -> tuple[float, int]:
    """The latency task: when it started (epoch seconds), and the same digit sum."""
    started = time.time()
    return started, digit_sum(hex_string)
