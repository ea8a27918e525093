"""Importable tasks used by the conformance suite and the docs' examples.

They live in the installed package so a worker in another process (an rq
forking worker, a ``plugq worker`` subprocess) imports the same functions.
Side effects go to files named by the caller, so a test in another process
can observe them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from plugq import get_current_job


def add(a: int, b: int) -> int:
    return a + b


def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


def sum_numbers_from_string(s: str) -> int:
    """RQ's getting-started task, in the spirit of count_words_at_url."""
    return sum(int(c) for c in s if c.isdigit())


def digit_sum(hex_string: str) -> int:
    """The benchmark task: digit sum of a uuid4 hex."""
    return sum(int(c, 16) for c in hex_string)


def fail(message: str = "boom") -> None:
    raise ValueError(message)


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def stuck_in_c(iterations: int) -> str:
    """Stay inside one C call (PBKDF2) that never returns to the interpreter for long.

    No signal handler runs until it returns, so only a process kill ends it early.
    """
    return hashlib.pbkdf2_hmac("sha256", b"password", b"salt", iterations).hex()


def busy(seconds: float) -> int:
    """Spin in pure Python for ``seconds`` (interruptible by an async exception)."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


async def async_sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def append_line(path: str, text: str) -> str:
    """Append ``text`` to a file: a side effect another process can count."""
    with open(path, "a") as fh:
        fh.write(text + "\n")
    return text


def fail_until(path: str, failures: int) -> int:
    """Fail the first ``failures`` calls (counted in a file), then return the call number."""
    p = Path(path)
    calls = int(p.read_text()) + 1 if p.exists() else 1
    p.write_text(str(calls))
    if calls <= failures:
        raise RuntimeError(f"attempt {calls} fails on purpose")
    return calls


def current_job_id() -> str | None:
    job = get_current_job()
    return None if job is None else job.id


def report_progress(steps: int) -> int:
    """Write ``meta['progress']`` from inside the job, as a progress bar would."""
    job = get_current_job()
    assert job is not None
    for i in range(1, steps + 1):
        job.meta["progress"] = i
        job.save_meta()
    return steps


def wait_for_file(path: str, timeout: float = 30.0) -> str:
    """Block until ``path`` exists (a test releases the job when it is ready)."""
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return path


def touch_then_wait(started: str, release: str, timeout: float = 30.0) -> str:
    """Create ``started``, then wait for ``release``: lets a test act while a job runs."""
    Path(started).touch()
    return wait_for_file(release, timeout)


def pid_then_wait(started: str, release: str, timeout: float = 30.0) -> str:
    """Write this process's pid to ``started`` (at once, whole), then wait for ``release``.

    Shows which process runs the job (the worker's own, or a fork/spawn child)
    and lets a test act while it runs.
    """
    part = f"{started}.{os.getpid()}.part"
    Path(part).write_text(str(os.getpid()))
    os.replace(part, started)  # a reader sees no file or the whole pid, never an empty one
    return wait_for_file(release, timeout)


def modules_loaded(package: str) -> list[str]:
    """The modules of ``package`` imported in this (worker) process so far."""
    return sorted(m for m in sys.modules if m == package or m.startswith(package + "."))


def return_unpicklable() -> Any:
    return lambda: None


# Callbacks, with RQ's signatures; they record what they saw in a file.

def on_success_record(job: Any, connection: Any, result: Any, *args: Any, **kwargs: Any) -> None:
    append_line(job.meta["callback_file"], f"success {job.id} {result!r}")


def touch_then_wait_callback(job: Any, connection: Any, *args: Any, **kwargs: Any) -> None:
    """An on_success callback doing :func:`touch_then_wait` with ``job.meta``'s "started" and "release".

    Holds a worker between storing one job's outcome and taking its next job.
    """
    touch_then_wait(job.meta["started"], job.meta["release"])


def on_failure_record(job: Any, connection: Any, type: Any, value: Any, traceback: Any) -> None:
    append_line(job.meta["callback_file"], f"failure {job.id} {type.__name__}")


def callback_that_fails(job: Any, connection: Any, *args: Any, **kwargs: Any) -> None:
    raise RuntimeError("the callback itself fails")


class Calculator:
    @classmethod
    def double(cls, x: int) -> int:
        return 2 * x


def enqueue_to(queue_name: str, func_name: str, *args: Any) -> str:
    """Enqueue ``func_name(*args)`` on ``queue_name`` of the running job's backend; return its id.

    A job that makes another job, on another queue (a fan-out step).
    """
    from plugq import Queue

    job = get_current_job()
    connection = job.connection if job is not None else None
    return Queue(queue_name, connection=connection).enqueue(func_name, *args).id


def sync_job_then_sleep(url: str, seconds: float) -> float:
    """Run a quick job through a sync queue, then sleep: a job inside a job."""
    from plugq import Queue

    inner = Queue("inner", connection=url, is_async=False).enqueue(add, 1, 1, job_timeout=60)
    assert inner.result == 2
    time.sleep(seconds)
    return seconds


def on_stopped_record(job: Any, connection: Any) -> None:
    """An ``on_stopped`` callback: appends ``stopped <id>`` to ``job.meta['path']``."""
    with open(job.meta["path"], "a") as fh:
        fh.write(f"stopped {job.id}\n")


def slow_callback(job: Any, connection: Any, *args: Any, **kwargs: Any) -> None:
    """A callback that outlives any short callback timeout."""
    time.sleep(30)


def retry_until(path: str, succeed_on: int, max: int = 3, interval: float = 0) -> Any:
    """Return ``Retry(max, interval)`` until called ``succeed_on`` times (counted in ``path``)."""
    from plugq import Retry

    with open(path, "a") as fh:
        fh.write("x")
    with open(path) as fh:
        calls = len(fh.read())
    if calls < succeed_on:
        return Retry(max=max, interval=interval)
    return calls


def count_calls(path: str) -> int:
    """Append a line to ``path``; return how many lines it has now."""
    with open(path, "a") as fh:
        fh.write("x\n")
    with open(path) as fh:
        return len(fh.readlines())


def record_exception(job: Any, exc_type: Any, exc_value: Any, tb: Any) -> None:
    """An exception handler: appends ``handler1 <type>`` to ``job.meta['path']``; falls through."""
    with open(job.meta["path"], "a") as fh:
        fh.write(f"handler1 {exc_type.__name__}\n")


def stop_chain(job: Any, *exc_info: Any) -> bool:
    """An exception handler that ends the chain (returns False)."""
    with open(job.meta["path"], "a") as fh:
        fh.write("handler2\n")
    return False


def never_called(job: Any, *exc_info: Any) -> None:
    """An exception handler after one that returned False: must not run."""
    with open(job.meta["path"], "a") as fh:
        fh.write("handler3\n")
def progress_steps(steps: int) -> int:
    """Report done/total progress from inside the job at each step (plugq's ``set_progress``)."""
    job = get_current_job()
    assert job is not None
    for i in range(1, steps + 1):
        job.set_progress(done=i, total=steps, message=f"step {i}")
    return steps


def record_start_end(path: str, seconds: float) -> None:
    """Append ``start end`` (wall-clock epoch seconds) around a sleep: concurrency, measured."""
    start = time.time()
    time.sleep(seconds)
    with open(path, "a") as fh:
        fh.write(f"{start} {time.time()} {os.getpid()}\n")


def enqueue_child(func_name: str, *args: Any) -> dict[str, str]:
    """Enqueue ``func_name(*args)`` through a bare ``Queue()``, as a task author writes it.

    Returns the child's id and the URL ``connect()`` gives inside the job, so
    a test sees which backend a job without a connection argument lands on.
    """
    from plugq import Queue, connect

    return {"child": Queue().enqueue(func_name, *args).id, "url": connect().url}


def summarize(members: list[Any], label: str = "") -> list[Any]:
    """A group's completion callback: ``[label, [status, result], …]`` of its members."""
    return [label, *[[str(m.status), m.result] for m in members]]
