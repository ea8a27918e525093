"""``Retry`` and ``Dependency``, with RQ's signatures."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ._validate import MAX_SECONDS, number_error


class Retry:
    """Retry a failed job up to ``max`` times, waiting ``interval`` seconds between tries.

    ``interval`` is one number for every retry or a list, one per retry (the
    last one repeats), as in RQ.
    """

    def __init__(self, max: int, interval: int | float | Sequence[int | float] = 0) -> None:
        if not isinstance(max, int) or isinstance(max, bool) or not 1 <= max <= 1_000_000:
            raise ValueError(f"Retry(max=...) must be a whole number from 1 to 1000000, got {max!r}")
        intervals = [interval] if isinstance(interval, (int, float)) else list(interval)
        if not intervals:
            intervals = [0]
        for value in intervals:
            if number_error(value, "Retry(interval=...)", minimum=0) is not None:
                raise ValueError(
                    f"Retry(interval=...) must be finite seconds >= 0 (at most {MAX_SECONDS}) "
                    f"or a list of them, got {interval!r}"
                )
        self.max = max
        self.intervals: list[float] = [float(v) for v in intervals]

    def __repr__(self) -> str:
        return f"Retry(max={self.max}, interval={self.intervals!r})"


def retry_interval(intervals: Sequence[float], retries_done: int) -> float:
    """Seconds to wait before retry number ``retries_done + 1`` (last interval repeats)."""
    if not intervals:
        return 0.0
    return float(intervals[min(retries_done, len(intervals) - 1)])


class Dependency:
    """``depends_on=Dependency(jobs=[...], allow_failure=True)``, as RQ's.

    With ``allow_failure`` the dependent is enqueued when each dependency has
    ended, whether it finished, failed or was canceled.
    """

    def __init__(self, jobs: Any, allow_failure: bool = False, enqueue_at_front: bool = False) -> None:
        items = list(jobs) if isinstance(jobs, (list, tuple, set)) else [jobs]
        if not items:
            raise ValueError("Dependency(jobs=...) needs at least one job or job id")
        self.dependencies = items
        self.allow_failure = allow_failure
        self.enqueue_at_front = enqueue_at_front


def dependency_ids(depends_on: Any) -> tuple[list[str], bool, bool]:
    """Normalise RQ's ``depends_on`` forms to ``(ids, allow_failure, at_front)``."""
    if depends_on is None:
        return [], False, False
    if isinstance(depends_on, Dependency):
        items: Iterable[Any] = depends_on.dependencies
        allow, front = depends_on.allow_failure, depends_on.enqueue_at_front
    elif isinstance(depends_on, (list, tuple, set)):
        items, allow, front = depends_on, False, False
    else:
        items, allow, front = [depends_on], False, False
    ids: list[str] = []
    for item in items:
        if isinstance(item, Dependency):
            sub, sub_allow, _ = dependency_ids(item)
            ids.extend(sub)
            allow = allow or sub_allow
        elif isinstance(item, str):
            ids.append(item)
        elif hasattr(item, "id"):
            ids.append(item.id)
        else:
            raise TypeError(
                f"depends_on takes a Job, a job id, a list of them or a Dependency; got {item!r}"
            )
    return ids, allow, front
