"""plugq's testing toolkit: run tasks in tests with production semantics, fast.

* :func:`drain` — run the queued (and due) jobs here, with the real worker.
* ``assert_*`` — assertions with readable failure messages.
* :func:`isolated_backend` and :class:`ClockControl` — what the pytest
  fixtures ``plugq_backend`` / ``plugq_queue`` / ``plugq_clock`` are built
  on (:mod:`plugq.testing.pytest_plugin`), for use outside pytest.

See ``docs/testing.md``.
"""

from __future__ import annotations

from ._asserts import (
    assert_enqueued,
    assert_job_failed,
    assert_job_finished,
    assert_job_status,
    assert_not_enqueued,
    assert_queue_empty,
)
from ._drain import drain
from ._isolation import ClockControl, isolated_backend

__all__ = [
    "ClockControl",
    "assert_enqueued",
    "assert_job_failed",
    "assert_job_finished",
    "assert_job_status",
    "assert_not_enqueued",
    "assert_queue_empty",
    "drain",
    "isolated_backend",
]
