"""A running job's progress: a fraction, or done/total, and a message.

Stored apart from the job's record (``Storage.set_progress``): one small
write that never rewrites the job, so a task may report as often as it likes::

    def resize_all(paths):
        job = get_current_job()
        for i, path in enumerate(paths, 1):
            resize(path)
            job.set_progress(done=i, total=len(paths), message=path)

Producers read ``job.progress``; ``plugq info`` and ``plugq jobs`` show it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Progress:
    """What a task last reported. ``fraction`` is in [0, 1] (from done/total when given)."""

    fraction: float | None = None
    done: float | None = None
    total: float | None = None
    message: str | None = None
    #: epoch seconds of the report.
    updated_at: float | None = None

    def __str__(self) -> str:
        parts = []
        if self.fraction is not None:
            parts.append(f"{self.fraction:.0%}")
        if self.done is not None and self.total is not None:
            parts.append(f"{self.done:g}/{self.total:g}")
        if self.message:
            parts.append(self.message)
        return " ".join(parts)

    def dumps(self) -> str:
        return json.dumps({k: v for k, v in vars(self).items() if v is not None})

    @classmethod
    def loads(cls, text: str | None) -> Progress | None:
        if not text:
            return None
        data: dict[str, Any] = json.loads(text)
        return cls(**{k: data.get(k) for k in ("fraction", "done", "total", "message",
                                                "updated_at")})


def make(
    fraction: float | None, done: float | None, total: float | None, message: str | None,
    now: float,
) -> Progress:
    """Validate a report and fill ``fraction`` from done/total.

    Raises:
        ValueError: a fraction outside [0, 1], a negative or non-number count,
            done without total, or nothing at all.
    """
    for name, value in (("fraction", fraction), ("done", done), ("total", total)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value < 0):
            raise ValueError(f"progress {name} must be a number >= 0, got {value!r}")
    if fraction is not None and fraction > 1:
        raise ValueError(f"progress fraction must be between 0 and 1, got {fraction!r}")
    if (done is None) != (total is None):
        raise ValueError("progress done and total go together")
    if fraction is None and done is not None and total is not None:
        fraction = min(done / total, 1.0) if total else 1.0
    if fraction is None and message is None:
        raise ValueError("set_progress needs a fraction, done/total, or a message")
    if message is not None and not isinstance(message, str):
        message = str(message)
    return Progress(
        None if fraction is None else float(fraction), done, total, message, now
    )


__all__ = ["Progress"]
