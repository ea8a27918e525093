"""Primitive-level contract tests for a :class:`plugq.storage.Storage`.

A storage's tests subclass :class:`StorageConformance` and define a pytest
fixture named ``storage`` returning a fresh, empty storage on a
:class:`~plugq.storage.ManualClock` when the storage declares ``manual_clock``
(else on the wall clock)::

    from plugq.testing.storage import StorageConformance

    class TestMyStorage(StorageConformance):
        @pytest.fixture
        def storage(self, tmp_path):
            return MyStorage(f"mine:///{tmp_path}/db", clock=ManualClock())

Each test drives the primitives directly, with explicit times, so it checks
the storage alone: what the engine above it does is checked by
:class:`plugq.testing.conformance.BackendConformance`, which every storage
should pass too.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from plugq.exceptions import DuplicateJobError
from plugq.storage import (
    CAPABILITIES,
    HIDDEN_PREFIX,
    JobRecord,
    JobStatus,
    ResultRecord,
    Storage,
    WorkerRecord,
)

from .storage_beyond import BeyondStorageConformance

#: A moment every test starts from (epoch seconds, 2001-09-09).
T0 = 1_000_000_000.0


def record(job_id: str | None = None, origin: str = "q", **fields: Any) -> JobRecord:
    """A minimal record for these tests (queued unless ``status`` is given)."""
    return JobRecord(
        id=job_id or uuid.uuid4().hex, func_name="tasks.f", origin=origin, payload=b"p",
        **fields,
    )


def worker(name: str, heartbeat: float, queues: tuple[str, ...] = ("q",)) -> WorkerRecord:
    """A worker record that last heartbeated at ``heartbeat``."""
    return WorkerRecord(name=name, queues=list(queues), pid=1, hostname="h", birth=heartbeat,
                        last_heartbeat=heartbeat)


class StorageConformance(BeyondStorageConformance):
    """Subclass with a ``storage`` fixture; every test must pass.

    The optional capabilities' tests (:mod:`plugq.testing.storage_beyond`) run
    only on a storage that declares them.
    """

    # -- identity -------------------------------------------------------------

    def test_is_a_storage_with_a_clock_and_a_lease(self, storage: Storage) -> None:
        assert isinstance(storage, Storage)
        assert isinstance(storage.clock.now(), float)
        assert storage.lease > 0
        assert storage.capabilities <= CAPABILITIES.keys()

    def test_safe_url_hides_nothing_but_passwords(self, storage: Storage) -> None:
        assert storage.scheme and storage.safe_url().startswith(storage.scheme)

    # -- insert / get ---------------------------------------------------------

    def test_get_of_an_absent_id_is_none(self, storage: Storage) -> None:
        assert storage.get("nope") is None
        assert storage.get_many(["nope", "nada"]) == [None, None]

    def test_insert_then_get_round_trips_every_field(self, storage: Storage) -> None:
        rec = JobRecord(
            id="full", func_name="tasks.g", origin="q", payload=b"\x00\xffdata",
            serializer="json", status=JobStatus.SCHEDULED, description="tasks.g(1)",
            created_at=T0, enqueued_at=T0 + 1, started_at=T0 + 2, ended_at=T0 + 3,
            timeout=12.5, result_ttl=-1, failure_ttl=7, ttl=60, meta=b"meta",
            result=b"res", exc_info="Traceback", worker_name="w", retries_left=2,
            retry_intervals=[1.0, 2.5], depends_on=["a", "b"], allow_dependency_failure=True,
            on_success="tasks.ok", on_failure="tasks.ko", scheduled_for=T0 + 9,
            expires_at=T0 + 99, at_front=True, attempts=3,
        )
        storage.insert([rec])
        assert storage.get("full") == rec

    def test_records_are_values_not_shared(self, storage: Storage) -> None:
        rec = record("v")
        storage.insert([rec])
        rec.description = "changed after insert"
        got = storage.get("v")
        assert got is not None and got.description == ""
        got.depends_on.append("x")
        got.status = JobStatus.FAILED
        again = storage.get("v")
        assert again is not None and again.depends_on == [] and again.status is JobStatus.QUEUED

    def test_get_many_keeps_the_order_given(self, storage: Storage) -> None:
        storage.insert([record("a"), record("b")])
        got = storage.get_many(["b", "missing", "a"])
        assert [r.id if r else None for r in got] == ["b", None, "a"]

    def test_insert_replaces_a_record_with_the_same_id(self, storage: Storage) -> None:
        storage.insert([record("same", description="one")])
        storage.insert([record("same", description="two")])
        got = storage.get("same")
        assert got is not None and got.description == "two"
        assert storage.ids("q", JobStatus.QUEUED) == ["same"]

    def test_unique_refuses_a_queued_or_started_id(self, storage: Storage) -> None:
        storage.insert([record("u1"), record("u2", status=JobStatus.STARTED)])
        for job_id in ("u1", "u2"):
            with pytest.raises(DuplicateJobError):
                storage.insert([record(job_id)], unique_ids=[job_id])

    def test_unique_allows_an_ended_id(self, storage: Storage) -> None:
        storage.insert([record("done", status=JobStatus.FINISHED)])
        storage.insert([record("done")], unique_ids=["done"])
        got = storage.get("done")
        assert got is not None and got.status is JobStatus.QUEUED

    def test_a_refused_batch_writes_nothing(self, storage: Storage) -> None:
        storage.insert([record("taken")])
        with pytest.raises(DuplicateJobError):
            storage.insert([record("new-1"), record("taken"), record("new-2")],
                           unique_ids=["new-1", "taken", "new-2"])
        assert storage.get("new-1") is None and storage.get("new-2") is None
        assert storage.ids("q", JobStatus.QUEUED) == ["taken"]

    # -- queue order ----------------------------------------------------------

    def test_queued_records_are_listed_first_in_first_out(self, storage: Storage) -> None:
        storage.insert([record("1"), record("2")])
        storage.insert([record("3")])
        assert storage.ids("q", JobStatus.QUEUED) == ["1", "2", "3"]

    def test_at_front_enters_before_everything_queued(self, storage: Storage) -> None:
        storage.insert([record("1"), record("2")])
        storage.insert([record("f1", at_front=True)])
        storage.insert([record("f2", at_front=True)])
        assert storage.ids("q", JobStatus.QUEUED) == ["f2", "f1", "1", "2"]

    def test_only_queued_records_are_in_the_queue(self, storage: Storage) -> None:
        storage.insert([record("s", status=JobStatus.SCHEDULED, scheduled_for=T0),
                        record("d", status=JobStatus.DEFERRED, depends_on=["x"]),
                        record("q1")])
        assert storage.ids("q", JobStatus.QUEUED) == ["q1"]
        assert storage.ids("q", JobStatus.SCHEDULED) == ["s"]
        assert storage.ids("q", JobStatus.DEFERRED) == ["d"]

    def test_queues_are_separate(self, storage: Storage) -> None:
        storage.insert([record("a1", origin="a"), record("b1", origin="b")])
        assert storage.ids("a", JobStatus.QUEUED) == ["a1"]
        assert storage.ids("b", JobStatus.QUEUED) == ["b1"]
        assert storage.queues() == ["a", "b"]

    # -- claim ----------------------------------------------------------------

    def test_claim_takes_the_head_and_marks_it_started(self, storage: Storage) -> None:
        storage.insert([record("1", expires_at=T0 + 100), record("2")])
        got = storage.claim(["q"], "w1", T0)
        assert got is not None and got.id == "1"
        assert got.status is JobStatus.STARTED
        assert (got.started_at, got.worker_name, got.expires_at, got.attempts) == (T0, "w1", None, 1)
        assert storage.get("1") == got
        assert storage.ids("q", JobStatus.QUEUED) == ["2"]
        assert storage.ids("q", JobStatus.STARTED) == ["1"]

    def test_claim_of_empty_queues_is_none(self, storage: Storage) -> None:
        assert storage.claim(["q", "other"], "w", T0) is None
        storage.insert([record("s", status=JobStatus.SCHEDULED, scheduled_for=T0)])
        assert storage.claim(["q"], "w", T0) is None

    def test_claim_looks_at_queues_in_the_order_given(self, storage: Storage) -> None:
        storage.insert([record("low-1", origin="low"), record("high-1", origin="high")])
        got = storage.claim(["high", "low"], "w", T0)
        assert got is not None and got.id == "high-1"
        got = storage.claim(["high", "low"], "w", T0)
        assert got is not None and got.id == "low-1"

    def test_claim_skips_a_queued_job_whose_ttl_ran_out(self, storage: Storage) -> None:
        storage.insert([record("old", expires_at=T0 - 1), record("fresh", expires_at=T0 + 1)])
        got = storage.claim(["q"], "w", T0)
        assert got is not None and got.id == "fresh"
        assert storage.claim(["q"], "w", T0) is None

    def test_claim_counts_attempts(self, storage: Storage) -> None:
        storage.insert([record("again", attempts=4)])
        got = storage.claim(["q"], "w", T0)
        assert got is not None and got.attempts == 5

    def test_exactly_one_claimer_gets_each_job(self, storage: Storage) -> None:
        jobs = 60
        storage.insert([record(f"j{i}") for i in range(jobs)])
        taken: list[str] = []
        lock = threading.Lock()
        start = threading.Barrier(4)

        def claimer(name: str) -> None:
            start.wait()
            while True:
                got = storage.claim(["q"], name, T0)
                if got is None:
                    return
                with lock:
                    taken.append(got.id)
                    if len(taken) > jobs:  # handed out more jobs than there are
                        return

        threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(taken) == sorted(f"j{i}" for i in range(jobs)), "each job exactly once"
        assert storage.count_status("q", JobStatus.QUEUED) == 0
        assert storage.count_status("q", JobStatus.STARTED) == jobs

    # -- put (compare-and-set) ------------------------------------------------

    def test_put_overwrites_every_field_but_meta(self, storage: Storage) -> None:
        storage.insert([record("p", meta=b"kept")])
        new = record("p", description="new", meta=b"ignored", status=JobStatus.FINISHED,
                     result=b"r", ended_at=T0)
        assert storage.put(new) is True
        got = storage.get("p")
        assert got is not None and got.meta == b"kept"
        new.meta = b"kept"
        assert got == new

    def test_put_of_an_absent_record_is_false(self, storage: Storage) -> None:
        assert storage.put(record("ghost")) is False
        assert storage.get("ghost") is None

    def test_put_writes_only_from_an_expected_status(self, storage: Storage) -> None:
        storage.insert([record("c", status=JobStatus.STARTED)])
        done = record("c", status=JobStatus.FINISHED)
        assert storage.put(done, expected={JobStatus.QUEUED, JobStatus.DEFERRED}) is False
        got = storage.get("c")
        assert got is not None and got.status is JobStatus.STARTED
        assert storage.put(done, expected={JobStatus.STARTED}) is True
        got = storage.get("c")
        assert got is not None and got.status is JobStatus.FINISHED

    def test_put_with_no_expected_status_never_writes(self, storage: Storage) -> None:
        storage.insert([record("e")])
        assert storage.put(record("e", status=JobStatus.FAILED), expected=set()) is False

    def test_put_checks_the_attempt(self, storage: Storage) -> None:
        storage.insert([record("a", status=JobStatus.STARTED, attempts=2)])
        stale = record("a", status=JobStatus.FINISHED, attempts=1)
        assert storage.put(stale, expected={JobStatus.STARTED}, expected_attempts=1) is False
        current = record("a", status=JobStatus.FINISHED, attempts=2)
        assert storage.put(current, expected={JobStatus.STARTED}, expected_attempts=2) is True

    def test_a_record_that_becomes_queued_enters_at_the_back(self, storage: Storage) -> None:
        storage.insert([record("f", status=JobStatus.FAILED), record("1"), record("2")])
        assert storage.put(record("f"), expected={JobStatus.FAILED})
        assert storage.ids("q", JobStatus.QUEUED) == ["1", "2", "f"]
        assert storage.ids("q", JobStatus.FAILED) == []

    def test_a_record_requeued_at_front_enters_first(self, storage: Storage) -> None:
        storage.insert([record("f", status=JobStatus.FAILED), record("1")])
        assert storage.put(record("f", at_front=True))
        assert storage.ids("q", JobStatus.QUEUED) == ["f", "1"]

    def test_a_record_that_stays_queued_keeps_its_place(self, storage: Storage) -> None:
        storage.insert([record("1"), record("2"), record("3")])
        assert storage.put(record("1", description="edited"), expected={JobStatus.QUEUED})
        assert storage.ids("q", JobStatus.QUEUED) == ["1", "2", "3"]

    def test_a_record_that_moves_queue_enters_the_other_one(self, storage: Storage) -> None:
        storage.insert([record("m"), record("b1", origin="b")])
        assert storage.put(record("m", origin="b"))
        assert storage.ids("q", JobStatus.QUEUED) == []
        assert storage.ids("b", JobStatus.QUEUED) == ["b1", "m"]

    def test_a_record_that_leaves_queued_leaves_the_queue(self, storage: Storage) -> None:
        storage.insert([record("x"), record("y")])
        assert storage.put(record("x", status=JobStatus.CANCELED), expected={JobStatus.QUEUED})
        assert storage.ids("q", JobStatus.QUEUED) == ["y"]
        assert storage.claim(["q"], "w", T0) is not None
        assert storage.claim(["q"], "w", T0) is None

    # -- remove, meta -----------------------------------------------------------

    def test_remove_deletes_from_everywhere(self, storage: Storage) -> None:
        storage.insert([record("r"), record("d", status=JobStatus.DEFERRED, depends_on=["r"])])
        assert storage.remove("r") is True
        assert storage.remove("r") is False
        assert storage.get("r") is None
        assert storage.ids("q", JobStatus.QUEUED) == []
        assert storage.remove("d") is True
        assert storage.dependents("r") == []

    def test_set_meta_changes_only_meta(self, storage: Storage) -> None:
        storage.insert([record("m", status=JobStatus.STARTED, description="d")])
        assert storage.set_meta("m", b"new") is True
        got = storage.get("m")
        assert got is not None and (got.meta, got.status, got.description) == (
            b"new", JobStatus.STARTED, "d")
        assert storage.set_meta("absent", b"x") is False

    def test_remove_queued_leaves_other_statuses(self, storage: Storage) -> None:
        storage.insert([record("1"), record("2"), record("s", status=JobStatus.STARTED),
                        record("o", origin="other")])
        assert storage.remove_queued("q") == 2
        assert storage.get("1") is None and storage.get("s") is not None
        assert storage.ids("other", JobStatus.QUEUED) == ["o"]

    # -- listings ---------------------------------------------------------------

    def test_ids_take_an_offset_and_a_length(self, storage: Storage) -> None:
        storage.insert([record(str(i)) for i in range(5)])
        assert storage.ids("q", JobStatus.QUEUED, 1, 2) == ["1", "2"]
        assert storage.ids("q", JobStatus.QUEUED, 3) == ["3", "4"]
        assert storage.ids("q", JobStatus.QUEUED, 0, 0) == []

    def test_other_statuses_list_oldest_first(self, storage: Storage) -> None:
        storage.insert([record("a", status=JobStatus.STARTED), record("b", status=JobStatus.STARTED)])
        assert storage.put(record("a", status=JobStatus.FAILED))
        assert storage.put(record("b", status=JobStatus.FAILED))
        assert storage.ids("q", JobStatus.FAILED) == ["a", "b"]

    def test_count_status_counts_one_queue_and_status(self, storage: Storage) -> None:
        storage.insert([record("1"), record("2"), record("f", status=JobStatus.FAILED),
                        record("o", origin="other")])
        assert storage.count_status("q", JobStatus.QUEUED) == 2
        assert storage.count_status("q", JobStatus.FAILED) == 1
        assert storage.count_status("q", JobStatus.FINISHED) == 0

    def test_listings_with_now_leave_out_expired_records(self, storage: Storage) -> None:
        storage.insert([record("old", status=JobStatus.FINISHED, expires_at=T0),
                        record("new", status=JobStatus.FINISHED, expires_at=T0 + 10),
                        record("kept", status=JobStatus.FINISHED)])
        assert storage.ids("q", JobStatus.FINISHED, now=T0) == ["new", "kept"]
        assert storage.count_status("q", JobStatus.FINISHED, now=T0) == 2
        assert storage.count_status("q", JobStatus.FINISHED) == 3

    def test_reads_never_delete(self, storage: Storage) -> None:
        storage.insert([record("exp", expires_at=T0 - 5)])
        storage.ids("q", JobStatus.QUEUED, now=T0)
        storage.count_status("q", JobStatus.QUEUED, now=T0)
        storage.get_many(["exp"])
        storage.expired(T0)
        assert storage.get("exp") is not None

    def test_queues_lists_every_origin_with_records(self, storage: Storage) -> None:
        assert storage.queues() == []
        storage.insert([record("1", origin="b"), record("2", origin="a", status=JobStatus.FAILED)])
        assert storage.queues() == ["a", "b"]
        storage.remove("1")
        assert storage.queues() == ["a"]

    def test_due_lists_scheduled_records_earliest_first(self, storage: Storage) -> None:
        storage.insert([
            record("later", status=JobStatus.SCHEDULED, scheduled_for=T0 - 1),
            record("first", status=JobStatus.SCHEDULED, scheduled_for=T0 - 9),
            record("future", status=JobStatus.SCHEDULED, scheduled_for=T0 + 1),
            record("queued", scheduled_for=T0 - 20),
        ])
        assert storage.due(T0) == ["first", "later"]
        assert storage.due(T0, limit=1) == ["first"]

    def test_expired_lists_records_whose_ttl_ran_out(self, storage: Storage) -> None:
        storage.insert([record("a", expires_at=T0 - 1),
                        record("b", status=JobStatus.FINISHED, expires_at=T0),
                        record("c", expires_at=T0 + 1), record("d")])
        assert sorted(storage.expired(T0)) == ["a", "b"]
        assert len(storage.expired(T0, limit=1)) == 1

    def test_dependents_are_the_deferred_records_waiting_for_a_job(self, storage: Storage) -> None:
        storage.insert([
            record("d1", status=JobStatus.DEFERRED, depends_on=["p", "other"]),
            record("d2", status=JobStatus.DEFERRED, depends_on=["p"]),
            record("q1", depends_on=["p"]),
            record("d3", status=JobStatus.DEFERRED, depends_on=["other"]),
        ])
        assert sorted(storage.dependents("p")) == ["d1", "d2"]
        assert storage.put(record("d2", depends_on=["p"]), expected={JobStatus.DEFERRED})
        assert storage.dependents("p") == ["d1"]

    # -- workers and leases -----------------------------------------------------

    def test_workers_register_list_and_unregister(self, storage: Storage) -> None:
        w = worker("w1", T0, queues=("a", "b"))
        storage.register_worker(w)
        assert storage.list_workers() == [w]
        storage.register_worker(worker("w1", T0 + 1))
        assert [x.last_heartbeat for x in storage.list_workers()] == [T0 + 1]
        storage.unregister_worker("w1")
        storage.unregister_worker("w1")
        assert storage.list_workers() == []

    def test_heartbeat_records_state_and_counters(self, storage: Storage) -> None:
        storage.register_worker(worker("w", T0))
        storage.heartbeat("w", T0 + 5, state="busy", current_job_id="j", successful=3, failed=1)
        (w,) = storage.list_workers()
        assert (w.last_heartbeat, w.state, w.current_job_id, w.successful_jobs, w.failed_jobs) == (
            T0 + 5, "busy", "j", 3, 1)
        storage.heartbeat("unknown", T0, state="idle", current_job_id=None)
        assert [x.name for x in storage.list_workers()] == ["w"]

    def test_started_jobs_of_silent_workers_are_listed(self, storage: Storage) -> None:
        lease = storage.lease
        storage.register_worker(worker("alive", T0))
        storage.register_worker(worker("silent", T0 - lease - 1))
        storage.insert([record("a"), record("s"), record("g"), record("me")])
        for job_id, name in (("a", "alive"), ("s", "silent"), ("g", "never-registered"),
                             ("me", "caller")):
            assert storage.put(record(job_id, status=JobStatus.STARTED, worker_name=name))
        found = storage.started_by_dead_workers(T0, exclude="caller")
        assert sorted(r.id for r in found) == ["g", "s"]
        assert all(isinstance(r, JobRecord) for r in found)
        assert sorted(r.id for r in storage.started_by_dead_workers(T0 + lease)) == [
            "a", "g", "me", "s"]

    # -- waiting ------------------------------------------------------------------

    def test_wait_returns_within_its_timeout(self, storage: Storage) -> None:
        began = time.monotonic()
        storage.wait(["q"], 0.2)
        assert time.monotonic() - began < 5

    def test_wait_returns_at_once_when_work_is_queued(self, storage: Storage) -> None:
        storage.insert([record("ready")])
        began = time.monotonic()
        storage.wait(["q"], 0.5)
        # The default wait (a plain sleep) is allowed: then the whole timeout passes.
        assert time.monotonic() - began < 5

    # -- side records: results history, groups, commands ---------------------------

    def test_results_history_newest_first_and_trimmed(self, storage: Storage) -> None:
        for n in range(5):
            storage.add_result(
                ResultRecord(job_id="j", type="successful", created_at=T0 + n,
                             result=bytes([n]), expires_at=T0 + 100), keep=3)
        found = storage.results("j")
        assert [e.result for e in found] == [b"\x04", b"\x03", b"\x02"]
        assert storage.results("other") == []
        assert storage.results("j", now=T0 + 100) == []  # expired entries are left out
        storage.remove_results("j")
        assert storage.results("j") == []

    def test_side_records_are_not_queues(self, storage: Storage) -> None:
        storage.add_result(ResultRecord(job_id="j", type="failed", created_at=T0, exc_info="x"))
        storage.add_to_group("g", ["a"])
        storage.send_command("w", {"command": "shutdown"})
        assert all(name.startswith(HIDDEN_PREFIX) for name in storage.queues())
        assert storage.claim(["q"], "w", T0) is None

    def test_group_membership(self, storage: Storage) -> None:
        storage.add_to_group("g1", ["a", "b"])
        storage.add_to_group("g2", ["c"])
        storage.add_to_group("g1", ["d"])
        assert storage.group_members("g1") == ["a", "b", "d"]
        assert storage.groups() == ["g1", "g2"]
        storage.remove_from_group("g1", ["b"])
        assert storage.group_members("g1") == ["a", "d"]
        storage.remove_from_group("g2", ["c"])
        assert storage.groups() == ["g1"] and storage.group_members("nope") == []

    def test_commands_are_taken_once_in_order(self, storage: Storage) -> None:
        storage.send_command("w1", {"command": "stop-job", "job_id": "j"})
        storage.send_command("w1", {"command": "shutdown"})
        storage.send_command("w2", {"command": "kill-horse"})
        assert storage.take_commands("w1") == [
            {"command": "stop-job", "job_id": "j"}, {"command": "shutdown"}]
        assert storage.take_commands("w1") == []
        assert storage.take_commands("w2") == [{"command": "kill-horse"}]


__all__ = ["T0", "StorageConformance", "record", "worker"]
