"""Primitive-level tests of the optional capabilities (priority, unique keys, progress, values, gated claim).

Mixed into :class:`plugq.testing.storage.StorageConformance`; each test is
skipped on a storage that does not declare its capability.
"""

from __future__ import annotations

import threading

import pytest

from plugq.exceptions import DuplicateJobError
from plugq.ratelimit import RateLimit
from plugq.storage import ClaimValues, JobRecord, JobStatus, Storage, UniqueKey

from .storage_limits import LimitRuleConformance

T0 = 1_000_000_000.0


def _record(job_id: str, origin: str = "q", **fields: object) -> JobRecord:
    return JobRecord(id=job_id, func_name="tasks.f", origin=origin, payload=b"p",
                     **fields)  # type: ignore[arg-type]


def _needs(storage: Storage, capability: str) -> None:
    if capability not in storage.capabilities:
        pytest.skip(f"{type(storage).__name__} does not declare {capability!r}")


#: A record's rate_limit as the engine encodes it (a storage checks only that it parses).
LIMITED = RateLimit("k", concurrency=1).dumps()

PENDING = frozenset({JobStatus.QUEUED, JobStatus.STARTED})


class BeyondStorageConformance(LimitRuleConformance):
    """The optional primitives; every test skips without its capability."""

    # -- priority ---------------------------------------------------------------

    def test_priority_orders_the_queue_higher_first_fifo_among_equals(
        self, storage: Storage
    ) -> None:
        _needs(storage, "priority")
        storage.insert([_record("a"), _record("b", priority=5), _record("c", priority=-2)])
        storage.insert([_record("d", priority=5), _record("e")])
        storage.insert([_record("f", priority=5, at_front=True)])
        assert storage.ids("q", JobStatus.QUEUED) == ["f", "b", "d", "a", "e", "c"]
        taken = []
        while (got := storage.claim(["q"], "w", T0)) is not None:
            taken.append(got.id)
            assert got.priority == storage.get(got.id).priority  # type: ignore[union-attr]
        assert taken == ["f", "b", "d", "a", "e", "c"]

    def test_priority_is_kept_and_other_statuses_keep_entry_order(self, storage: Storage) -> None:
        _needs(storage, "priority")
        storage.insert([_record("lo", priority=1), _record("hi", priority=9)])
        assert storage.get("hi").priority == 9  # type: ignore[union-attr]
        first = storage.claim(["q"], "w", T0)
        second = storage.claim(["q"], "w", T0)
        assert (first and first.id, second and second.id) == ("hi", "lo")
        assert storage.ids("q", JobStatus.STARTED) == ["hi", "lo"]

    def test_priority_does_not_reorder_across_queues(self, storage: Storage) -> None:
        _needs(storage, "priority")
        storage.insert([_record("low", origin="b", priority=100), _record("one", origin="a")])
        got = storage.claim(["a", "b"], "w", T0)
        assert got is not None and got.id == "one"

    def test_a_requeued_record_enters_its_priority_level(self, storage: Storage) -> None:
        _needs(storage, "priority")
        storage.insert([_record("x", priority=3), _record("y", priority=3)])
        got = storage.claim(["q"], "w", T0)
        assert got is not None and got.id == "x"
        got.status = JobStatus.QUEUED
        assert storage.put(got, expected={JobStatus.STARTED})
        storage.insert([_record("z")])
        assert storage.ids("q", JobStatus.QUEUED) == ["y", "x", "z"]

    def test_count_and_remove_queued_see_every_priority(self, storage: Storage) -> None:
        _needs(storage, "priority")
        storage.insert([_record("a"), _record("b", priority=2), _record("c", priority=-2)])
        assert storage.count_status("q", JobStatus.QUEUED) == 3
        assert storage.remove_queued("q") == 3
        assert storage.claim(["q"], "w", T0) is None

    # -- unique keys -------------------------------------------------------------

    def test_unique_key_refuses_while_a_record_holds_it(self, storage: Storage) -> None:
        _needs(storage, "unique_keys")
        storage.insert([_record("1", unique_key="k", created_at=T0)],
                       unique_keys=[UniqueKey("k", PENDING)])
        with pytest.raises(DuplicateJobError) as err:
            storage.insert([_record("2", unique_key="k", created_at=T0)],
                           unique_keys=[UniqueKey("k", PENDING)])
        assert err.value.job_id == "1"
        assert storage.get("2") is None
        storage.insert([_record("3", unique_key="other", created_at=T0)],
                       unique_keys=[UniqueKey("other", PENDING)])

    def test_unique_key_lets_go_in_another_status_or_after_since(self, storage: Storage) -> None:
        _needs(storage, "unique_keys")
        storage.insert([_record("old", unique_key="k", created_at=T0,
                                status=JobStatus.FINISHED)])
        storage.insert([_record("n1", unique_key="k", created_at=T0 + 1)],
                       unique_keys=[UniqueKey("k", PENDING)])
        with pytest.raises(DuplicateJobError):
            storage.insert([_record("n2", unique_key="k", created_at=T0 + 2)],
                           unique_keys=[UniqueKey("k", frozenset(JobStatus), since=T0)])
        storage.insert([_record("n3", unique_key="k", created_at=T0 + 20)],
                       unique_keys=[UniqueKey("k", frozenset(JobStatus), since=T0 + 10)])
        assert storage.get("n3") is not None

    def test_racing_unique_key_inserts_store_one(self, storage: Storage) -> None:
        _needs(storage, "unique_keys")
        start = threading.Barrier(4)
        won: list[str] = []

        def producer(i: int) -> None:
            start.wait()
            for n in range(10):
                try:
                    storage.insert([_record(f"p{i}-{n}", unique_key="race", created_at=T0)],
                                   unique_keys=[UniqueKey("race", PENDING)])
                    won.append(f"p{i}-{n}")
                except DuplicateJobError:
                    pass

        threads = [threading.Thread(target=producer, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1
        assert storage.count_status("q", JobStatus.QUEUED) == 1

    # -- progress ----------------------------------------------------------------

    def test_progress_is_kept_apart_from_the_record(self, storage: Storage) -> None:
        _needs(storage, "progress")
        storage.insert([_record("1")])
        assert storage.get_progress(["1", "absent"]) == [None, None]
        assert storage.set_progress("1", '{"fraction": 0.5}')
        assert not storage.set_progress("absent", "x")
        got = storage.claim(["q"], "w", T0)
        assert got is not None
        assert storage.set_progress("1", '{"fraction": 0.75}')
        got.status = JobStatus.FINISHED
        assert storage.put(got, expected={JobStatus.STARTED})
        assert storage.get_progress(["1"]) == ['{"fraction": 0.75}']
        storage.remove("1")
        assert storage.get_progress(["1"]) == [None]

    # -- named values ------------------------------------------------------------

    def test_named_values_compare_and_set(self, storage: Storage) -> None:
        _needs(storage, "values")
        assert storage.get_value("cron:a") is None
        assert storage.swap_value("cron:a", None, "1")
        assert not storage.swap_value("cron:a", None, "2")
        assert not storage.swap_value("cron:a", "0", "2")
        assert storage.swap_value("cron:a", "1", "2")
        assert storage.get_value("cron:a") == "2"
        assert storage.swap_value("cron:b", None, "x")
        assert storage.swap_value("other", None, "y")
        assert storage.values("cron:") == {"cron:a": "2", "cron:b": "x"}
        assert storage.swap_value("cron:b", "x", None)
        assert storage.get_value("cron:b") is None

    def test_one_of_racing_swaps_wins(self, storage: Storage) -> None:
        _needs(storage, "values")
        storage.swap_value("tick", None, "0")
        start = threading.Barrier(4)
        wins: list[int] = []

        def swapper(i: int) -> None:
            start.wait()
            if storage.swap_value("tick", "0", f"by-{i}"):
                wins.append(i)

        threads = [threading.Thread(target=swapper, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1
        assert storage.get_value("tick") == f"by-{wins[0]}"

    # -- gated claim -------------------------------------------------------------

    def test_gated_claim_runs_the_gate_only_for_a_limited_record(self, storage: Storage) -> None:
        _needs(storage, "gated_claim")
        storage.insert([_record("plain"), _record("limited", rate_limit=LIMITED)])
        seen: list[tuple[str, JobStatus, str | None]] = []

        moments: list[float] = []

        def gate(rec: JobRecord, values: ClaimValues, now: float) -> bool:
            seen.append((rec.id, rec.status, values.get_value("gate")))
            values.set_value("gate", f"admitted {rec.id}")
            moments.append(now)
            return True

        first = storage.claim_gated(["q"], "w", T0, gate)
        assert first is not None and first.id == "plain" and first.status is JobStatus.STARTED
        assert seen == []
        before = storage.clock.now()
        second = storage.claim_gated(["q"], "w", T0 + 1, gate)
        after = storage.clock.now()
        assert second is not None and second.id == "limited"
        assert second.status is JobStatus.STARTED and second.attempts == 1
        assert seen == [("limited", JobStatus.STARTED, None)]
        assert storage.get_value("gate") == "admitted limited"
        # The gate's moment is the storage's clock read during the claim, not the claim's now.
        assert len(moments) == 1 and before <= moments[0] <= after
        assert storage.get("limited").status is JobStatus.STARTED  # type: ignore[union-attr]
        assert storage.claim_gated(["q"], "w", T0, gate) is None

    def test_a_peek_reads_inside_every_claim_before_the_gate(self, storage: Storage) -> None:
        """The peek sees each claim's own view: another writer's value between claims, the
        value before the gate changes it, and it runs when no record is found too."""
        _needs(storage, "gated_claim")
        storage.insert([_record("plain"), _record("limited", rate_limit=LIMITED)])
        assert storage.swap_value("line", None, "v1")
        seen: list[object] = []

        def peek(values: ClaimValues) -> None:
            seen.append(values.get_value("line"))

        def gate(rec: JobRecord, values: ClaimValues, now: float) -> bool:
            seen.append(("gate", values.get_value("line")))
            values.set_value("line", "v2")
            seen.append(("gate again", values.get_value("line")))
            return True

        first = storage.claim_gated(["q"], "w", T0, gate, peek)
        assert first is not None and first.id == "plain"
        assert seen == ["v1"]
        # Another writer between two claims: the next claim reads what it wrote.
        assert storage.swap_value("line", "v1", "v1b")
        second = storage.claim_gated(["q"], "w", T0, gate, peek)
        assert second is not None and second.id == "limited"
        assert second.status is JobStatus.STARTED
        assert seen == ["v1", "v1b", ("gate", "v1b"), ("gate again", "v2")]
        assert storage.claim_gated(["q"], "w", T0, gate, peek) is None
        assert seen[-1] == "v2"
        assert storage.swap_value("line", "v2", "v3")
        assert storage.claim_gated(["q"], "w", T0, gate, peek) is None
        assert seen[-1] == "v3"
        assert storage.get_value("line") == "v3"

    def test_a_refused_record_is_stored_as_the_gate_left_it(self, storage: Storage) -> None:
        _needs(storage, "gated_claim")
        storage.insert([_record("a", rate_limit=LIMITED), _record("b", rate_limit=LIMITED)])

        def gate(rec: JobRecord, values: ClaimValues, now: float) -> bool:
            values.set_value("line", rec.id)
            rec.status = JobStatus.RATE_LIMITED
            rec.attempts -= 1
            rec.started_at = None
            rec.worker_name = None
            return False

        got = storage.claim_gated(["q"], "w", T0, gate)
        assert got is not None and got.id == "a" and got.status is JobStatus.RATE_LIMITED
        stored = storage.get("a")
        assert stored is not None and stored.status is JobStatus.RATE_LIMITED
        assert (stored.attempts, stored.started_at, stored.worker_name) == (0, None, None)
        assert storage.ids("q", JobStatus.RATE_LIMITED) == ["a"]
        assert storage.ids("q", JobStatus.QUEUED) == ["b"]
        assert storage.ids("q", JobStatus.STARTED) == []
        assert storage.get_value("line") == "a"

    def test_a_gate_that_raises_commits_nothing(self, storage: Storage) -> None:
        _needs(storage, "gated_claim")
        storage.insert([_record("a", rate_limit=LIMITED)])

        def gate(rec: JobRecord, values: ClaimValues, now: float) -> bool:
            values.set_value("half", "written")
            raise RuntimeError("the gate broke")

        with pytest.raises(RuntimeError, match="the gate broke"):
            storage.claim_gated(["q"], "w", T0, gate)
        stored = storage.get("a")
        assert stored is not None and stored.status is JobStatus.QUEUED and stored.attempts == 0
        assert storage.get_value("half") is None
        assert storage.ids("q", JobStatus.QUEUED) == ["a"]

    def test_the_gate_reads_statuses_inside_the_claim(self, storage: Storage) -> None:
        _needs(storage, "gated_claim")
        storage.insert([_record("done", status=JobStatus.FINISHED), _record("x", rate_limit=LIMITED)])
        found: list[dict[str, JobStatus]] = []

        def gate(rec: JobRecord, values: ClaimValues, now: float) -> bool:
            found.append(values.statuses(["done", "x", "gone"]))
            return True

        assert storage.claim_gated(["q"], "w", T0, gate) is not None
        assert found == [{"done": JobStatus.FINISHED, "x": JobStatus.STARTED}]

    def test_racing_gated_claims_see_each_others_values(self, storage: Storage) -> None:
        """4 threads claim 40 limited records; each gate adds one to a counter, unguarded.

        Without a compare-and-set, the count comes out right only if every
        gate ran alone inside its claim's transaction.
        """
        _needs(storage, "gated_claim")
        storage.insert([_record(f"j{n}", rate_limit=LIMITED) for n in range(40)])
        start = threading.Barrier(4)
        taken: list[str] = []

        def gate(rec: JobRecord, values: ClaimValues, now: float) -> bool:
            values.set_value("count", str(int(values.get_value("count") or 0) + 1))
            return True

        def claimer() -> None:
            start.wait()
            while (got := storage.claim_gated(["q"], "w", T0, gate)) is not None:
                taken.append(got.id)

        threads = [threading.Thread(target=claimer) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(taken) == sorted(f"j{n}" for n in range(40))
        assert storage.get_value("count") == "40"
