"""RedisStorage.insert's batch script (issue 14): a batch ends as inserting its records
one by one would leave Redis, whichever of the script's paths it takes (all new ids,
stored ids, an id twice, plain and other records mixed, more ids than one push takes)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("rq")

from plugq.storage import JobRecord, JobStatus
from plugq.testing.storage import T0, record

pytestmark = pytest.mark.redis


@pytest.fixture(params=["redis", "fakeredis"])
def storage(request: pytest.FixtureRequest) -> Iterator[Any]:
    from plugq_rq.storage import RedisStorage

    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        server.flushall()
        url = server.url
    else:
        url = f"fakeredis://insert-{uuid.uuid4().hex}"
    s = RedisStorage(url)
    yield s
    s.close()


def _mixed(prefix: str) -> list[JobRecord]:
    """Plain queued records at the back, at the front and at other priority levels, in two
    queues, with records the script writes the long way (scheduled, deferred, with a ttl)."""
    recs = [
        record(f"{prefix}a"), record(f"{prefix}b", at_front=True), record(f"{prefix}c", priority=5),
        record(f"{prefix}d"), record(f"{prefix}e", origin="other"),
        record(f"{prefix}f", status=JobStatus.SCHEDULED, scheduled_for=T0 + 60),
        record(f"{prefix}g", expires_at=T0 + 3600, ttl=3600),
        record(f"{prefix}h", at_front=True), record(f"{prefix}i", priority=5, at_front=True),
        record(f"{prefix}j", priority=-2), record(f"{prefix}k"),
        record(f"{prefix}l", status=JobStatus.DEFERRED, depends_on=[f"{prefix}a"]),
        record(f"{prefix}m", origin="other", at_front=True),
    ]
    for i, rec in enumerate(recs):
        rec.created_at = T0 + i / 7
        if rec.status is JobStatus.QUEUED:
            rec.enqueued_at = T0 + 1 / 3
    return recs


def _state(storage: Any, prefix: str) -> dict[str, Any]:
    """What a reader sees of the records named ``prefix…`` (the prefix taken off)."""
    out: dict[str, Any] = {}
    for queue in ("q", "other"):
        for status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
            out[f"{queue} {status.value}"] = [
                i[len(prefix):] for i in storage.ids(queue, status) if i.startswith(prefix)]
    for rec in storage.get_many([r.id for r in _mixed(prefix)]):
        assert rec is not None
        out[rec.id[len(prefix):]] = (rec.status, rec.origin, rec.priority, rec.at_front,
                                    rec.created_at, rec.enqueued_at, rec.expires_at)
    out["expired"] = [i[len(prefix):] for i in storage.expired(T0 + 7200) if i.startswith(prefix)]
    return out


def test_a_batch_ends_as_one_insert_per_record(storage: Any) -> None:
    storage.insert(_mixed("batch-"))
    for rec in _mixed("single-"):
        storage.insert([rec])
    batch, single = _state(storage, "batch-"), _state(storage, "single-")
    assert batch == single
    # and that order is the one the records asked for
    assert batch["q queued"] == ["i", "c", "h", "b", "a", "d", "g", "k", "j"]
    assert batch["other queued"] == ["m", "e"]
    assert batch["q scheduled"] == ["f"] and batch["q deferred"] == ["l"]
    assert batch["expired"] == ["g"]


def test_a_batch_over_stored_ids_forgets_what_they_were(storage: Any) -> None:
    storage.insert([record("x1", origin="other"), record("x2", priority=3), record("x3")])
    storage.insert([record("n1"), record("x1"), record("x2", at_front=True), record("n2")])
    assert storage.ids("q", JobStatus.QUEUED) == ["x2", "x3", "n1", "x1", "n2"]
    assert storage.ids("other", JobStatus.QUEUED) == []
    rec = storage.get("x2")
    assert rec is not None and rec.priority == 0 and rec.at_front is True


def test_an_id_twice_in_a_batch_is_stored_and_queued_once(storage: Any) -> None:
    storage.insert([record("y1"), record("dup"), record("y2"), record("dup", origin="other")])
    assert storage.ids("q", JobStatus.QUEUED) == ["y1", "y2"]
    assert storage.ids("other", JobStatus.QUEUED) == ["dup"]
    rec = storage.get("dup")
    assert rec is not None and rec.origin == "other"


def test_a_batch_larger_than_one_push_keeps_its_order(storage: Any) -> None:
    # The script pushes ids and checks keys in slices of 4,000 (Lua's unpack limit).
    ids = [f"big-{i:05d}" for i in range(9001)]
    recs = [record(i, at_front=(n % 1000 == 0)) for n, i in enumerate(ids)]
    storage.insert(recs)
    front = [i for n, i in enumerate(ids) if n % 1000 == 0]
    assert storage.ids("q", JobStatus.QUEUED) == front[::-1] + [
        i for n, i in enumerate(ids) if n % 1000]


def test_the_dates_of_an_inserted_record_read_back_as_stored(storage: Any) -> None:
    rec = record("t1")
    rec.created_at, rec.enqueued_at = T0 + 0.1234565, T0 + 0.9999996
    storage.insert([rec])
    stored = storage.get("t1")
    assert stored is not None
    assert (stored.created_at, stored.enqueued_at) == (rec.created_at, rec.enqueued_at)
    assert rec.created_at == round(T0 + 0.1234565, 6)
    assert rec.enqueued_at == T0 + 1.0


def test_a_refused_batch_writes_nothing(storage: Any) -> None:
    from plugq.exceptions import DuplicateJobError

    storage.insert([record("held")])
    with pytest.raises(DuplicateJobError):
        storage.insert([record("fresh1"), record("held"), record("fresh2")], unique_ids=["held", "fresh1"])
    assert storage.get("fresh1") is None and storage.get("fresh2") is None
    assert storage.ids("q", JobStatus.QUEUED) == ["held"]


def test_an_insert_after_the_server_lost_its_scripts_or_the_connection(redis_server: Any) -> None:
    from plugq_rq.storage import RedisStorage

    redis_server.flushall()
    s = RedisStorage(redis_server.url)
    try:
        s.insert([record("s1")])
        s.redis.script_flush()  # a restart or SCRIPT FLUSH: the script is loaded again
        s.insert([record("s2")])
        # the storage's own connection closed by the server: a new one, the batch sent once
        s.redis.client_kill_filter(_type="normal", skipme=True)
        s.insert([record("s3"), record("s4")])
        assert s.ids("q", JobStatus.QUEUED) == ["s1", "s2", "s3", "s4"]
    finally:
        s.close()
