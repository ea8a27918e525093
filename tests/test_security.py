"""Untrusted payloads are failed without executing anything.

Each attack leaves a file behind if it runs; every test asserts the file is
absent, the job failed, and the reason is stated.
"""

from __future__ import annotations

import os
import pickle
import uuid
from pathlib import Path

import pytest

from plugq import JobStatus, Queue, Worker
from plugq.config import clear_settings_cache
from plugq.security import seal
from plugq.storage import JobRecord
from plugq.testing import tasks
from plugq_memory import MemoryStorage


class Evil:
    """A pickle that runs a shell command when it is read."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(autouse=True)
def clean_settings(monkeypatch):
    for name in ("PLUGQ_SECRET_KEY", "PLUGQ_ALLOWED_MODULES", "PLUGQ_URL"):
        monkeypatch.delenv(name, raising=False)
    clear_settings_cache()
    yield
    clear_settings_cache()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request, tmp_path):
    if request.param == "memory":
        yield MemoryStorage(f"memory://security-{uuid.uuid4().hex}")
        return
    if request.param == "postgres":
        from plugq_postgres import PostgresStorage

        storage = PostgresStorage(request.getfixturevalue("postgres_url"))
        yield storage
        storage.close()
        return
    from plugq_sqlite import SqliteStorage

    yield SqliteStorage(f"sqlite:///{tmp_path / 'security.db'}")


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "pwned"


def plant(backend, queue: str, func_name: str, payload: bytes, serializer: str = "pickle") -> str:
    """Write a job straight into the store, as an attacker with write access would."""
    job_id = str(uuid.uuid4())
    backend.insert([JobRecord(id=job_id, func_name=func_name, origin=queue, payload=payload,
                              serializer=serializer, status=JobStatus.QUEUED, enqueued_at=1.0)])
    return job_id


def run(backend, queue: str) -> None:
    Worker([Queue(queue, connection=backend)], connection=backend).work(burst=True)


def test_signed_job_runs_with_key(backend, monkeypatch):
    monkeypatch.setenv("PLUGQ_SECRET_KEY", "s3cret")
    q = Queue("signed", connection=backend)
    job = q.enqueue(tasks.add, 2, 3)
    assert job.args == (2, 3)
    run(backend, "signed")
    assert job.get_status() == "finished" and job.result == 5


def test_tampered_job_refused(backend, monkeypatch, marker):
    monkeypatch.setenv("PLUGQ_SECRET_KEY", "s3cret")
    q = Queue("tamper", connection=backend)
    job = q.enqueue(tasks.append_line, str(marker) + ".unused", "x")
    rec = backend.get(job.id)
    # The attacker swaps the function for one with a visible side effect.
    rec.func_name = "plugq.testing.tasks.append_line"
    rec.payload = rec.payload[:36] + pickle.dumps(((str(marker), "pwned"), {}))
    backend.insert([rec])
    run(backend, "tamper")
    assert job.get_status() == "failed"
    assert "bad signature" in job.exc_info
    assert not marker.exists()


def test_unsigned_job_refused_when_worker_has_key(backend, monkeypatch, marker):
    q = Queue("unsigned", connection=backend)
    job = q.enqueue(tasks.append_line, str(marker), "x")  # no key at enqueue
    monkeypatch.setenv("PLUGQ_SECRET_KEY", "s3cret")
    run(backend, "unsigned")
    assert job.get_status() == "failed"
    assert "not signed" in job.exc_info
    assert not marker.exists()


def test_job_signed_with_other_key_refused(backend, monkeypatch, marker):
    rec = JobRecord(id=str(uuid.uuid4()), func_name="plugq.testing.tasks.append_line",
                    origin="otherkey", payload=b"", enqueued_at=1.0)
    rec.payload = seal(rec, pickle.dumps(((str(marker), "x"), {})), key=b"other-key")
    backend.insert([rec])
    job_id = rec.id
    monkeypatch.setenv("PLUGQ_SECRET_KEY", "s3cret")
    run(backend, "otherkey")
    rec = backend.get(job_id)
    assert rec.status is JobStatus.FAILED and "bad signature" in rec.exc_info
    assert not marker.exists()


def test_malicious_pickle_refused_with_key(backend, monkeypatch, marker):
    monkeypatch.setenv("PLUGQ_SECRET_KEY", "s3cret")
    job_id = plant(backend, "evil", "plugq.testing.tasks.add", pickle.dumps(Evil(str(marker))))
    run(backend, "evil")
    rec = backend.get(job_id)
    assert rec.status is JobStatus.FAILED and "not signed" in rec.exc_info
    assert not marker.exists()


def test_malicious_pickle_refused_by_json_worker(backend, tmp_path, monkeypatch, marker):
    (tmp_path / "pyproject.toml").write_text('[tool.plugq]\nserializer = "json"\n')
    monkeypatch.chdir(tmp_path)
    clear_settings_cache()
    job_id = plant(backend, "evil", "plugq.testing.tasks.add", pickle.dumps(Evil(str(marker))))
    ok = Queue("evil", connection=backend).enqueue(tasks.add, 1, 2)
    assert ok.serializer == "json"
    run(backend, "evil")
    rec = backend.get(job_id)
    assert rec.status is JobStatus.FAILED
    assert "serializer = 'json'" in rec.exc_info
    assert not marker.exists()
    assert ok.get_status() == "finished" and ok.result == 3


def test_allow_list_refuses_os_system(backend, monkeypatch, marker):
    monkeypatch.setenv("PLUGQ_ALLOWED_MODULES", "plugq.testing.tasks")
    clear_settings_cache()
    q = Queue("allow", connection=backend)
    bad = q.enqueue("os.system", f"touch {marker}")
    bad2 = q.enqueue("subprocess.run", ["touch", str(marker)])
    good = q.enqueue(tasks.add, 1, 1)
    run(backend, "allow")
    for job in (bad, bad2):
        assert job.get_status() == "failed"
        assert "outside allowed_modules" in job.exc_info
    assert not marker.exists()
    assert good.get_status() == "finished"


def test_allow_list_covers_callbacks(backend, monkeypatch, marker):
    monkeypatch.setenv("PLUGQ_ALLOWED_MODULES", "plugq.testing.tasks")
    clear_settings_cache()
    q = Queue("allowcb", connection=backend)
    job = q.enqueue(tasks.fail, on_failure="os.system")
    run(backend, "allowcb")
    assert job.get_status() == "failed"
    assert "on_failure 'os.system' is outside allowed_modules" in job.exc_info


def test_json_serializer_refuses_objects_at_enqueue(backend):
    q = Queue("json", connection=backend, serializer="json")
    from plugq import SerializationError

    with pytest.raises(SerializationError, match="json"):
        q.enqueue(tasks.echo, Evil("x"))
    assert len(q) == 0


# -- issue 16's fields are bound by the seal (v3); pre-v3 seals still verify ---------------

_LIMIT = '["partner", 1, null, null]'
_FORGED = {"priority": 9, "unique_key": "report-2", "rate_limit": '["partner", 1000, null, null]'}
_UNSET = {"priority": 0, "unique_key": None, "rate_limit": None}


def _enqueue_with(q: Queue, marker: Path, field: str | None):
    from plugq import RateLimit, Unique

    options = {
        None: {},
        "priority": {"priority": 3},
        "unique_key": {"unique": Unique("report-1")},
        "rate_limit": {"rate_limit": RateLimit("partner", concurrency=1)},
    }[field]
    return q.enqueue(tasks.append_line, str(marker), "x", **options)


@pytest.mark.parametrize("field", ["priority", "unique_key", "rate_limit"])
@pytest.mark.parametrize("change", ["altered", "removed", "added"])
def test_issue16_field_tampered_refused(backend, monkeypatch, marker, field, change):
    monkeypatch.setenv("PLUGQ_SECRET_KEY", "s3cret")
    q = Queue("tamper16", connection=backend)
    job = _enqueue_with(q, marker, None if change == "added" else field)
    rec = backend.get(job.id)
    assert rec.payload[:4] == b"PQS3"
    setattr(rec, field, _UNSET[field] if change == "removed" else _FORGED[field])
    backend.insert([rec])
    run(backend, "tamper16")
    rec = backend.get(job.id)
    assert rec.status is JobStatus.FAILED
    assert "UntrustedJobError" in rec.exc_info and "bad signature" in rec.exc_info
    assert not marker.exists()


def _legacy_record(marker: Path, queue: str) -> JobRecord:
    """A job with issue 16's fields, sealed as plugq sealed it before v3."""
    from _legacy_signing import v2_seal

    rec = JobRecord(id=str(uuid.uuid4()), func_name="plugq.testing.tasks.append_line",
                    origin=queue, payload=b"", enqueued_at=1.0, created_at=1.0, priority=3,
                    unique_key="report-1", rate_limit=_LIMIT)
    rec.payload = v2_seal(rec, pickle.dumps(((str(marker), "x"), {})), b"s3cret")
    return rec


def test_job_sealed_before_v3_still_runs(backend, monkeypatch, marker):
    monkeypatch.setenv("PLUGQ_SECRET_KEY", "s3cret")
    rec = _legacy_record(marker, "legacy")
    backend.insert([rec])
    from plugq import Job

    job = Job.fetch(rec.id, connection=backend)
    assert job.args == (str(marker), "x")  # a reader (monitor) verifies it too
    run(backend, "legacy")
    assert backend.get(rec.id).status is JobStatus.FINISHED
    assert marker.read_text() == "x\n"


@pytest.mark.parametrize("had_priority", [True, False])
def test_v3_seal_relabelled_v2_refused(backend, monkeypatch, marker, had_priority):
    """The downgrade: the v3 MAC under the v2 prefix (which binds no priority) does not
    verify, so the priority v2 left unbound cannot be changed, removed or added."""
    monkeypatch.setenv("PLUGQ_SECRET_KEY", "s3cret")
    job = _enqueue_with(Queue("downgrade", connection=backend), marker,
                        "priority" if had_priority else None)
    rec = backend.get(job.id)
    assert rec.payload[:4] == b"PQS3"
    rec.payload = b"PQS1" + rec.payload[4:]
    rec.priority = 0 if had_priority else 9
    backend.insert([rec])
    run(backend, "downgrade")
    rec = backend.get(job.id)
    assert rec.status is JobStatus.FAILED and "bad signature" in rec.exc_info
    assert not marker.exists()


def test_unique_enqueue_is_sealed_with_its_key(backend, monkeypatch):
    """The unique key is set after the record is first sealed: it is sealed again."""
    from plugq import Unique

    monkeypatch.setenv("PLUGQ_SECRET_KEY", "s3cret")
    q = Queue("unique16", connection=backend)
    job = q.enqueue(tasks.add, 2, 3, unique=Unique("sum"))
    rec = backend.get(job.id)
    assert rec.unique_key == "sum" and rec.payload[:4] == b"PQS3"
    assert q.enqueue(tasks.add, 2, 3, unique=Unique("sum")).id == job.id
    run(backend, "unique16")
    assert job.get_status() == "finished" and job.result == 5
