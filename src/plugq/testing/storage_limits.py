"""The rate-limit admission rule, checked on a storage against the engine's reference.

:data:`plugq.storage.ADMISSION_RULE` is stated once in the contract; the
engine's :func:`plugq._limits._decide` is its reference implementation. A
storage admits by it in one of three ways: the engine's generic path (claim,
then a compare-and-set of the limit's value), the engine's gate run inside
the storage's claim (``gated_claim``), or the storage's own implementation
inside its claim (``limit_rule``, e.g. Redis's Lua). Each test here drives a
sequence of enqueues, claims, ends, retries, removals, wake-ups and clock
moves through the storage and through a model that calls the reference
directly, and after every step compares what was admitted, every job's
status and each limit's stored state (holders, starts, the line's order).

Mixed into :class:`plugq.testing.storage.StorageConformance`; skipped on a
storage without the ``values`` capability.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from plugq import _limits
from plugq.ratelimit import RateLimit
from plugq.storage import JobRecord, JobStatus, ManualClock, Storage

T0 = 1_000_000_000.0

#: One step of a sequence: ("enqueue", id, RateLimit or None), ("claim", seconds after T0),
#: ("end", id), ("retry", id), ("remove", id), ("wake", key).
Step = tuple[Any, ...]


class _Model:
    """One queue ``q`` and the limits' values, with admission by the reference."""

    def __init__(self) -> None:
        self.queue: list[str] = []
        self.status: dict[str, JobStatus] = {}
        self.limit: dict[str, RateLimit | None] = {}
        self.raw: dict[str, str | None] = {}

    def _statuses(self, ids: list[str]) -> dict[str, JobStatus]:
        return {i: self.status[i] for i in ids if i in self.status}

    def claim(self, now: float) -> str | None:
        while self.queue:
            job_id = self.queue.pop(0)
            self.status[job_id] = JobStatus.STARTED
            limit = self.limit[job_id]
            if limit is None:
                return job_id
            key = _limits.PREFIX + limit.key
            admitted, st = _limits._decide(limit, self.raw.get(key), job_id, now, self._statuses)
            self.raw[key] = st.dumps()
            if admitted:
                return job_id
            self.status[job_id] = JobStatus.RATE_LIMITED
        return None

    def first_waiting(self, key: str) -> str | None:
        raw = self.raw.get(_limits.PREFIX + key)
        waiting = _limits._State.loads(raw).waiting
        return next((i for i in waiting if self.status.get(i) is JobStatus.RATE_LIMITED), None)


class _Driver:
    """The same steps on a storage, admitted the way the engine admits on it."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.native = "limit_rule" in storage.capabilities
        self.gated = "gated_claim" in storage.capabilities

    def moment(self, offset: float) -> float:
        """The admission's time, ``offset`` seconds into the test.

        Exactly that where the claim's ``now`` is used (``limit_rule``), else
        the manual clock's, set to it (a clock only moves forward: a moment
        asked for before the clock's stays the clock's).
        """
        if self.native:
            return T0 + offset
        clock = self.storage.clock
        assert isinstance(clock, ManualClock)
        if not hasattr(self, "base"):
            self.base = clock.now()
        if self.base + offset > clock.now():
            clock.set(self.base + offset)
        return clock.now()

    def claim(self, now: float) -> str | None:
        s = self.storage
        if self.native:
            got = s.claim(["q"], "w", now)
            assert got is None or got.status is JobStatus.STARTED
            return None if got is None else got.id
        while True:
            if self.gated:
                got = s.claim_gated(["q"], "w", now, _limits.gate)
            else:
                got = s.claim(["q"], "w", now)
                if got is not None and got.rate_limit is not None and not _limits.admit(s, got):
                    continue
            if got is None:
                return None
            if got.status is JobStatus.STARTED:
                return got.id

    def change(self, job_id: str, status: JobStatus, expected: JobStatus,
               at_front: bool = False) -> None:
        rec = self.storage.get(job_id)
        assert rec is not None
        rec.status, rec.at_front = status, at_front
        if status is JobStatus.FINISHED:
            rec.ended_at = rec.started_at
        assert self.storage.put(rec, expected={expected})


@contextmanager
def _controlled_clock(storage: Storage) -> Iterator[None]:
    """The generic path reads ``storage.clock``: on a storage whose clock the test
    cannot set (no ``manual_clock``), a manual one stands in for this test."""
    if "limit_rule" in storage.capabilities or isinstance(storage.clock, ManualClock):
        yield
        return
    real = storage.clock
    storage.clock = ManualClock(T0)
    try:
        yield
    finally:
        storage.clock = real


def _state(raw: str | None) -> tuple[list[str], list[float], list[str]]:
    st = _limits._State.loads(raw)
    return st.holders, [float(x) for x in st.starts], st.waiting


def _run(storage: Storage, steps: list[Step]) -> list[str | None]:
    """Run ``steps`` on the storage and on the model, comparing after each; the claims' answers.

    An end, retry or removal of a job the model does not hold in the status it
    needs is left out (a random sequence is planned on the moments asked for;
    a storage admitting at its clock's moments may have diverged, rightly).
    """
    model, drive = _Model(), _Driver(storage)
    answers: list[str | None] = []
    keys: set[str] = set()
    with _controlled_clock(storage):
        for n, step in enumerate(steps):
            kind = step[0]
            if kind == "enqueue":
                job_id, limit = step[1], step[2]
                storage.insert([JobRecord(
                    id=job_id, func_name="tasks.f", origin="q", payload=b"p",
                    rate_limit=None if limit is None else limit.dumps())])
                model.queue.append(job_id)
                model.status[job_id], model.limit[job_id] = JobStatus.QUEUED, limit
                if limit is not None:
                    keys.add(limit.key)
            elif kind == "claim":
                now = drive.moment(step[1])
                got, expected = drive.claim(now), model.claim(now)
                assert got == expected, (n, step, got, expected)
                answers.append(got)
            elif kind in ("end", "retry"):
                job_id = step[1]
                if model.status.get(job_id) is not JobStatus.STARTED:
                    # a random sequence planned on other moments (the clock's): not started here
                    continue
                if kind == "end":
                    drive.change(job_id, JobStatus.FINISHED, JobStatus.STARTED)
                    model.status[job_id] = JobStatus.FINISHED
                else:  # back to the queue's end, still listed as a holder
                    drive.change(job_id, JobStatus.QUEUED, JobStatus.STARTED)
                    model.status[job_id] = JobStatus.QUEUED
                    model.queue.append(job_id)
            elif kind == "remove":
                if model.status.get(step[1]) is not JobStatus.RATE_LIMITED:
                    continue
                assert storage.remove(step[1])
                del model.status[step[1]]
                if step[1] in model.queue:
                    model.queue.remove(step[1])
            elif kind == "wake":  # as the engine wakes the first in line: to the queue's front
                job_id = model.first_waiting(step[1])
                if job_id is not None:
                    drive.change(job_id, JobStatus.QUEUED, JobStatus.RATE_LIMITED, at_front=True)
                    model.status[job_id] = JobStatus.QUEUED
                    model.queue.insert(0, job_id)
            else:  # pragma: no cover - a typo in a table
                raise ValueError(step)
            ids = sorted(model.limit)
            found = {i: r.status for i, r in zip(ids, storage.get_many(ids), strict=True)
                     if r is not None}
            assert found == model.status, (n, step)
            assert storage.ids("q", JobStatus.QUEUED) == model.queue, (n, step)
            for key in keys:
                stored = storage.get_value(_limits.PREFIX + key)
                assert (stored is None) == (model.raw.get(_limits.PREFIX + key) is None), (n, key)
                if stored is not None:
                    json.loads(stored)  # plain JSON, whoever wrote it
                assert _state(stored) == _state(model.raw.get(_limits.PREFIX + key)), (n, step)
    return answers


def _needs_values(storage: Storage) -> None:
    if "values" not in storage.capabilities:
        pytest.skip(f"{type(storage).__name__} does not declare 'values'")


def _random_steps(seed: int, count: int) -> list[Step]:
    rnd = random.Random(seed)
    limits = [RateLimit("a", concurrency=2), RateLimit("b", concurrency=3, limit=4, period=5.0),
              RateLimit("c", limit=20, period=8.0)]
    steps: list[Step] = []
    started: list[str] = []
    made, t = 0, 0.0
    # The steps are planned against the model, so each one is legal (an end of a started job…).
    model = _Model()
    for _ in range(count):
        roll = rnd.random()
        if roll < 0.25 or made < 4:
            job_id, made = f"j{made:03d}", made + 1
            limit = rnd.choice([*limits, None])
            step: Step = ("enqueue", job_id, limit)
            model.queue.append(job_id)
            model.status[job_id], model.limit[job_id] = JobStatus.QUEUED, limit
        elif roll < 0.55:
            t += rnd.choice([0.0, 0.0, 0.25, 0.7, 1.5, 4.0, 9.0])
            # now and then a claim stamped a little earlier (another process's clock)
            at = t - 0.1 if rnd.random() < 0.1 else t
            step = ("claim", at)
            got = model.claim(T0 + at)
            if got is not None:
                started.append(got)
        elif roll < 0.8 and started:
            job_id = started.pop(rnd.randrange(len(started)))
            kind = "retry" if rnd.random() < 0.3 else "end"
            step = (kind, job_id)
            model.status[job_id] = JobStatus.QUEUED if kind == "retry" else JobStatus.FINISHED
            if kind == "retry":
                model.queue.append(job_id)
        elif roll < 0.92:
            key = rnd.choice(limits).key
            step = ("wake", key)
            job_id_or_none = model.first_waiting(key)
            if job_id_or_none is not None:
                model.status[job_id_or_none] = JobStatus.QUEUED
                model.queue.insert(0, job_id_or_none)
        else:
            waiting = [i for i, s in model.status.items() if s is JobStatus.RATE_LIMITED]
            if not waiting:
                continue
            job_id = rnd.choice(waiting)
            step = ("remove", job_id)
            del model.status[job_id]
        steps.append(step)
    return steps


class LimitRuleConformance:
    """:data:`plugq.storage.ADMISSION_RULE` on the storage, against the reference."""

    def test_admission_concurrency_line_and_wake_order(self, storage: Storage) -> None:
        _needs_values(storage)
        two = RateLimit("k", concurrency=2)
        steps: list[Step] = [("enqueue", i, two) for i in "abcd"]
        steps += [("claim", 0), ("claim", 0), ("claim", 0), ("end", "a"), ("wake", "k"),
                  ("claim", 1), ("claim", 1), ("end", "b"), ("wake", "k"), ("claim", 2),
                  ("claim", 2)]
        assert _run(storage, steps) == ["a", "b", None, "c", None, "d", None]

    def test_admission_rate_form_frees_a_start_exactly_at_the_period(self, storage: Storage) -> None:
        _needs_values(storage)
        two = RateLimit("r", limit=2, period=10)
        steps: list[Step] = [("enqueue", i, two) for i in "abc"]
        steps += [("claim", 0), ("claim", 1), ("claim", 2), ("wake", "r"), ("claim", 9.5),
                  ("wake", "r"), ("claim", 10.0), ("enqueue", "d", two), ("claim", 10.5),
                  ("wake", "r"), ("claim", 11.0)]
        assert _run(storage, steps) == ["a", "b", None, None, "c", None, "d"]

    def test_admission_repairs_holders_on_a_retry_and_a_removal(self, storage: Storage) -> None:
        _needs_values(storage)
        both = RateLimit("m", concurrency=1, limit=3, period=5)
        steps: list[Step] = [("enqueue", i, both) for i in "abc"]
        steps += [("enqueue", "plain", None), ("claim", 0), ("retry", "a"), ("claim", 1),
                  ("claim", 1), ("remove", "c"), ("end", "b"), ("wake", "m"), ("claim", 2),
                  ("end", "a"), ("enqueue", "d", both), ("claim", 3), ("wake", "m"),
                  ("claim", 6)]
        # c and a are refused behind b and go in line, plain runs past them; d waits
        # for the start at 0 and b's at 1 to leave the period (3 starts per 5 s)
        assert _run(storage, steps) == ["a", "b", "plain", "a", None, "d"]

    def test_admission_merges_starts_by_slice_above_the_exact_limit(self, storage: Storage) -> None:
        _needs_values(storage)
        wide = RateLimit("w", limit=20, period=16)  # slices of 1 s
        exact = RateLimit("x", limit=_limits.STARTS_EXACT, period=16)  # every start kept
        steps: list[Step] = [("enqueue", f"j{i:02d}", wide) for i in range(8)]
        steps += [("claim", at) for at in (0.1, 0.5, 0.999999, 1.0, 3.0, 2.5, 3.25, 17.5)]
        steps += [("enqueue", f"x{i}", exact) for i in range(3)]
        steps += [("claim", at) for at in (18.0, 18.25, 18.5)]
        assert _run(storage, steps) == [f"j{i:02d}" for i in range(8)] + ["x0", "x1", "x2"]

    def test_admission_tidies_a_long_holder_list(self, storage: Storage) -> None:
        _needs_values(storage)
        wide = RateLimit("t", concurrency=100)
        n = _limits.TIDY_AT + 3
        steps: list[Step] = [("enqueue", f"j{i:02d}", wide) for i in range(n)]
        steps += [("claim", 0)] * (_limits.TIDY_AT + 1)
        steps += [("end", f"j{i:02d}") for i in range(10)]
        steps += [("claim", 1)] * 2
        assert _run(storage, steps)[-2:] == [f"j{_limits.TIDY_AT + 1:02d}",
                                               f"j{_limits.TIDY_AT + 2:02d}"]

    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_admission_random_sequences_match_the_reference(
        self, storage: Storage, seed: int
    ) -> None:
        _needs_values(storage)
        _run(storage, _random_steps(seed, 120))
