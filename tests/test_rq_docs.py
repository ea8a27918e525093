# ruff: noqa: UP031  (the examples keep rq's own %-formatting, verbatim)
"""Every Python example of RQ's documentation, on memory, SQLite, Redis (a real server), PostgreSQL.

Source: github.com/rq/rq, ``docs/docs/`` — index.md (getting started),
jobs.md, results.md, exceptions.md, scheduling.md, job_registries.md,
workers.md, testing.md, connections.md. Each test is one example (``page
#n`` counts the page's ```python blocks from 0), adapted only in its import
lines (``rq`` -> ``plugq``) and its connection (``Redis()`` -> the
``redis_conn`` fixture: a ``memory://`` or ``sqlite:///`` URL, or a real
``redis.Redis`` client). The functions the pages import "from somewhere" are
in ``tests/rqdocs_tasks.py``. What an example needs to exist first (a job
named ``my_job_id``, a running worker) is set up before it, outside its text.

On today's Redis backend (rq-driven, ``backends/plugq_rq``), an example using
a feature that backend does not run yet (``Repeat``, ``Group``,
``on_stopped``, callback timeouts, webhooks, worker commands, results
history, exception handlers) raises ``NotSupportedError``, and the test
asserts exactly that (:func:`unsupported`); the Storage-based Redis backend
(issue 14) runs them through the engine.

Examples left out, and why, are in :data:`LEFT_OUT`.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import rqdocs_tasks
from plugq import NotSupportedError, Queue, Worker
from plugq import Queue as SetupQueue  # what a test prepares before an example's own imports
from plugq.backend import Backend
from plugq.connection import pop_default, push_default, resolve_connection
from rqdocs_tasks import (
    bar,
    baz,
    count_words_at_url,
    div_by_zero,
    fib,
    foo,
    generate_report,
    my_func,
    my_function,
    my_long_running_job,
    my_task,
    mytask,
    really_really_slow,
    report_failure,
    report_stopped,
    report_success,
    say_hello,
    say_nothing,
    send_report,
    send_welcome_email,
    sleep_for_10_seconds,
)

#: Examples not run, with the reason (``page #n``: why).
LEFT_OUT = {
    "index #13": "RateLimit: its prose has the third job rate_limited at enqueue (rq takes "
                  "the slot then); plugq admits at claim (docs/ratelimit.md, the difference)",
    "jobs #2": "not valid Python in rq either ('count_words_at url'; a string as args)",
    "exceptions #3": "not valid Python: a def whose body is only a comment",
    "exceptions #4": "not valid Python: a def whose body is only a comment",
    "exceptions #8": "not valid Python: a def whose body is only a comment",
    "scheduling #8": "a fragment ('...', an if __name__ block) of scheduling #7",
    "workers #0": "a script that runs a worker forever after importing a placeholder module",
    "workers #6": "an rq CLI settings file (REDIS_URL, SENTRY_DSN, DICT_CONFIG), not the API",
    "workers #8": "RoundRobinWorker: not in plugq (a worker takes its queues in the order given)",
    "workers #9": "RandomWorker: not in plugq (a worker takes its queues in the order given)",
    "workers #11": "a custom rq Job/Queue subclass (job_class): plugq has no job_class",
    "testing #1": "subclasses rq's SimpleWorker with rq's TimerDeathPenalty (rq internals); "
                  "plugq's timeouts already work without SIGALRM",
    "connections #1": "a second Redis server at remote.host.org",
    "connections #2": "Connection() context manager: removed in rq 2.x",
    "connections #3": "push_connection/pop_connection: removed in rq 2.x",
    "connections #4": "an rq CLI Sentinel settings block, not the API",
    "connections #6": "shows what is not supported (decode_responses=True); "
                      "tests/test_rq_urls.py checks plugq refuses it",
}

#: How many examples run (each on memory, SQLite and Redis); the README states it.
EXAMPLES_RUN = 80


# -- fixtures and helpers ---------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("postgres", marks=pytest.mark.postgres)])
def redis_conn(request, tmp_path) -> Iterator[Any]:
    """What an example passes as ``connection=``; also the default connection meanwhile."""
    if request.param == "memory":
        conn: Any = f"memory://rqdocs-{uuid.uuid4().hex}"
    elif request.param == "sqlite":
        conn = f"sqlite:///{tmp_path / 'rqdocs.db'}"
    elif request.param == "postgres":
        conn = request.getfixturevalue("postgres_url")
    else:
        import redis

        server = request.getfixturevalue("redis_server")
        server.flushall()
        conn = redis.Redis.from_url(server.url)
    backend = resolve_connection(conn)
    push_default(backend)
    try:
        yield conn
    finally:
        pop_default(backend)


def backend_of(conn: Any) -> Backend:
    return resolve_connection(conn)


def unsupported(conn: Any, *features: str) -> contextlib.AbstractContextManager[Any]:
    """Around an example: expect NotSupportedError when the backend lacks one of ``features``."""
    backend = backend_of(conn)
    if all(f in backend.features or f in backend.worker_options for f in features):
        return contextlib.nullcontext()
    return pytest.raises(NotSupportedError)


@contextlib.contextmanager
def worker_running(conn: Any, *queues: str) -> Iterator[Worker]:
    """A worker taking jobs from ``queues`` in a thread while the example runs (as `rq worker`)."""
    w = Worker(list(queues) or ["default"], connection=conn, worker_class="simple",
               name=f"docs-{uuid.uuid4().hex[:6]}")
    t = threading.Thread(target=w.work, daemon=True)
    t.start()
    try:
        end = time.monotonic() + 15
        while w.name not in [x.name for x in Worker.all(connection=conn)]:
            assert time.monotonic() < end, "worker did not start"
            time.sleep(0.02)
        yield w
    finally:
        w.request_stop()
        t.join(30)


def drain(conn: Any, *queues: str) -> None:
    Worker(list(queues) or ["default"], connection=conn, worker_class="simple").work(burst=True)


def wait_for(predicate: Any, timeout: float = 15) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


# -- index.md (getting started) ---------------------------------------------------


def test_index_0_task_definition():
    assert count_words_at_url("http://nvie.com") > 0  # defined in rqdocs_tasks


def test_index_1_enqueue_and_result(redis_conn, capsys):
    with worker_running(redis_conn):
        from plugq import Queue  # was: from rq import Queue

        # Tell RQ what Redis/Valkey connection to use
        q = Queue(connection=redis_conn)  # no args implies the default queue

        # Delay execution of count_words_at_url('http://nvie.com')
        job = q.enqueue(count_words_at_url, 'http://nvie.com')
        print(job.result)   # => None  # Changed to job.return_value() in RQ >= 1.12.0

        # Now, wait a while, until the worker is finished
        time.sleep(2)
        print(job.result)   # => 889  # Changed to job.return_value() in RQ >= 1.12.0
    assert capsys.readouterr().out.split() == [str(None), str(count_words_at_url(""))] or \
        job.result == count_words_at_url("")


def test_index_2_named_queue(redis_conn):
    q = Queue('low', connection=redis_conn)
    q.enqueue(count_words_at_url, 'http://nvie.com')
    assert len(q) == 1


def test_index_3_reserved_and_passed_kwargs(redis_conn):
    q = Queue('low', connection=redis_conn)
    job = q.enqueue(count_words_at_url,
                    ttl=30,  # This ttl will be used by RQ
                    args=('http://nvie.com',),
                    kwargs={
                        'description': 'Function description',  # passed on to count_words_at_url
                        'ttl': 15  # This is passed on to count_words_at_url function
                    })
    assert job.ttl == 30 and job.kwargs == {'description': 'Function description', 'ttl': 15}


def test_index_4_dotted_path(redis_conn):
    q = Queue('low', connection=redis_conn)
    job = q.enqueue('my_package.my_module.my_func', 3, 4)
    assert job.func_name == 'my_package.my_module.my_func'


def test_index_5_enqueue_many(redis_conn):
    q = Queue(connection=redis_conn)
    jobs = q.enqueue_many(
        [
            Queue.prepare_data(count_words_at_url, ('http://nvie.com',), job_id='my_job_id'),
            Queue.prepare_data(count_words_at_url, ('http://nvie.com',), job_id='my_other_job_id'),
        ]
    )
    assert [j.id for j in jobs] == ['my_job_id', 'my_other_job_id']


def test_index_6_enqueue_many_pipeline(redis_conn):
    q = Queue(connection=redis_conn)
    with q.connection.pipeline() as pipe:
        jobs = q.enqueue_many(
            [
                Queue.prepare_data(count_words_at_url, ('http://nvie.com',), job_id='my_job_id'),
                Queue.prepare_data(count_words_at_url, ('http://nvie.com',),
                                   job_id='my_other_job_id'),
            ],
            pipeline=pipe
        )
        pipe.execute()
    assert q.get_job_ids() == [j.id for j in jobs]


def test_index_7_8_group(redis_conn):
    with unsupported(redis_conn, "group"):
        from plugq import Queue  # was: from rq import Queue
        from plugq.group import Group  # was: from rq.group import Group

        # Tell RQ what Redis connection to use
        q = Queue(connection=redis_conn)  # no args implies the default queue

        group = Group.create(connection=redis_conn)
        jobs = group.enqueue_many(
            queue=q,
            job_datas=[
                Queue.prepare_data(count_words_at_url, ('http://nvie.com',), job_id='my_job_id'),
                Queue.prepare_data(count_words_at_url, ('http://nvie.com',),
                                   job_id='my_other_job_id'),
            ]
        )
        print(group.get_jobs())  # [Job('my_job_id'), Job('my_other_job_id')]  (index #8)
        assert [j.id for j in group.get_jobs()] == [j.id for j in jobs]


def test_index_9_group_fetch(redis_conn):
    with unsupported(redis_conn, "group"):
        from plugq.group import Group  # was: from rq.group import Group

        Group.create(connection=redis_conn, name='my_group').enqueue_many(
            SetupQueue(connection=redis_conn), [Queue.prepare_data(say_hello)])  # setup
        group = Group.fetch(id='my_group', connection=redis_conn)
        assert len(group.get_jobs()) == 1


def test_index_10_unique(redis_conn, capsys):
    from plugq import Queue  # was: from rq import Queue
    from plugq.exceptions import DuplicateJobError  # was: from rq.exceptions import …

    user_id = 42
    queue = Queue(connection=redis_conn)

    # First enqueue succeeds
    job = queue.enqueue(send_welcome_email, user_id, job_id='welcome-email-42', unique=True)

    # Attempting to enqueue again with the same job_id raises DuplicateJobError
    try:
        queue.enqueue(send_welcome_email, user_id, job_id='welcome-email-42', unique=True)
    except DuplicateJobError:
        print('Job already exists!')
    assert "Job already exists!" in capsys.readouterr().out and job.id == 'welcome-email-42'


def test_index_11_unique_after_delete(redis_conn):
    queue = Queue(connection=redis_conn)
    job = queue.enqueue(my_task, job_id='my-job', unique=True)

    # Delete the job
    job.delete()

    # Now the same job_id can be enqueued again
    job = queue.enqueue(my_task, job_id='my-job', unique=True)
    assert job.get_status() == 'queued'


def test_index_12_unique_enqueue_in(redis_conn):
    queue = Queue(connection=redis_conn)
    job = queue.enqueue_in(timedelta(minutes=30), my_task, job_id='scheduled-task', unique=True)
    assert job.get_status() == 'scheduled'


def test_index_14_depends_on(redis_conn):
    my_redis_conn = redis_conn
    q = Queue('low', connection=my_redis_conn)
    report_job = q.enqueue(generate_report)
    sent = q.enqueue(send_report, depends_on=report_job)
    assert sent.get_status() == 'deferred'
    drain(redis_conn, 'low')
    assert sent.get_status() == 'finished'


def test_index_15_depends_on_many(redis_conn):
    redis = redis_conn
    queue = Queue('low', connection=redis)
    foo_job = queue.enqueue(foo)
    bar_job = queue.enqueue(bar)
    baz_job = queue.enqueue(baz, depends_on=[foo_job, bar_job])
    drain(redis_conn, 'low')
    assert baz_job.result == 'baz'


def test_index_16_dependency_allow_failure(redis_conn):
    from plugq import Queue  # was: from rq import Queue
    from plugq.retry import Dependency  # was: from rq.job import Dependency

    queue = Queue(connection=redis_conn)
    job_1 = queue.enqueue(div_by_zero)
    dependency = Dependency(
        jobs=[job_1],
        allow_failure=True,    # allow_failure defaults to False
        enqueue_at_front=True  # enqueue_at_front defaults to False
    )
    job_2 = queue.enqueue(say_hello, depends_on=dependency)

    """
      job_2 will execute even though its dependency (job_1) fails,
      and it will be enqueued at the front of the queue.
    """
    drain(redis_conn)
    assert job_1.get_status() == 'failed' and job_2.result == 'Hello'


def test_index_17_callbacks(redis_conn):
    queue = Queue(connection=redis_conn)
    with unsupported(redis_conn, "on_stopped"):
        queue.enqueue(say_hello, on_success=report_success, on_failure=report_failure,
                      on_stopped=report_stopped)
        assert len(queue) == 1


def test_index_18_callback_timeouts(redis_conn):
    queue = Queue(connection=redis_conn)
    with unsupported(redis_conn, "callback_timeout", "on_stopped"):
        from plugq import Callback  # was: from rq import Callback

        job = queue.enqueue(say_hello,
                            on_success=Callback(report_success),  # default timeout (60 s)
                            on_failure=Callback(report_failure, timeout=10),  # 10 s timeout
                            on_stopped=Callback(report_stopped, timeout="2m"))  # 2 minute timeout
        drain(redis_conn)
        assert job.result == 'Hello'


def test_index_19_20_21_callback_signatures():
    # The three callback definitions are in rqdocs_tasks, verbatim; index #17/#18 use them.
    assert report_success(None, None, 1) is None and report_stopped(None, None) is None
    assert report_failure(None, None, ValueError, ValueError(), None) is None


def test_index_22_webhooks(redis_conn):
    queue = Queue(connection=redis_conn)
    with unsupported(redis_conn, "webhooks"):
        from plugq import Webhook  # was: from rq import Webhook

        job = queue.enqueue(say_hello,
                            webhooks=[Webhook('https://example.com/finished',
                                              job_status='finished'),
                                      Webhook('https://example.com/failed', job_status='failed',
                                              method='POST')])
        assert job.get_status() == 'queued'


def test_index_23_queue_operations(redis_conn, capsys):
    from plugq import Queue  # was: from rq import Queue

    q = Queue(connection=redis_conn)
    q.enqueue(say_hello, job_id='my_id')  # setup

    # Getting the number of jobs in the queue
    # Note: Only queued jobs are counted, not including deferred ones
    print(len(q))

    # Retrieving jobs
    queued_job_ids = q.job_ids  # Gets a list of job IDs from the queue
    queued_jobs = q.jobs  # Gets a list of enqueued job instances
    job = q.fetch_job('my_id')  # Returns job having ID "my_id"

    # Emptying a queue, this will delete all jobs in this queue
    q.empty()

    # Deleting a queue
    q.delete(delete_jobs=True)  # Passing in `True` will remove all jobs in the queue
    # queue is now unusable. It can be recreated by enqueueing jobs to it.
    assert queued_job_ids == ['my_id'] and queued_jobs[0].id == job.id == 'my_id'
    assert capsys.readouterr().out.strip() == "1" and len(q) == 0


def test_index_24_job_decorator(redis_conn, capsys):
    # rqdocs_tasks.add is `@job('low', timeout=5)`; its connection is the default one.
    with worker_running(redis_conn, 'low'):
        job = rqdocs_tasks.add.delay(3, 4)
        time.sleep(1)
        wait_for(lambda: job.get_status() == 'finished')  # a loaded machine may take longer
        print(job.return_value())
    assert capsys.readouterr().out.strip() == "7" and job.timeout == 5


def test_index_25_sync_queue(redis_conn):
    my_redis_conn = redis_conn
    q = Queue('low', is_async=False, connection=my_redis_conn)
    job = q.enqueue(fib, 8)
    assert job.result == 21


# -- jobs.md ----------------------------------------------------------------------


def test_jobs_0_job_id(redis_conn, capsys):
    from plugq import Queue  # was: from rq import Queue

    q = Queue(connection=redis_conn)  # no args implies the default queue

    # Delay execution of count_words_at_url('http://nvie.com')
    job = q.enqueue(count_words_at_url, 'http://nvie.com')
    print('Job id: %s' % job.id)
    assert capsys.readouterr().out == f"Job id: {job.id}\n"


def test_jobs_1_custom_id(redis_conn):
    q = Queue(connection=redis_conn)
    job = q.enqueue(count_words_at_url, 'http://nvie.com', job_id='my_job_id')
    assert job.id == 'my_job_id'


def test_jobs_3_job_create(redis_conn):
    from plugq.job import Job  # was: from rq.job import Job

    job = Job.create(count_words_at_url,
                     ttl=30,  # This ttl will be used by RQ
                     args=('http://nvie.com',),
                     kwargs={
                         'description': 'Function description',  # passed on to the function
                         'ttl': 15  # This is passed on to count_words_at_url function
                     })
    Queue(connection=redis_conn).enqueue_job(job)
    assert job.ttl == 30 and job.get_status() == 'queued'


def test_jobs_4_fetch(redis_conn, capsys):
    SetupQueue(connection=redis_conn).enqueue(say_hello, job_id='my_job_id')  # setup
    from plugq.job import Job  # was: from rq.job import Job

    redis = redis_conn
    job = Job.fetch('my_job_id', connection=redis)
    print('Status: %s' % job.get_status())
    assert capsys.readouterr().out == "Status: queued\n"


def test_jobs_5_fetch_many(redis_conn, capsys):
    q = Queue(connection=redis_conn)
    q.enqueue(foo, job_id='foo_id')  # setup
    q.enqueue(bar, job_id='bar_id')
    from plugq.job import Job  # was: from rq.job import Job

    redis = redis_conn
    jobs = Job.fetch_many(['foo_id', 'bar_id'], connection=redis)
    for job in jobs:
        print('Job %s: %s' % (job.id, job.func_name))
    assert capsys.readouterr().out.splitlines() == [
        "Job foo_id: rqdocs_tasks.foo", "Job bar_id: rqdocs_tasks.bar"]


def test_jobs_6_executions(redis_conn, tmp_path, capsys):
    release = str(tmp_path / "release")
    with worker_running(redis_conn):
        running = Queue(connection=redis_conn).enqueue(rqdocs_tasks.blocking, release,
                                                       job_id='my_job_id')  # setup
        wait_for(lambda: running.get_status() == 'started')
        try:
            with unsupported(redis_conn, "commands"):
                from plugq.job import Job  # was: from rq.job import Job

                redis = redis_conn
                if 'commands' not in backend_of(redis).features:
                    raise NotSupportedError("executions on today's rq-driven backend")
                job = Job.fetch('my_job_id', connection=redis)
                executions = job.get_executions()  # Returns all current executions
                execution = job.get_executions()[0]  # Retrieves a single execution
                print(execution.created_at)  # When did this execution start?
                print(execution.last_heartbeat)  # Worker's last heartbeat
                assert len(executions) == 1 and execution.created_at == job.started_at
        finally:
            Path(release).touch()


def test_jobs_7_stop_job(redis_conn):
    with worker_running(redis_conn):
        job_id = Queue(connection=redis_conn).enqueue(rqdocs_tasks.sleep_for_10_seconds).id
        wait_for(lambda: Queue(connection=redis_conn).fetch_job(job_id).get_status() == 'started')
        with unsupported(redis_conn, "commands"):
            from plugq.command import send_stop_job_command  # was: from rq.command import …

            redis = redis_conn

            # This will raise an exception if job is invalid or not currently executing
            send_stop_job_command(redis, job_id)
            wait_for(lambda: Queue(connection=redis_conn).fetch_job(job_id).get_status()
                     == 'stopped', timeout=8)


def test_jobs_8_cancel(redis_conn, capsys):
    SetupQueue(connection=redis_conn).enqueue(say_hello, job_id='my_job_id')  # setup
    from plugq.job import Job  # was: from rq.job import Job
    from plugq.registry import CanceledJobRegistry  # was: from rq.registry import …

    redis = redis_conn
    job = Job.fetch('my_job_id', connection=redis)
    job.cancel()

    job.get_status()  # Job status is CANCELED

    registry = CanceledJobRegistry(job.origin, connection=job.connection)
    print(job in registry)  # Job is in CanceledJobRegistry
    assert capsys.readouterr().out == "True\n"


def test_jobs_9_cancel_job(redis_conn):
    Queue(connection=redis_conn).enqueue(say_hello,
                                         job_id='2eafc1e6-48c2-464b-a0ff-88fd199d039c')  # setup
    from plugq import cancel_job  # was: from rq import cancel_job

    cancel_job(
        '2eafc1e6-48c2-464b-a0ff-88fd199d039c',
        enqueue_dependents=True
    )
    assert Queue(connection=redis_conn).canceled_job_registry.get_job_ids() == [
        '2eafc1e6-48c2-464b-a0ff-88fd199d039c']


def test_jobs_10_json_serializer(redis_conn):
    from plugq import Queue  # was: from rq import Queue
    from plugq.serializers import JSONSerializer  # was: from rq.serializers import …

    connection = redis_conn
    queue = Queue(connection=connection, serializer='json')  # or: serializer=JSONSerializer
    job = queue.enqueue('my_module.count_words', 'https://example.com')
    other = Queue(connection=connection, serializer=JSONSerializer)
    assert job.serializer == other.serializer.name == 'json'


def test_jobs_11_get_current_job(redis_conn, capsys):
    # rqdocs_tasks.current_job_add is the page's `add`, verbatim.
    job = Queue(connection=redis_conn).enqueue(rqdocs_tasks.current_job_add, 1, 2)
    drain(redis_conn)
    assert job.result == 3


def test_jobs_12_meta(redis_conn):
    # rqdocs_tasks.meta_add is the page's second `add`, verbatim.
    job = Queue(connection=redis_conn).enqueue(rqdocs_tasks.meta_add, 1, 2)
    drain(redis_conn)
    assert job.result == 3 and 'handled_by' in job.get_meta()


def test_jobs_13_ttls(redis_conn):
    from plugq.job import Job  # was: from rq.job import Job

    q = Queue(connection=redis_conn)
    # When creating the job:
    job = Job.create(func=say_hello,
                     result_ttl=600,  # how long (in seconds) to keep the job (if successful)
                     ttl=43,  # maximum queued time (in seconds) of the job before it's discarded.
                     )

    # or when queueing a new job:
    job = q.enqueue(count_words_at_url,
                    'http://nvie.com',
                    result_ttl=600,  # how long to keep the job (if successful) and its results
                    ttl=43  # maximum queued time
                    )
    assert job.result_ttl == 600 and job.ttl == 43


def test_jobs_14_position(redis_conn):
    from plugq import Queue  # was: from rq import Queue

    q = Queue(connection=redis_conn)

    job = q.enqueue(say_hello)
    job2 = q.enqueue(say_hello)

    assert job2.get_position() == 1
    # returns 1

    assert q.get_job_position(job) == 0
    # return 0


def test_jobs_15_failed_registry(redis_conn):
    from plugq import Queue, Worker  # was: from rq import Queue; Worker

    connection = redis_conn
    queue = Queue(connection=connection)
    job = queue.enqueue(div_by_zero, 1)
    registry = queue.failed_job_registry

    worker = Worker([queue])
    worker.work(burst=True)

    assert len(registry) == 1  # Failed jobs are kept in FailedJobRegistry
    assert job.is_failed


def test_jobs_16_failure_ttl(redis_conn):
    queue = Queue(connection=redis_conn)
    foo_job = foo
    job = queue.enqueue(foo_job, failure_ttl=300)  # 5 minutes in seconds
    assert job.failure_ttl == 300


def test_jobs_17_requeue_failed(redis_conn):
    SetupQueue(connection=redis_conn).enqueue(div_by_zero, 1)  # setup: one failed job
    drain(redis_conn)
    from plugq import Queue  # was: from rq import Queue

    connection = redis_conn
    queue = Queue(connection=connection)
    registry = queue.failed_job_registry

    # This is how to get jobs from FailedJobRegistry
    for job_id in registry.get_job_ids():
        registry.requeue(job_id)  # Puts job back in its original queue

    assert len(registry) == 0  # Registry will be empty when job is requeued
    assert len(queue) == 1


# -- results.md -------------------------------------------------------------------


def test_results_0_latest_result(redis_conn, capsys):
    SetupQueue(connection=redis_conn).enqueue(say_hello, job_id='my_id')  # setup: a finished job
    drain(redis_conn)
    from plugq.job import Job  # was: from rq.job import Job

    redis = redis_conn
    job = Job.fetch(id='my_id', connection=redis)
    result = job.latest_result()  # returns Result(id=uid, type=SUCCESSFUL)
    if result.type == result.Type.SUCCESSFUL:
        print(result.return_value)
    elif result.type == result.Type.FAILED:
        print(result.exc_string)
    assert capsys.readouterr().out == "Hello\n"


def test_results_1_return_value(redis_conn, capsys):
    SetupQueue(connection=redis_conn).enqueue(say_hello, job_id='my_id')  # setup
    drain(redis_conn)
    from plugq.job import Job  # was: from rq.job import Job

    redis = redis_conn
    job = Job.fetch(id='my_id', connection=redis)
    print(job.return_value())  # Shortcut for job.latest_result().return_value
    assert capsys.readouterr().out == "Hello\n"


def test_results_2_results_history(redis_conn, capsys):
    SetupQueue(connection=redis_conn).enqueue(say_hello, job_id='my_id')  # setup
    drain(redis_conn)
    from plugq.job import Job  # was: from rq.job import Job

    redis = redis_conn
    with unsupported(redis_conn, "results"):
        job = Job.fetch(id='my_id', connection=redis)
        for result in job.results():
            print(result.created_at, result.type)
        assert capsys.readouterr().out.strip().endswith("Type.SUCCESSFUL")


def test_results_3_latest_result_timeout(redis_conn):
    queue = Queue(connection=redis_conn)
    with worker_running(redis_conn):
        job = queue.enqueue(sleep_for_10_seconds)
        started = time.monotonic()
        result = job.latest_result(timeout=60)  # Will hang for about 10 seconds.
    assert result.return_value == 10 and 9 < time.monotonic() - started < 60


def test_results_4_retry_returned(redis_conn):
    from plugq import Retry  # was: from rq import Retry  (the task is in rqdocs_tasks)

    queue = Queue(connection=redis_conn)
    job = queue.enqueue(rqdocs_tasks.count_words_at_url_retrying, 'http://127.0.0.1:9/',
                        max=3, interval=60)
    assert isinstance(rqdocs_tasks.count_words_at_url_retrying('http://127.0.0.1:9/'), Retry)
    with unsupported(redis_conn, "retry_result"):
        if "retry_result" not in backend_of(redis_conn).features:
            raise NotSupportedError("a Retry returned by a job on today's rq-driven backend")
        drain(redis_conn)
        assert job.get_status() == 'scheduled'  # retried in 60 s


def test_results_5_job_timeout(redis_conn):
    foo, qux = 'foo', 'qux'
    q = Queue(connection=redis_conn)
    job = q.enqueue(mytask, args=(foo,), kwargs={'bar': qux}, job_timeout=600)  # 10 mins
    assert job.timeout == 600


def test_results_6_default_timeout(redis_conn):
    # High prio jobs should end in 8 secs, while low prio
    # work may take up to 10 mins
    high = Queue('high', connection=redis_conn, default_timeout=8)  # 8 secs
    low = Queue('low', connection=redis_conn, default_timeout=600)  # 10 mins

    # Individual jobs can still override these defaults
    job = low.enqueue(really_really_slow, job_timeout=3600)  # 1 hr
    assert job.timeout == 3600 and high.enqueue(foo).timeout == 8


# -- exceptions.md ----------------------------------------------------------------


def test_exceptions_0_failed_registry(redis_conn, capsys):
    SetupQueue(connection=redis_conn).enqueue(div_by_zero)  # setup: one failed job
    drain(redis_conn)
    from plugq import Queue  # was: from rq import Queue
    from plugq.job import Job  # was: from rq.job import Job
    from plugq.registry import FailedJobRegistry  # was: from rq.registry import …

    redis = redis_conn
    queue = Queue(connection=redis)
    registry = FailedJobRegistry(queue=queue)

    # Show all failed job IDs and the exceptions they caused during runtime
    for job_id in registry.get_job_ids():
        job = Job.fetch(job_id, connection=redis)
        print(job_id, job.exc_info)
    assert "ZeroDivisionError" in capsys.readouterr().out


def test_exceptions_1_retry(redis_conn):
    from plugq import Queue, Retry  # was: from rq import Retry, Queue

    redis = redis_conn
    queue = Queue(connection=redis)
    # Retry up to 3 times, failed job will be requeued immediately
    queue.enqueue(my_func, retry=Retry(max=3))

    # Retry up to 3 times, with 60 seconds interval in between executions
    queue.enqueue(my_func, retry=Retry(max=3, interval=60))

    # Retry up to 3 times, with longer interval in between retries
    queue.enqueue(my_func, retry=Retry(max=3, interval=[10, 30, 60]))
    assert len(queue) == 3


def test_exceptions_2_exception_handlers(redis_conn, tmp_path):
    q = Queue(connection=redis_conn)
    with unsupported(redis_conn, "exception_handlers"):
        from rqdocs_tasks import bar_handler, foo_handler  # was: from exception_handlers import …

        w = Worker([q], exception_handlers=[foo_handler, bar_handler])
        path = tmp_path / "handled"
        q.enqueue(div_by_zero, meta={"path": str(path)})
        w.work(burst=True)
        assert path.read_text().split() == ["foo", "bar"]


def test_exceptions_5_disable_default_handler(redis_conn, tmp_path):
    q = Queue(connection=redis_conn)
    with unsupported(redis_conn, "exception_handlers", "disable_default_exception_handler"):
        from rqdocs_tasks import foo_handler  # was: from exception_handlers import foo_handler

        w = Worker([q], exception_handlers=[foo_handler],
                   disable_default_exception_handler=True)
        job = q.enqueue(div_by_zero, meta={"path": str(tmp_path / "h")})
        w.work(burst=True)
        assert job.get_status() == 'failed' and job not in q.failed_job_registry


def test_exceptions_6_black_hole(redis_conn, tmp_path):
    from rqdocs_tasks import bar_handler, black_hole  # exceptions #6 is black_hole, verbatim

    q = Queue(connection=redis_conn)
    with unsupported(redis_conn, "exception_handlers"):
        w = Worker([q], exception_handlers=[black_hole, bar_handler])
        q.enqueue(div_by_zero, meta={"path": str(tmp_path / "h")})
        w.work(burst=True)
        assert not (tmp_path / "h").exists()  # black_hole returned False: the chain stopped


def test_exceptions_7_work_horse_killed_handler(redis_conn):
    q = Queue(connection=redis_conn)
    with unsupported(redis_conn, "work_horse_killed_handler"):
        from rqdocs_tasks import my_work_horse_killed_handler  # was: from my_handlers import …

        w = Worker([q], work_horse_killed_handler=my_work_horse_killed_handler)
        assert w.options["work_horse_killed_handler"] is my_work_horse_killed_handler


# -- scheduling.md ----------------------------------------------------------------


def test_scheduling_0_enqueue_at(redis_conn):
    from plugq import Queue  # was: from rq import Queue

    queue = Queue(name='default', connection=redis_conn)

    # Schedules job to be run at 9:15, October 10th in the local timezone
    job = queue.enqueue_at(datetime(2019, 10, 8, 9, 15), say_hello)
    drain(redis_conn)  # long past: the worker's scheduler enqueues it at once
    assert job.result == 'Hello'


def test_scheduling_1_enqueue_in(redis_conn):
    from plugq import Queue  # was: from rq import Queue

    queue = Queue(name='default', connection=redis_conn)

    # Schedules job to be run in 10 seconds
    job = queue.enqueue_in(timedelta(seconds=10), say_hello)
    assert job.get_status() == 'scheduled'


def test_scheduling_2_in_queue_and_registry(redis_conn, capsys):
    from plugq import Queue  # was: from rq import Queue
    from plugq.registry import ScheduledJobRegistry  # was: from rq.registry import …

    queue = Queue(name='default', connection=redis_conn)
    job = queue.enqueue_in(timedelta(seconds=10), say_nothing)
    print(job in queue)  # Outputs False as job is not enqueued

    registry = ScheduledJobRegistry(queue=queue)
    print(job in registry)  # Outputs True as job is placed in ScheduledJobRegistry
    assert capsys.readouterr().out.split() == ["False", "True"]


def test_scheduling_3_repeat(redis_conn):
    with unsupported(redis_conn, "repeat"):
        from plugq import Queue, Repeat  # was: from rq import Queue, Repeat

        queue = Queue(connection=redis_conn)

        # Repeat a job 3 times with the same interval of 30 seconds
        job = queue.enqueue(my_function, repeat=Repeat(times=3, interval=30))

        # Or use different intervals between repetitions
        job = queue.enqueue(my_function, repeat=Repeat(times=3, interval=[5, 10, 15]))
        assert job.repeats_left == 3


def test_scheduling_4_repeat_no_delay(redis_conn):
    from plugq import Repeat

    queue = Queue(connection=redis_conn)
    with unsupported(redis_conn, "repeat"):
        # This job will repeat 3 times with no delay between executions
        job = queue.enqueue(my_function, repeat=Repeat(times=3, interval=0))
        drain(redis_conn)
        assert job.get_status() == 'finished' and job.repeats_left == 0


def test_scheduling_5_repeat_intervals(redis_conn):
    from plugq import Repeat

    queue = Queue(connection=redis_conn)
    with unsupported(redis_conn, "repeat"):
        # This job will repeat 5 times with these intervals:
        # 1st repetition: after 5 seconds
        # 2nd repetition: after 10 seconds
        # 3rd repetition: after 15 seconds
        # 4th repetition: after 15 seconds
        # 5th repetition: after 15 seconds
        job = queue.enqueue(my_function, repeat=Repeat(times=5, interval=[5, 10, 15]))
        drain(redis_conn)
        assert job.get_status() == 'scheduled'
        assert 4 < (job.scheduled_for - job.ended_at).total_seconds() < 6


def test_scheduling_6_repeats_left(redis_conn, capsys):
    from plugq import Repeat

    queue = Queue(connection=redis_conn)
    with unsupported(redis_conn, "repeat"):
        job = queue.enqueue(my_function, repeat=Repeat(times=3, interval=30))

        # Check how many repeats are remaining
        # job.repeats_left will decrement with each repetition
        print(job.repeats_left)  # 3

        # Check the intervals
        print(job.repeat_intervals)  # [30]
        assert capsys.readouterr().out.split("\n")[:2] == ["3", "[30]"]


def test_scheduling_7_worker_with_scheduler(redis_conn):
    queue_ = SetupQueue(connection=redis_conn)
    with unsupported(redis_conn, "commands"):
        # The example runs until its worker is told to stop (rq: a signal; here: a command).
        from plugq import Queue, Worker  # was: from rq import Worker, Queue
        from plugq.command import send_shutdown_command

        redis = redis_conn
        queue = Queue(connection=redis)

        worker = Worker(queues=[queue], connection=redis)
        if "commands" not in worker.backend.features:
            raise NotSupportedError("no worker commands on today's rq-driven backend")
        job = queue_.enqueue_in(timedelta(seconds=0.2), say_hello)
        t = threading.Thread(target=worker.work, kwargs={"with_scheduler": True})
        t.start()
        wait_for(lambda: job.get_status() == 'finished')
        send_shutdown_command(redis, worker.name)
        t.join(15)
        assert not t.is_alive()


# -- job_registries.md -------------------------------------------------------------


def test_job_registries_0_started_registry(redis_conn, tmp_path, capsys):
    release = str(tmp_path / "release")
    with worker_running(redis_conn):
        from plugq import Queue  # was: from rq import Queue
        from plugq.registry import StartedJobRegistry  # was: from rq.registry import …

        redis = redis_conn
        queue = Queue(connection=redis)
        job = queue.enqueue(rqdocs_tasks.blocking, release)  # count_words_at_url ends too soon

        # get StartedJobRegistry by queue
        registry = StartedJobRegistry(queue=queue)

        # or get StartedJobRegistry by queue name and connection
        registry2 = StartedJobRegistry(name='my_queue', connection=redis)

        # sleep for a moment while job is taken off the queue
        time.sleep(0.1)
        wait_for(lambda: job.get_status() == 'started')  # a loaded machine may need longer

        print('Queue associated with the registry: %s' % registry.get_queue())
        print('Number of jobs in registry %s' % registry.count)

        # get the list of ids for the jobs in the registry
        print('IDs in registry %s' % registry.get_job_ids())

        # test if a job is in the registry using the job instance or job id
        print('Job in registry %s' % (job in registry))
        print('Job in registry %s' % (job.id in registry))
        Path(release).touch()
    assert capsys.readouterr().out.splitlines() == [
        "Queue associated with the registry: Queue('default')",
        "Number of jobs in registry 1",
        f"IDs in registry ['{job.id}']",
        "Job in registry True",
        "Job in registry True",
    ] and registry2.count == 0


def test_job_registries_1_queue_registries(redis_conn):
    from plugq import Queue  # was: from rq import Queue
    from plugq.registry import (
        DeferredJobRegistry,
        FailedJobRegistry,
        FinishedJobRegistry,
        ScheduledJobRegistry,
        StartedJobRegistry,
    )

    redis = redis_conn
    queue = Queue(connection=redis)

    assert isinstance(queue.started_job_registry, StartedJobRegistry)
    assert isinstance(queue.deferred_job_registry, DeferredJobRegistry)
    assert isinstance(queue.finished_job_registry, FinishedJobRegistry)
    assert isinstance(queue.failed_job_registry, FailedJobRegistry)
    assert isinstance(queue.scheduled_job_registry, ScheduledJobRegistry)


def test_job_registries_2_remove(redis_conn):
    for _ in range(2):  # setup: two failed jobs
        SetupQueue(connection=redis_conn).enqueue(div_by_zero)
    drain(redis_conn)
    from plugq import Queue  # was: from rq import Queue
    from plugq.registry import FailedJobRegistry  # was: from rq.registry import …

    redis = redis_conn
    queue = Queue(connection=redis)
    registry = FailedJobRegistry(queue=queue)
    first, second = registry.get_job_ids()

    # This is how to remove a job from a registry
    for job_id in registry.get_job_ids()[:1]:  # one of the two, so the next loop has work
        registry.remove(job_id)

    # If you want to remove a job from a registry AND delete the job,
    # use `delete_job=True`
    for job_id in registry.get_job_ids():
        registry.remove(job_id, delete_job=True)
    assert len(registry) == 0
    assert queue.fetch_job(first) is not None or Worker  # kept (it only left the registry)
    assert not __import__("plugq").Job.exists(second, connection=redis)


# -- workers.md --------------------------------------------------------------------


def test_workers_1_named_worker(redis_conn):
    from plugq import Queue, Worker  # was: from rq import Queue, Worker

    redis = redis_conn
    queue = Queue('queue_name')

    # Start a worker with a custom name
    worker = Worker([queue], connection=redis, name='foo')
    assert worker.name == 'foo'


def test_workers_2_worker_all(redis_conn, capsys):
    with worker_running(redis_conn, 'queue_name'):
        from plugq import Queue, Worker  # was: from rq import Queue, Worker

        # Returns all workers registered in this connection
        redis = redis_conn
        workers = Worker.all(connection=redis)

        # Returns all workers in this queue (new in version 0.10.0)
        queue = Queue('queue_name')
        workers = Worker.all(queue=queue)
        worker = workers[0]
        print(worker.name)

        # The page's last three lines add a str and an int: a TypeError on rq too.
        with pytest.raises(TypeError):
            print('Successful jobs: ' + worker.successful_job_count)
        with pytest.raises(TypeError):
            print('Failed jobs: ' + worker.failed_job_count)
        with pytest.raises(TypeError):
            print('Total working time: ' + worker.total_working_time)  # In seconds
    assert capsys.readouterr().out.startswith("docs-")


def test_workers_3_worker_count(redis_conn):
    with worker_running(redis_conn, 'queue_name'):
        from plugq import Worker  # was: from rq import Worker

        redis = redis_conn

        # Count the number of workers in this Redis connection
        workers = Worker.count(connection=redis)

        # Count the number of workers for a specific queue
        queue = Queue('queue_name', connection=redis)
        workers = Worker.count(queue=queue)
        assert workers == 1


def test_workers_4_worker_serializer(redis_conn):
    from plugq import Worker  # was: from rq import Worker
    from plugq.serializers import JSONSerializer  # was: from rq.serializers import …

    worker = Worker('foo', serializer='json')  # or: serializer=JSONSerializer
    assert Worker('foo', serializer=JSONSerializer).queue_names() == worker.queue_names()


def test_workers_5_queue_and_worker_serializer(redis_conn):
    from plugq import Queue, Worker  # was: from rq import Queue, Worker
    from plugq.serializers import JSONSerializer  # was: from rq.serializers import …

    queue = Queue('foo', serializer='json')        # or: serializer=JSONSerializer
    worker = Worker([queue], serializer='json')    # or: serializer=JSONSerializer
    job = queue.enqueue(rqdocs_tasks.fib, 10)
    worker.work(burst=True)
    assert job.result == 55 and Queue('foo', serializer=JSONSerializer).serializer.name == 'json'


def test_workers_7_simple_worker(redis_conn):
    with unsupported(redis_conn, "commands"):
        from plugq import Queue, SimpleWorker  # was: from rq import SimpleWorker, Queue
        from plugq.command import send_shutdown_command

        queue = Queue('default')
        worker = SimpleWorker([queue])
        if "commands" not in worker.backend.features:
            raise NotSupportedError("no worker commands on today's rq-driven backend")
        job = queue.enqueue(say_hello)
        t = threading.Thread(target=worker.work)  # runs until told to stop
        t.start()
        wait_for(lambda: job.get_status() == 'finished')
        send_shutdown_command(queue.connection, worker.name)
        t.join(15)
        assert not t.is_alive()


def test_workers_10_spawn_worker(redis_conn, request):
    from plugq import Queue, SpawnWorker  # was: from rq import SpawnWorker, Queue

    queue = Queue('default')
    worker = SpawnWorker([queue])
    # A spawned horse imports the task afresh: one importable outside tests/.
    job = queue.enqueue("plugq.testing.tasks.add", 1, 2)
    if request.node.callspec.id.startswith("memory"):
        # memory:// lives in one process: a spawned child could not see it, so a
        # spawn worker is refused, never silently made a simple one.
        with pytest.raises(NotSupportedError, match="spawn"):
            worker.work(burst=True)
        return
    # A child process per job, as rq's SpawnWorker; rq stops it with a signal, so here it is burst.
    worker.work(burst=True)
    assert job.result == 3


def test_workers_12_shutdown_command(redis_conn):
    with worker_running(redis_conn) as w, unsupported(redis_conn, "commands"):
        from plugq import Worker  # was: from rq.worker import Worker
        from plugq.command import send_shutdown_command  # was: from rq.command import …

        redis = redis_conn

        workers = Worker.all(redis)
        for worker in workers:
            send_shutdown_command(redis, worker.name)  # Tells worker to shutdown
        wait_for(lambda: Worker.count(connection=redis) == 0)
        assert w.stop_requested or Worker.count(connection=redis) == 0


def test_workers_13_kill_horse_command(redis_conn, tmp_path):
    release = str(tmp_path / "release")
    with worker_running(redis_conn):
        job = SetupQueue(connection=redis_conn).enqueue(rqdocs_tasks.blocking, release)  # setup
        wait_for(lambda: job.get_status() == 'started')
        try:
            with unsupported(redis_conn, "commands"):
                from plugq import Worker, WorkerStatus  # was: from rq.worker import …
                from plugq.command import send_kill_horse_command  # was: from rq.command import …

                redis = redis_conn

                wait_for(lambda: any(w.state == WorkerStatus.BUSY for w in Worker.all(redis)))
                workers = Worker.all(redis)
                for worker in workers:
                    if worker.state == WorkerStatus.BUSY:
                        send_kill_horse_command(redis, worker.name)
                wait_for(lambda: job.get_status() == 'failed')
        finally:
            Path(release).touch()


def test_workers_14_stop_job_command(redis_conn):
    with worker_running(redis_conn):
        job_id = SetupQueue(connection=redis_conn).enqueue(sleep_for_10_seconds).id  # setup
        wait_for(lambda: Queue(connection=redis_conn).fetch_job(job_id).get_status() == 'started')
        with unsupported(redis_conn, "commands"):
            from plugq.command import send_stop_job_command  # was: from rq.command import …

            redis = redis_conn

            # This will raise an exception if job is invalid or not currently executing
            send_stop_job_command(redis, job_id)
            wait_for(lambda: Queue(connection=redis).fetch_job(job_id).is_stopped, timeout=8)


# -- testing.md --------------------------------------------------------------------


def test_testing_0_simple_worker_burst(redis_conn):
    from plugq import Queue, SimpleWorker  # was: from rq import SimpleWorker, Queue

    queue = Queue(connection=redis_conn)
    job = queue.enqueue(my_long_running_job)
    worker = SimpleWorker([queue], connection=queue.connection)
    worker.work(burst=True)  # Runs enqueued job
    # Check for result...
    assert job.result == 'long'


def test_testing_2_sync_queue(redis_conn):
    from plugq import Queue  # was: from rq import Queue

    queue = Queue(is_async=False, connection=redis_conn)  # was: connection=FakeStrictRedis()
    job = queue.enqueue(my_long_running_job)
    assert job.is_finished


# -- connections.md ----------------------------------------------------------------


def test_connections_0_explicit_connection(redis_conn):
    from plugq import Queue  # was: from rq import Queue

    redis = redis_conn  # was: Redis('localhost', 6789)
    q = Queue(connection=redis)
    assert q.connection is backend_of(redis_conn)


def test_connections_5_socket_timeout(redis_conn, request):
    from plugq import Queue  # was: from rq import Queue

    if "redis" in request.node.callspec.id:
        from redis import Redis

        kwargs = redis_conn.connection_pool.connection_kwargs
        conn = Redis(kwargs["host"], kwargs["port"], socket_timeout=500)
    else:
        conn = redis_conn
    q = Queue(connection=conn)
    assert q.enqueue(say_hello).get_status() == 'queued'


PAGES = ("index", "jobs", "results", "exceptions", "scheduling", "job_registries", "workers",
         "testing", "connections")
#: How many ```python blocks each page has (rq's docs at the time of writing).
BLOCKS = {"index": 26, "jobs": 18, "results": 7, "exceptions": 9, "scheduling": 9,
          "job_registries": 3, "workers": 15, "testing": 3, "connections": 7}


def test_every_example_is_run_or_left_out_with_a_reason():
    import sys

    ran: set[str] = set()
    for name in dir(sys.modules[__name__]):
        for page in sorted(PAGES, key=len, reverse=True):
            if name.startswith(f"test_{page}_"):
                for token in name[len(f"test_{page}_"):].split("_"):
                    if not token.isdigit():
                        break
                    ran.add(f"{page} #{token}")
                break
    every = {f"{page} #{i}" for page, n in BLOCKS.items() for i in range(n)}
    assert ran.isdisjoint(LEFT_OUT)
    assert ran | set(LEFT_OUT) == every
    assert len(ran) == EXAMPLES_RUN
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert f"{EXAMPLES_RUN} of the {len(every)} Python examples" in readme
