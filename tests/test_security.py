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
