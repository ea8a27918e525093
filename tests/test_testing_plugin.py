"""plugq.testing: the pytest plugin, drain() and the assertion helpers.

Most tests run a user's test file with ``pytester`` and assert its outcome
and output, so what is checked is what a user of the plugin sees. The same
user file is run on memory (the default), SQLite and Redis.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import plugq.connection
from plugq import Clock, ManualClock, NotSupportedError, Queue, Retry
from plugq.backend import Backend
from plugq.testing import (
    ClockControl,
    assert_enqueued,
    assert_job_finished,
    assert_job_status,
    drain,
    isolated_backend,
)
from plugq.testing._isolation import fresh_url, needs_tmp_dir
from plugq.testing.tasks import add, enqueue_to, fail_until

pytest_plugins = ["pytester"]

# A user's test file: application code enqueues with Queue() and no
# connection; the tests drain, move the clock and assert. It must pass
# unchanged on every backend, so intervals are production-sized where the
# clock is manual and one second where time is real.
USER_TESTS = '''
from datetime import timedelta

import pytest

from plugq import Queue, Retry
from plugq.testing import (
    assert_enqueued, assert_job_failed, assert_job_finished, assert_job_status,
    assert_not_enqueued, drain,
)
from plugq.testing.tasks import add, fail, fail_until


def signup(user_id):
    """Application code: the default queue, no connection argument."""
    return Queue().enqueue(add, user_id, 1)


def intervals(clock):
    return [60, 600, 3600] if clock.manual else [1, 1, 1]


def test_retries_twice_then_succeeds(plugq_queue, plugq_clock, tmp_path):
    first, second, _ = intervals(plugq_clock)
    job = plugq_queue.enqueue(
        fail_until, str(tmp_path / "calls"), 2, retry=Retry(max=3, interval=intervals(plugq_clock))
    )
    assert drain(plugq_queue) == [job]          # attempt 1 fails
    assert_job_status(job, "scheduled")
    plugq_clock.advance(first)
    assert drain(plugq_queue) == [job]          # attempt 2 fails
    assert_job_status(job, "scheduled")
    plugq_clock.advance(second)
    assert drain(plugq_queue) == [job]          # attempt 3 succeeds
    assert_job_finished(job, result=3)
    assert (job.ended_at - job.created_at).total_seconds() >= first + second


def test_scheduled_job_runs_once_due(plugq_queue, plugq_clock):
    delay = 3600 if plugq_clock.manual else 1
    job = plugq_queue.enqueue_in(timedelta(seconds=delay), add, 2, 3)
    assert drain(plugq_queue) == []
    assert_job_status(job, "scheduled")
    plugq_clock.advance(delay)
    assert drain(plugq_queue) == [job]
    assert_job_finished(job, result=5)


def test_result_expires_after_result_ttl(plugq_queue, plugq_clock):
    ttl = 500 if plugq_clock.manual else 3
    job = plugq_queue.enqueue(add, 1, 1, result_ttl=ttl)
    drain(plugq_queue)
    assert_job_finished(job, result=2)
    plugq_clock.advance(ttl + 1)
    assert plugq_queue.fetch_job(job.id) is None


def test_app_code_uses_the_test_backend(plugq_backend, plugq_queue):
    job = signup(41)
    assert job.connection is plugq_backend
    assert_enqueued(plugq_queue, add, 41, 1)
    assert_not_enqueued(plugq_queue, fail)
    assert drain(plugq_queue) == [job]
    assert_job_finished(job, result=42)
    assert_not_enqueued(plugq_queue, add)


def test_retried_attempts_are_not_failures(plugq_queue, tmp_path):
    job = plugq_queue.enqueue(fail_until, str(tmp_path / "calls"), 1, retry=Retry(max=1))
    assert drain(plugq_queue, raise_failures=True) == [job, job]
    assert_job_finished(job, result=2)


def test_failure_is_kept(plugq_queue):
    job = plugq_queue.enqueue(fail, "card declined")
    assert drain(plugq_queue) == [job]
    assert_job_failed(job, ValueError, match="declined")


def test_raise_failures_reraises_the_task_exception(plugq_queue):
    job = plugq_queue.enqueue(fail, "card declined")
    with pytest.raises(ValueError, match="card declined"):
        drain(plugq_queue, raise_failures=True)
    assert_job_failed(job, ValueError)


def test_each_test_starts_empty(plugq_queue):
    assert len(plugq_queue) == 0
    assert plugq_queue.finished_job_registry.count == 0
    assert plugq_queue.failed_job_registry.count == 0
'''
USER_TEST_COUNT = 8

# A user's test file where every test fails, to check what the user reads.
FAILING_TESTS = '''
from plugq.testing import (
    assert_enqueued, assert_job_failed, assert_job_finished, assert_not_enqueued, drain,
)
from plugq.testing.tasks import add, fail


def test_wrong_arguments(plugq_queue):
    plugq_queue.enqueue(add, 1, 2)
    assert_enqueued(plugq_queue, add, 1, 3)


def test_expected_finished_but_failed(plugq_queue):
    job = plugq_queue.enqueue(fail, "card declined")
    drain(plugq_queue)
    assert_job_finished(job)


def test_wrong_result(plugq_queue):
    job = plugq_queue.enqueue(add, 2, 2)
    drain(plugq_queue)
    assert_job_finished(job, result=5)


def test_wrong_exception(plugq_queue):
    job = plugq_queue.enqueue(fail, "card declined")
    drain(plugq_queue)
    assert_job_failed(job, KeyError)


def test_expected_failure_but_finished(plugq_queue):
    job = plugq_queue.enqueue(add, 2, 2)
    drain(plugq_queue)
    assert_job_failed(job, ValueError)


def test_unexpected_job(plugq_queue):
    plugq_queue.enqueue(add, 1, 2)
    assert_not_enqueued(plugq_queue, add)


def test_raise_failures(plugq_queue):
    plugq_queue.enqueue(fail, "card declined")
    drain(plugq_queue, raise_failures=True)
'''


def _section(output: str, test_name: str) -> str:
    """One test's failure report from pytest's output."""
    match = re.search(rf"_{{3,}} {test_name} _{{3,}}\n(.*?)(?=\n_{{3,}} \w+ _{{3,}}|\n=+ )", output, re.S)
    assert match is not None, f"no failure section for {test_name} in:\n{output}"
    return match.group(1)


def _require_backend(url: str) -> None:
    """Skip while the backend for ``url`` is still the not-yet-built placeholder."""
    try:
        plugq.connection.connect(url)
    except NotSupportedError as exc:
        if "not built yet" in str(exc):
            pytest.skip(str(exc))
        raise
    finally:
        plugq.connection.forget(url)


# -- the user's file on every backend ------------------------------------------


def test_user_file_passes_in_memory(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=USER_TEST_COUNT)


def test_user_file_passes_on_sqlite_file_emptied_between_tests(pytester: pytest.Pytester) -> None:
    folder = pytester.path / "db"
    folder.mkdir()
    url = f"sqlite:///{folder / 'plugq.db'}"
    _require_backend(url)
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", f"--plugq-url={url}")
    result.assert_outcomes(passed=USER_TEST_COUNT)
    assert (folder / "plugq.db").exists()


def test_user_file_passes_on_a_new_sqlite_file_per_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _require_backend(f"sqlite:///{pytester.path / 'probe.db'}")
    pytester.makepyfile(test_user=USER_TESTS)
    # The environment variable is the other way to choose, e.g. in CI.
    monkeypatch.setenv("PLUGQ_TEST_URL", "sqlite:///plugq.db")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=USER_TEST_COUNT)
    # Placeholder URLs never create the file named in the URL itself.
    assert not (pytester.path / "plugq.db").exists()


@pytest.mark.redis
def test_user_file_passes_on_redis(pytester: pytest.Pytester, redis_server: Any) -> None:
    # A database of its own: the plugin flushes it before each test.
    url = redis_server.db_url(13)
    _require_backend(url)
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", f"--plugq-url={url}")
    result.assert_outcomes(passed=USER_TEST_COUNT)


def test_user_file_passes_on_fakeredis(pytester: pytest.Pytester) -> None:
    pytest.importorskip("fakeredis")
    url = "fakeredis://plugq-testing-plugin"
    _require_backend(url)
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", f"--plugq-url={url}")
    result.assert_outcomes(passed=USER_TEST_COUNT)


# -- the worked example in docs/testing.md -----------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "testing.md"


def _doc_files() -> dict[str, str]:
    """The docs' Python blocks that start with a ``# path/to/file.py`` line."""
    blocks = re.findall(r"```python\n# (\S+\.py)\n(.*?)```", DOCS.read_text(), re.S)
    return {path: body for path, body in blocks}


@pytest.mark.parametrize("url", [None, "sqlite:///plugq.db"], ids=["memory", "sqlite"])
def test_docs_worked_example_passes(pytester: pytest.Pytester, url: str | None) -> None:
    if url is not None:
        _require_backend(f"sqlite:///{pytester.path / 'probe.db'}")
    files = _doc_files()
    assert sorted(files) == ["shop/tasks.py", "tests/test_shop.py"]
    for path, body in {**files, "shop/__init__.py": ""}.items():
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)
    pytester.syspathinsert()
    args = ["-p", "no:cacheprovider", "tests/test_shop.py"]
    result = pytester.runpytest(*args, *([f"--plugq-url={url}"] if url else []))
    result.assert_outcomes(passed=2)


# -- what a failing user test prints ----------------------------------------------


def test_failure_messages_are_readable(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_failing=FAILING_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=7)
    out = result.stdout.str()

    wrong_args = _section(out, "test_wrong_arguments")
    assert (
        "expected a job plugq.testing.tasks.add(1, 3) waiting on Queue('default'), "
        "but there is none." in wrong_args
    )
    assert "Waiting on Queue('default') (1):" in wrong_args
    assert "- plugq.testing.tasks.add(1, 2)  [queued] id=" in wrong_args

    finished = _section(out, "test_expected_finished_but_failed")
    assert "to be finished, but it is failed (last error: ValueError: card declined)" in finished
    assert 'raise ValueError(message)' in finished  # the task's traceback is shown
    assert "tasks.py" in finished and "_worker_loop.py" not in finished.split("Captured")[0]

    result_section = _section(out, "test_wrong_result")
    assert "finished, but returned 4; expected 5" in result_section

    wrong_exc = _section(out, "test_wrong_exception")
    assert "to fail with KeyError, but it failed with ValueError: card declined" in wrong_exc

    not_failed = _section(out, "test_expected_failure_but_finished")
    assert "to have failed, but it is finished; it returned 4" in not_failed

    unexpected = _section(out, "test_unexpected_job")
    assert (
        "expected no job plugq.testing.tasks.add(…any arguments…) waiting on Queue('default'), "
        "but found 1:" in unexpected
    )

    # raise_failures: the task's own exception, type and message, with the
    # task's frame, and none of the worker's plumbing.
    raised = _section(out, "test_raise_failures")
    assert "drain(plugq_queue, raise_failures=True)" in raised
    assert "raise ValueError(message)" in raised
    assert "E       ValueError: card declined" in raised
    assert "_worker_loop.py" not in raised.split("Captured log")[0]
    assert "FAILED test_failing.py::test_raise_failures - ValueError: card declined" in out

    # The helpers hide their own frames: reports point at the user's line.
    assert "_asserts.py" not in out
    assert "_drain.py" not in out


# -- the plugin is inert unless its fixtures are used ------------------------------


def test_plugin_is_auto_loaded_but_inert(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_inert='''
        import os
        import plugq.connection as connection

        ORIGINAL_URL = os.environ.get("PLUGQ_URL")
        seen = {}


        def test_before_any_fixture():
            assert connection._default == []


        def test_with_fixture(plugq_backend):
            assert connection._default == [plugq_backend]
            seen["url"] = plugq_backend.url
            assert os.environ["PLUGQ_URL"] == plugq_backend.url


        def test_after_the_fixture():
            assert connection._default == []
            assert os.environ.get("PLUGQ_URL") == ORIGINAL_URL
            assert seen["url"] not in connection._cache   # the store was dropped


        def test_the_option_exists(pytestconfig):
            assert pytestconfig.getoption("plugq_url") is None
        '''
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)

    help_text = pytester.runpytest("--help").stdout.str()
    assert "--plugq-url=URL" in help_text


def test_plugin_can_be_disabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_off='''
        def test_uses_fixture(plugq_queue):
            pass
        '''
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:plugq")
    result.assert_outcomes(errors=1)
    assert "fixture 'plugq_queue' not found" in result.stdout.str()


def test_each_test_gets_its_own_store(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_fresh='''
        from plugq import Queue
        from plugq.testing.tasks import add

        backends = []


        def test_one(plugq_queue, plugq_clock):
            backends.append(plugq_queue.backend)
            plugq_queue.enqueue(add, 1, 2)
            plugq_clock.advance(3600)
            assert len(Queue()) == 1


        def test_two(plugq_queue, plugq_clock):
            backends.append(plugq_queue.backend)
            assert len(Queue()) == 0
            assert backends[0] is not backends[1]
            assert plugq_clock.now() < backends[0].clock.now()   # a clock of its own
        '''
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


# -- the retry example, in this process ------------------------------------


def test_retry_with_production_intervals_takes_no_real_sleep(
    plugq_queue: Queue, plugq_clock: ClockControl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not plugq_clock.manual:
        pytest.skip("shows the manual clock of memory://; --plugq-url chose a real-clock backend")
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    job = plugq_queue.enqueue(
        fail_until, str(tmp_path / "calls"), 2, retry=Retry(max=3, interval=[60, 600, 3600])
    )
    start = plugq_clock.now()
    runs = drain(plugq_queue)
    plugq_clock.advance(60)
    runs += drain(plugq_queue)
    plugq_clock.advance(timedelta(seconds=600))
    runs += drain(plugq_queue)

    assert runs == [job, job, job]
    assert_job_finished(job, result=3)
    assert job.retries_left == 1
    assert job.ended_at is not None and job.created_at is not None
    assert (job.ended_at - job.created_at).total_seconds() >= 660
    assert plugq_clock.now() - start >= 660
    assert slept == []  # no real waiting anywhere: the clock jumped
    assert (tmp_path / "calls").read_text() == "3"


# -- drain() -----------------------------------------------------------------------


def test_drain_returns_jobs_in_run_order_and_honours_max_jobs(plugq_queue: Queue) -> None:
    jobs = [plugq_queue.enqueue(add, i, i) for i in range(3)]
    first = drain(plugq_queue, max_jobs=2)
    assert first == jobs[:2]
    assert [j.get_status() for j in first] == ["finished", "finished"]
    assert_job_status(jobs[2], "queued")
    assert drain(plugq_queue) == jobs[2:]
    assert [j.return_value() for j in jobs] == [0, 2, 4]


def test_drain_a_backend_follows_jobs_to_new_queues(plugq_backend: Backend) -> None:
    parent = Queue("a", connection=plugq_backend).enqueue(
        enqueue_to, "b", "plugq.testing.tasks.add", 1, 2
    )
    ran = drain(plugq_backend)
    assert len(ran) == 2 and ran[0] == parent
    child = ran[1]
    assert child.origin == "b"
    assert_job_finished(parent, result=child.id)
    assert_job_finished(child, result=3)


def test_drain_one_queue_leaves_the_others(plugq_backend: Backend) -> None:
    a, b = Queue("a", connection=plugq_backend), Queue("b", connection=plugq_backend)
    parent = a.enqueue(enqueue_to, "b", "plugq.testing.tasks.add", 1, 2)
    assert drain(a) == [parent]
    child = assert_enqueued(b, add, 1, 2)
    assert drain([b, a]) == [child]


def test_drain_raise_failures_keeps_the_job_failed(plugq_queue: Queue) -> None:
    from plugq.testing.tasks import fail

    failing = plugq_queue.enqueue(fail, "no luck")
    after = plugq_queue.enqueue(add, 1, 1)
    with pytest.raises(ValueError, match="no luck") as caught:
        drain(plugq_queue, raise_failures=True)
    assert caught.traceback[-1].name == "fail"  # the task's own frame
    assert_job_status(failing, "failed")
    assert_job_status(after, "queued")  # the worker stopped at the failure
    assert drain(plugq_queue) == [after]


def test_drain_refuses_a_bad_max_jobs(plugq_queue: Queue) -> None:
    with pytest.raises(ValueError, match="max_jobs"):
        drain(plugq_queue, max_jobs=0)


# -- outside pytest fixtures ------------------------------------------------------


def test_isolated_backend_is_the_default_inside_the_block_only() -> None:
    before = list(plugq.connection._default)
    with isolated_backend("memory://?lease=5") as backend:
        assert Queue().backend is backend
        assert isinstance(backend.clock, ManualClock)
        assert backend.storage.lease == 5.0
        job = Queue().enqueue(add, 2, 2)
        assert drain() == [job]
    assert plugq.connection._default == before
    assert backend.url not in plugq.connection._cache


def test_fresh_url_rules(tmp_path: Path) -> None:
    assert needs_tmp_dir("sqlite://") and needs_tmp_dir("sqlite:///plugq.db")
    assert not needs_tmp_dir(f"sqlite:///{tmp_path}/x.db") and not needs_tmp_dir("memory://")
    assert fresh_url("sqlite:///", tmp_path) == (f"sqlite:///{tmp_path / 'plugq.db'}", True)
    assert fresh_url("sqlite:///app.db", tmp_path) == (f"sqlite:///{tmp_path / 'app.db'}", True)
    shared = f"sqlite:///{tmp_path}/shared.db"
    assert fresh_url(shared, tmp_path) == (shared, False)
    assert fresh_url("redis://localhost:6379/3") == ("redis://localhost:6379/3", False)
    one, private = fresh_url("memory://")
    assert private and one.startswith("memory://plugq-test-") and one.endswith("?clock=manual")
    assert fresh_url("memory://")[0] != one


def test_clock_control_on_a_real_clock_really_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    control = ClockControl(Clock())
    assert not control.manual
    control.advance(timedelta(milliseconds=250))
    control.advance(0.5)
    assert slept == [0.25, 0.5]
    with pytest.raises(ValueError, match="forward"):
        control.advance(-1)


def test_clock_control_on_a_manual_clock_jumps() -> None:
    control = ClockControl(ManualClock(start=1000.0))
    assert control.manual
    assert control.advance(60) == 1060.0
    assert control.now() == 1060.0
    assert control.utcnow().timestamp() == 1060.0

