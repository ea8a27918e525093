"""The value rules, written once: queue names and numbers of seconds.

The public API (``Queue``, ``enqueue``), ``[tool.plugq]``, the command line
and the storages all check names and durations here, so a value refused at
one entry point is refused at every other one.
"""

from __future__ import annotations

import math
import re
from typing import Any

#: Letters, digits, '_', '-', '.'; ``\Z`` (not ``$``) so "name\n" does not pass.
QUEUE_NAME = re.compile(r"[A-Za-z0-9_.\-]+\Z")
#: The longest duration accepted anywhere (100 years): beyond it timers and
#: date arithmetic overflow, and no job queue setting means it.
MAX_SECONDS = 100 * 365 * 86400


def is_queue_name(name: Any) -> bool:
    return isinstance(name, str) and QUEUE_NAME.match(name) is not None


def queue_name_error(name: Any) -> str | None:
    """Why ``name`` is not a queue name, or None."""
    if is_queue_name(name):
        return None
    return (f"queue name {name!r} must be non-empty and use only letters, digits, '_', '-', '.' "
            "(no spaces, wildcards or control characters)")


def check_queue_name(name: Any) -> str:
    """``name`` if it is a queue name.

    Raises:
        ValueError: naming the value and the rule.
    """
    problem = queue_name_error(name)
    if problem is not None:
        raise ValueError(problem)
    return str(name)


def number_error(value: Any, what: str, *, minimum: float, allow_none_marker: bool = False,
                 whole: bool = False, exclusive: bool = False) -> str | None:
    """Why ``value`` is not an acceptable number of seconds for ``what``, or None.

    ``-1`` is accepted as "none/forever" when ``allow_none_marker``;
    NaN and infinities never are.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{what}={value!r} must be a number of seconds"
    if not math.isfinite(value):
        return f"{what}={value!r} must be a finite number of seconds"
    if allow_none_marker and value == -1:
        return None
    if whole and value != int(value):
        return f"{what}={value!r} must be a whole number of seconds"
    low_ok = value > minimum if exclusive else value >= minimum
    if not low_ok:
        bound = f"> {minimum:g}" if exclusive else f">= {minimum:g}"
        extra = ", or -1" if allow_none_marker else ""
        return f"{what}={value!r} must be {bound}{extra}"
    if value > MAX_SECONDS:
        return f"{what}={value!r} is out of range (at most {MAX_SECONDS} seconds, 100 years)"
    return None
