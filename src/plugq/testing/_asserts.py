"""Assertion helpers whose failure messages say what was expected and what was there.

Each raises :class:`AssertionError` with a message written for a person
reading pytest's output, and hides its own frame from the traceback
(``__tracebackhide__``) so the report points at the test's line.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from typing import Any

from plugq.exceptions import NoSuchJobError
from plugq.job import Job, describe, func_path
from plugq.queue import Queue
from plugq.storage import JobStatus

from ._drain import plumbing_prefixes

#: Statuses of a job that was enqueued and has not run yet.
WAITING = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED, JobStatus.RATE_LIMITED)
#: How many jobs a failure message lists before it summarises.
_LIST_LIMIT = 20

_MISSING: Any = object()


def _jobs(queue: Queue, statuses: Iterable[JobStatus]) -> list[Job]:
    backend = queue.backend
    found: list[Job] = []
    for status in statuses:
        if status is JobStatus.RATE_LIMITED and "rate_limit" not in backend.features:
            continue  # a backend without RateLimit has no such registry
        ids = backend.job_ids(queue.name, status)
        found.extend(Job(backend, r) for r in backend.fetch_jobs(ids) if r is not None)
    return found


def _matches(job: Job, path: str, args: tuple[Any, ...], kwargs: dict[str, Any], any_args: bool) -> bool:
    if job.func_name != path:
        return False
    if any_args:
        return True
    # Expected values on the left, so unittest.mock.ANY (and other matchers) decide.
    return args == tuple(job.args) and kwargs == dict(job.kwargs)


def _listing(jobs: list[Job]) -> str:
    if not jobs:
        return "    (none)"
    lines = [
        f"    - {job.description}  [{job.record.status.value}] id={job.id}"
        for job in jobs[:_LIST_LIMIT]
    ]
    if len(jobs) > _LIST_LIMIT:
        lines.append(f"    … and {len(jobs) - _LIST_LIMIT} more")
    return "\n".join(lines)


def _expected(path: str, args: tuple[Any, ...], kwargs: dict[str, Any], any_args: bool) -> str:
    return f"{path}(…any arguments…)" if any_args else describe(path, args, kwargs)


def assert_enqueued(queue: Queue, func: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Job:
    """Assert a job for ``func(*args, **kwargs)`` is waiting on ``queue``; return it.

    Waiting means queued, scheduled or deferred (enqueued and not yet run).
    ``func`` is the task or its dotted path. With no ``args`` and no
    ``kwargs``, any call of ``func`` matches; otherwise the arguments must be
    equal (``unittest.mock.ANY`` matches any single argument). When several
    jobs match, the first (in queue order, then scheduled, then deferred) is
    returned.

    Raises:
        AssertionError: no waiting job matches; the message lists the jobs
            that are waiting and the ones that already ran.
    """
    __tracebackhide__ = True
    path = func_path(func)
    any_args = not args and not kwargs
    waiting = _jobs(queue, WAITING)
    for job in waiting:
        if _matches(job, path, args, kwargs, any_args):
            return job
    others = _jobs(queue, [s for s in JobStatus if s not in WAITING])
    ran = [j for j in others if j.func_name == path]
    message = (
        f"expected a job {_expected(path, args, kwargs, any_args)} waiting on {queue!r}, "
        f"but there is none.\n  Waiting on {queue!r} ({len(waiting)}):\n{_listing(waiting)}"
    )
    if ran:
        message += (
            f"\n  Jobs of {path} that are no longer waiting ({len(ran)}):\n{_listing(ran)}"
        )
    raise AssertionError(message)


def assert_not_enqueued(
    queue: Queue, func: Callable[..., Any] | str, *args: Any, **kwargs: Any
) -> None:
    """Assert no job for ``func(*args, **kwargs)`` is waiting on ``queue``.

    Matching is as in :func:`assert_enqueued`: with no arguments given, no
    job of ``func`` at all may be waiting.

    Raises:
        AssertionError: listing the waiting jobs that match.
    """
    __tracebackhide__ = True
    path = func_path(func)
    any_args = not args and not kwargs
    found = [j for j in _jobs(queue, WAITING) if _matches(j, path, args, kwargs, any_args)]
    if found:
        raise AssertionError(
            f"expected no job {_expected(path, args, kwargs, any_args)} waiting on {queue!r}, "
            f"but found {len(found)}:\n{_listing(found)}"
        )


def assert_queue_empty(queue: Queue) -> None:
    """Assert nothing is queued on ``queue`` (scheduled and deferred jobs do not count).

    Raises:
        AssertionError: listing the queued jobs.
    """
    __tracebackhide__ = True
    queued = _jobs(queue, [JobStatus.QUEUED])
    if queued:
        raise AssertionError(
            f"expected {queue!r} to be empty, but {len(queued)} job(s) are queued:\n"
            f"{_listing(queued)}"
        )


def _refreshed(job: Job, expecting: str) -> Job:
    __tracebackhide__ = True
    try:
        job.refresh()
    except NoSuchJobError:
        raise AssertionError(
            f"expected job {job.id} ({job.description}) to be {expecting}, but it no longer "
            "exists (deleted, or its result_ttl / failure_ttl / ttl ran out)"
        ) from None
    return job


def _last_line(exc_info: str | None) -> str:
    lines = [line for line in (exc_info or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _state(job: Job) -> str:
    record = job.record
    text = f"{record.status.value}"
    if record.status is JobStatus.FAILED or (record.exc_info and record.status in WAITING):
        text += f" (last error: {_last_line(record.exc_info) or 'unknown'})"
    if record.status is JobStatus.SCHEDULED and job.scheduled_for is not None:
        text += f", scheduled for {job.scheduled_for.isoformat()}"
    if record.retries_left is not None:
        text += f", retries left: {record.retries_left}"
    return text


def assert_job_status(job: Job, status: JobStatus | str) -> Job:
    """Assert ``job`` (reloaded from the store) is in ``status``; return it.

    Raises:
        AssertionError: naming the actual status and, if it failed, the error.
    """
    __tracebackhide__ = True
    wanted = JobStatus(status)
    _refreshed(job, wanted.value)
    if job.record.status is not wanted:
        message = (
            f"expected job {job.id} ({job.description}) to be {wanted.value}, "
            f"but it is {_state(job)}"
        )
        if job.record.status is JobStatus.FAILED and job.record.exc_info:
            message += f"\n  Its traceback:\n{_indent(job.record.exc_info)}"
        raise AssertionError(message)
    return job


_FRAME = re.compile(r'^  File "(?P<path>[^"]+)", line \d+')


def _task_traceback(exc_info: str) -> str:
    """A stored traceback without the worker's own frames (plugq internals, rq)."""
    prefixes = plumbing_prefixes()
    kept: list[str] = []
    skipping = False
    dropped = 0
    for line in exc_info.rstrip().splitlines():
        frame = _FRAME.match(line)
        if frame:
            skipping = frame.group("path").startswith(prefixes)
            dropped += skipping
        elif not line.startswith("    "):
            skipping = False
        if not skipping:
            kept.append(line)
    if dropped and not any(_FRAME.match(line) for line in kept):
        return exc_info.rstrip()  # nothing but machinery: show it all
    return "\n".join(kept)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in _task_traceback(text).splitlines())


def assert_job_finished(job: Job, result: Any = _MISSING) -> Job:
    """Assert ``job`` finished, and (when given) returned a value equal to ``result``.

    Raises:
        AssertionError: the job is in another status (a failed job's
            traceback is shown) or returned something else (both values shown).
    """
    __tracebackhide__ = True
    assert_job_status(job, JobStatus.FINISHED)
    if result is not _MISSING:
        actual = job.return_value()
        if not (result == actual):
            raise AssertionError(
                f"job {job.id} ({job.description}) finished, but returned {actual!r}; "
                f"expected {result!r}"
            )
    return job


def _exception_class(name: str) -> type[BaseException] | None:
    """The class a traceback's last line names (``pkg.mod.Error``), if importable."""
    module, _, attr = name.rpartition(".")
    try:
        obj: Any = importlib.import_module(module or "builtins")
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError):
        return None
    return obj if isinstance(obj, type) and issubclass(obj, BaseException) else None


def _exception_name(exc_info: str | None) -> tuple[str, str]:
    """``(type name, message)`` of the exception a stored traceback ends with.

    The exception is the text after the last indented (frame) line, so a
    multi-line message stays whole.
    """
    lines = (exc_info or "").rstrip().splitlines()
    start = 0
    for i, line in enumerate(lines):
        if line[:1].isspace() or line.startswith("Traceback (most recent call last):"):
            start = i + 1
    text = "\n".join(lines[start:]).strip()
    name, _, message = text.partition(":")
    if not re.fullmatch(r"[A-Za-z_][\w.]*", name.strip()):
        return "", text
    return name.strip(), message.strip()


def assert_job_failed(
    job: Job,
    exc_type: type[BaseException] | str | None = None,
    match: str | None = None,
) -> Job:
    """Assert ``job`` failed for good, with ``exc_type`` (or a subclass) and ``match``.

    Parameters:
        exc_type: the expected exception class (subclasses match, as in
            ``pytest.raises``) or its name (``"ValueError"``,
            ``"myapp.errors.PaymentError"``); None accepts any.
        match: a regular expression searched in the exception's message.

    Raises:
        AssertionError: the job did not fail (its status and result are
            shown), or failed with another exception (its traceback is shown).
    """
    __tracebackhide__ = True
    _refreshed(job, "failed")
    record = job.record
    if record.status is not JobStatus.FAILED:
        message = f"expected job {job.id} ({job.description}) to have failed, but it is {_state(job)}"
        if record.status is JobStatus.FINISHED:
            message += f"; it returned {job.return_value(refresh=False)!r}"
        raise AssertionError(message)
    name, text = _exception_name(record.exc_info)
    if exc_type is not None:
        wanted = exc_type if isinstance(exc_type, str) else exc_type.__qualname__
        actual_cls = _exception_class(name) if name else None
        if isinstance(exc_type, type) and actual_cls is not None:
            ok = issubclass(actual_cls, exc_type)
        else:
            ok = bool(name) and (
                name == wanted or name.endswith("." + wanted) or wanted.endswith("." + name)
            )
        if not ok:
            raise AssertionError(
                f"expected job {job.id} ({job.description}) to fail with {wanted}, but it "
                f"failed with {name or 'an unrecognised error'}: {text}\n"
                f"  Its traceback:\n{_indent(record.exc_info or '')}"
            )
    if match is not None and not re.search(match, text):
        raise AssertionError(
            f"job {job.id} ({job.description}) failed with {name}: {text!r}, which does not "
            f"match {match!r}"
        )
    return job


__all__ = [
    "assert_enqueued",
    "assert_job_failed",
    "assert_job_finished",
    "assert_job_status",
    "assert_not_enqueued",
    "assert_queue_empty",
]
