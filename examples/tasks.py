"""The tasks of the examples: plain module-level functions, importable by any worker."""

from __future__ import annotations


def digit_sum(hex_string: str) -> int:
    """The sum of the hexadecimal digits of ``hex_string`` (the demo's task).

    >>> digit_sum("ff")
    30
    """
    return sum(int(c, 16) for c in hex_string)
