"""huey's side of the benchmark: a huey instance and the two tasks, built from a spec.

huey users define their instance and tasks in a module that the consumer
imports; this module does the same. The consumer subprocess builds it from
the ``PLUGQ_BENCH_HUEY`` environment variable (``sqlite:PATH`` or
``redis:PORT``) so that it and the benchmark driver register identical task
names. Default storage settings throughout: peers are never configured slow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks import tasks


@dataclass
class HueyApp:
    huey: Any
    digit_sum: Any
    stamp: Any


def make_app(spec: str) -> HueyApp:
    """``spec`` is ``sqlite:/path/to/file.db`` or ``redis:PORT``."""
    kind, _, target = spec.partition(":")
    if kind == "sqlite":
        from huey import SqliteHuey

        huey: Any = SqliteHuey("bench", filename=target)
    elif kind == "redis":
        from huey import RedisHuey

        huey = RedisHuey("bench", host="127.0.0.1", port=int(target))
    else:
        raise ValueError(f"unknown huey spec {spec!r}")

    @huey.task(name="digit_sum")
    def digit_sum(hex_string: str) -> int:
        return tasks.digit_sum(hex_string)

    @huey.task(name="stamp")
    def stamp(hex_string: str) -> tuple[float, int]:
        return tasks.stamp(hex_string)

    return HueyApp(huey, digit_sum, stamp)
