# ruff: noqa: UP031  (the examples keep rq's own %-formatting, verbatim)
"""The functions RQ's documentation imports "from somewhere" (tests/test_rq_docs.py).

They do what the documentation's names say, without the network: the
getting-started page counts the words of http://nvie.com; here a canned page
stands in for it.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from typing import Any

from plugq import Retry, get_current_job
from plugq.decorators import job

PAGE = "RQ (Redis Queue) is a simple Python library for queueing jobs and processing them"


def count_words_at_url(url: str) -> int:
    """The getting-started task (index #0), on a canned page."""
    return len(PAGE.split())


def my_func(*args: Any, **kwargs: Any) -> str:
    return "my_func"


def send_welcome_email(user_id: int) -> str:
    return f"welcome {user_id}"


def my_task(*args: Any, **kwargs: Any) -> str:
    return "done"


def generate_report(*args: Any) -> str:
    return "report"


def send_report(*args: Any) -> str:
    return "sent"


def foo() -> str:
    return "foo"


def bar() -> str:
    return "bar"


def baz() -> str:
    return "baz"


def div_by_zero(x: float = 1) -> float:
    return x / 0


def say_hello(*args: Any, **kwargs: Any) -> str:
    return "Hello"


def say_nothing() -> None:
    return None


def report_success(job: Any, connection: Any, result: Any, *args: Any, **kwargs: Any) -> None:
    """index #19, verbatim."""


def report_failure(job: Any, connection: Any, type: Any, value: Any, traceback: Any) -> None:
    """index #20, verbatim."""


def report_stopped(job: Any, connection: Any) -> None:
    """index #21, verbatim."""


@job("low", timeout=5)
def add(x: int, y: int) -> int:
    """index #24: the decorator, with the connection left to the default backend."""
    return x + y


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def current_job_add(x: int, y: int) -> int:
    """jobs #11 (``add`` using get_current_job)."""
    job = get_current_job()
    print("Current job: %s" % (job.id,))
    return x + y


def meta_add(x: int, y: int) -> int:
    """jobs #12 (``add`` writing job.meta)."""
    job = get_current_job()
    job.meta["handled_by"] = socket.gethostname()
    job.save_meta()

    # do more work
    time.sleep(1)
    return x + y


def sleep_for_10_seconds() -> int:
    time.sleep(10)
    return 10


def count_words_at_url_retrying(url: str, max: int = 1, interval: float = 60) -> Any:
    """results #4, with urllib in place of requests (not installed here)."""
    try:
        resp = urllib.request.urlopen(url, timeout=2)
    except (urllib.error.URLError, OSError):
        return Retry(max=max, interval=interval)
    return len(resp.read().split())


def mytask(*args: Any, **kwargs: Any) -> str:
    return "mytask"


def really_really_slow() -> str:
    return "slow"


def my_function() -> str:
    return "repeated"


def my_long_running_job() -> str:
    return "long"


def some_func() -> str:
    return "some"


def blocking(path: str, timeout: float = 30.0) -> str:
    """Runs until ``path`` exists (lets a test look at a job while it runs)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(path):
                return "released"
        except FileNotFoundError:
            time.sleep(0.02)
    return "timed out"


def foo_handler(job: Any, exc_type: Any, exc_value: Any, traceback: Any) -> None:
    with open(job.meta["path"], "a") as fh:
        fh.write("foo\n")


def bar_handler(job: Any, *exc_info: Any) -> None:
    with open(job.meta["path"], "a") as fh:
        fh.write("bar\n")


def black_hole(job: Any, *exc_info: Any) -> bool:
    """exceptions #6, verbatim."""
    return False


def my_work_horse_killed_handler(job: Any, retpid: int, ret_val: int, rusage: Any) -> None:
    """exceptions #8 (its body is a comment in the docs)."""
