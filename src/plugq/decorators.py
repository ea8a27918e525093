"""RQ's ``@job(queue, …)`` decorator: ``f.delay(…)`` enqueues ``f``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .queue import Queue
from .retry import Retry


class job:
    """Decorate a module-level function so ``f.delay(*args, **kwargs)`` enqueues it.

    ``queue`` is a queue name or a :class:`Queue`; the remaining options are
    the defaults of every ``delay`` call (overridable per call, as in RQ).
    """

    def __init__(
        self,
        queue: Queue | str = "default",
        connection: Any = None,
        timeout: Any = None,
        result_ttl: int | None = None,
        ttl: int | None = None,
        failure_ttl: int | None = None,
        description: str | None = None,
        depends_on: Any = None,
        at_front: bool = False,
        meta: dict[str, Any] | None = None,
        retry: Retry | None = None,
        on_success: Any = None,
        on_failure: Any = None,
    ) -> None:
        self.queue = queue
        self.connection = connection
        self.options: dict[str, Any] = {
            "job_timeout": timeout, "result_ttl": result_ttl, "ttl": ttl,
            "failure_ttl": failure_ttl, "description": description, "depends_on": depends_on,
            "at_front": at_front, "meta": meta, "retry": retry, "on_success": on_success,
            "on_failure": on_failure,
        }

    def __call__(self, f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def delay(*args: Any, **kwargs: Any) -> Any:
            queue = (
                self.queue if isinstance(self.queue, Queue)
                else Queue(self.queue, connection=self.connection)
            )
            options = {k: v for k, v in self.options.items() if v is not None and v is not False}
            for key in list(options):
                if key in kwargs:
                    options[key] = kwargs.pop(key)
            return queue.enqueue(f, *args, **options, **kwargs)

        f.delay = delay  # type: ignore[attr-defined]
        return f
