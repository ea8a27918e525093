"""Bad input gets a clear error at the point of the mistake, and the queue is unchanged."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from plugq import (
    ConfigurationError,
    InvalidTaskError,
    Queue,
    Retry,
    SerializationError,
    UnknownBackendError,
    Worker,
    connect,
)
from plugq.storage import JobRecord, JobStatus
from plugq.testing import tasks
from plugq_memory import MemoryStorage


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def q(request):
    if request.param == "postgres":
        from plugq_postgres import PostgresStorage

        storage = PostgresStorage(request.getfixturevalue("postgres_url"))
        yield Queue("bad", connection=storage)
        storage.close()
        return
    yield Queue("bad", connection=MemoryStorage(f"memory://bad-{uuid.uuid4().hex}"))


def test_main_module_function_refused(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        "from plugq import Queue\n"
        "def f():\n    return 1\n"
        "q = Queue(connection='memory://main')\n"
        "try:\n    q.enqueue(f)\n"
        "except Exception as e:\n    print(type(e).__name__, e)\n"
        "print('queued', len(q))\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True).stdout
    assert "InvalidTaskError" in out and "__main__" in out and "move the function into a module" in out
    assert "queued 0" in out


def test_bound_method_refused(q):
    with pytest.raises(InvalidTaskError, match="bound method"):
        q.enqueue(Worker.queue_names.__get__(object()))
    assert len(q) == 0


def test_not_a_dotted_path(q):
    with pytest.raises(InvalidTaskError, match="dotted path"):
        q.enqueue("print")
    assert len(q) == 0


def test_unserializable_argument_names_the_value(q):
    with pytest.raises(SerializationError, match="generator"):
        q.enqueue(tasks.echo, (i for i in range(3)))
    assert len(q) == 0


@pytest.mark.parametrize("timeout", [0, -5, "soon", 0.0])
def test_bad_timeout(q, timeout):
    with pytest.raises(ValueError, match="job_timeout"):
        q.enqueue(tasks.add, 1, 2, job_timeout=timeout)
    assert len(q) == 0


@pytest.mark.parametrize("kw", [{"result_ttl": -2}, {"failure_ttl": "x"}, {"ttl": -3}])
def test_bad_ttls(q, kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        q.enqueue(tasks.add, 1, 2, **kw)
    assert len(q) == 0


@pytest.mark.parametrize("kwargs", [{"max": 0}, {"max": 2, "interval": -1}, {"max": "3"}])
def test_bad_retry(kwargs):
    with pytest.raises(ValueError, match="Retry"):
        Retry(**kwargs)


@pytest.mark.parametrize("job_id", ["a b", "x:y", "../etc", "a\nb", "z" * 300])
def test_forbidden_job_id(q, job_id):
    with pytest.raises(ValueError, match="job_id"):
        q.enqueue(tasks.add, 1, 2, job_id=job_id)
    assert len(q) == 0


def test_bad_queue_name():
    with pytest.raises(ValueError, match="queue name"):
        Queue("has space", connection="memory://x")


def test_unknown_scheme_lists_installed_ones():
    with pytest.raises(UnknownBackendError, match=r"installed schemes: .*memory://"):
        connect("mongodb://db/jobs")


@pytest.mark.parametrize("url", ["localhost:6379", "jobs.db", "://nothing"])
def test_malformed_url(url):
    with pytest.raises(ConfigurationError, match="scheme"):
        connect(url)


def test_password_never_in_errors():
    with pytest.raises(UnknownBackendError) as err:
        connect("nosuch://user:hunter2@host/0")
    assert "hunter2" not in str(err.value)
    assert "user:***@host" in str(err.value)


def test_missing_module_fails_job_and_worker_carries_on(q):
    gone = q.enqueue("plugq.testing.no_such_module.f", 1)
    renamed = q.enqueue("plugq.testing.tasks.renamed_away", 1)
    ok = q.enqueue(tasks.add, 1, 1)
    Worker([q]).work(burst=True)
    assert gone.get_status() == "failed" and "no_such_module" in gone.exc_info
    assert renamed.get_status() == "failed"
    assert "has no attribute 'renamed_away'" in renamed.exc_info
    assert ok.get_status() == "finished"


def test_undeserializable_payload_fails_job_and_worker_carries_on(q):
    backend = q.backend
    backend.storage.insert([JobRecord(id="garbled", func_name="plugq.testing.tasks.add", origin="bad",
                              payload=b"\x80\x05not a pickle", status=JobStatus.QUEUED)])
    ok = q.enqueue(tasks.add, 1, 1)
    Worker([q]).work(burst=True)
    rec = backend.fetch_job("garbled")
    assert rec.status is JobStatus.FAILED
    assert "UnpicklingError" in rec.exc_info or "pickle" in rec.exc_info.lower()
    assert ok.get_status() == "finished"


# -- PostgreSQL URLs: refused before any connection is tried --------------------------


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("leese=5", ["unknown parameter 'leese'", "lease", "schema", "pool_size", "sslmode"]),
        ("lease=soon", ["lease", "'soon'", "seconds"]),
        ("lease=0", ["lease", "'0'"]),
        ("schema=Jobs;drop", ["schema", "'Jobs;drop'", "identifier"]),
        ("schema=", ["schema", "''"]),
        ("pool_size=0", ["pool_size", "'0'", "integer"]),
        ("reconnect_timeout=-1", ["reconnect_timeout", "'-1'"]),
        ("lease=1&lease=2", ["lease", "more than once"]),
    ],
)
def test_bad_postgres_url_parameter_is_one_clear_line(query, words):
    with pytest.raises(ConfigurationError) as err:
        connect(f"postgresql://app:hunter2@127.0.0.1:1/jobs?{query}")
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message
    assert "hunter2" not in message and "app:***@127.0.0.1:1" in message


def test_unreachable_postgres_names_the_server_without_the_password():
    from plugq import BackendUnavailableError

    with pytest.raises(BackendUnavailableError) as err:
        connect("postgres://app:hunter2@127.0.0.1:1/jobs?connect_timeout=2")
    message = str(err.value)
    assert "hunter2" not in message and "app:***@127.0.0.1:1" in message
    assert "cannot connect" in message and "\n" not in message
