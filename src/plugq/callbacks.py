"""``Callback`` and ``Webhook``, with rq 2.x's signatures.

``enqueue(f, on_success=Callback(g, timeout=10))``: ``g`` is called in the
worker after the job, and interrupted after ``timeout`` seconds (default 60,
as rq); a callback that fails or times out is logged and does not change the
job's outcome. ``webhooks=[Webhook(url, job_status='finished')]`` makes an
HTTP request when the job finishes or fails (see :mod:`plugq._webhooks`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _webhooks
from ._clock import parse_timeout

#: rq's default callback timeout (seconds).
DEFAULT_CALLBACK_TIMEOUT = 60


class Callback:
    """A callback with a timeout (seconds, or an rq-style string such as ``'2m'``)."""

    def __init__(self, func: Callable[..., Any] | str, timeout: Any = None) -> None:
        if not (callable(func) or isinstance(func, str)):
            raise ValueError(f"Callback func must be a callable or a dotted path, got {func!r}")
        self.func = func
        self.timeout = (parse_timeout(timeout, "Callback timeout") if timeout is not None
                        else float(DEFAULT_CALLBACK_TIMEOUT))

    def __repr__(self) -> str:
        return f"Callback({self.func!r}, timeout={self.timeout:g})"


class Webhook:
    """An HTTP request when the job reaches ``job_status`` (``'finished'`` or ``'failed'``).

    Raises:
        ValueError: not an http(s) URL, an unknown status or method, a bad timeout.
    """

    def __init__(
        self, url: str, job_status: str, *, method: str = "GET",
        headers: dict[str, str] | None = None, timeout: float = 10,
    ) -> None:
        _webhooks.check(url, job_status, method, timeout)
        if headers is not None and not isinstance(headers, dict):
            raise TypeError(f"headers must be a dict or None, got {type(headers).__name__}")
        self.url = url
        self.job_status = job_status
        self.method = method
        self.headers = headers
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Webhook({self.url!r}, job_status={self.job_status!r}, method={self.method!r})"

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "job_status": self.job_status, "method": self.method,
                "headers": self.headers, "timeout": self.timeout}


__all__ = ["Callback", "Webhook"]
