"""RateLimit on Redis: the admission inside the claim scripts (capability ``limit_rule``).

The rule itself is checked against the engine's reference by the storage
conformance suite (plugq.testing.storage_limits, run on Redis by
tests/test_redis_storage.py); here: that the worker pays no round trip for
it (no generic read or compare-and-set), the claim ahead inside the put, and
what the put tells the end of a limited job.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

pytest.importorskip("rq")

from plugq import JobStatus, Queue, RateLimit, Worker
from plugq._limits import _State
from plugq.storage import JobRecord
from plugq.storage import JobStatus as Status
from plugq.testing import tasks

pytestmark = pytest.mark.redis


@pytest.fixture(params=["redis", "fakeredis"])
def store(request: pytest.FixtureRequest) -> Any:
    from plugq_rq.storage import RedisStorage

    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        server.flushall()
        s = RedisStorage(server.url)
    else:
        s = RedisStorage(f"fakeredis://limits-{uuid.uuid4().hex}")
    yield s
    s.close()


def _record(job_id: str, limit: RateLimit | None) -> JobRecord:
    return JobRecord(id=job_id, func_name="tasks.f", origin="q", payload=b"p",
                     rate_limit=None if limit is None else limit.dumps())


def test_a_limited_worker_never_reads_or_swaps_the_limit_when_nobody_waits(store, monkeypatch):
    """Admission in the claim (and the claim ahead), the line read by the put: no extra call."""
    calls: list[str] = []
    for name in ("get_value", "swap_value"):
        monkeypatch.setattr(store, name, lambda *a, _n=name, **k: calls.append(_n))
    q = Queue("rl", connection=store)
    limit = RateLimit("solo", concurrency=2, limit=100, period=60)
    jobs = [q.enqueue(tasks.add, i, 1, rate_limit=limit) for i in range(6)]
    w = Worker([q], connection=store)
    assert w.work(burst=True)
    assert [j.get_status() for j in jobs] == [JobStatus.FINISHED] * 6
    assert [j.return_value() for j in jobs] == [i + 1 for i in range(6)]
    assert calls == []
    monkeypatch.undo()
    st = _State.loads(store.get_value("limit:solo"))
    assert st.waiting == [] and st.started() == 6
    # ended holders are repaired away when a claim finds no slot: at most the limit's 2 stay
    assert st.holders[-1] == jobs[-1].id and len(st.holders) <= 2


def test_the_put_that_ends_a_limited_job_tells_whether_anyone_waits(store):
    one = RateLimit("k", concurrency=1)
    store.insert([_record("a", one), _record("b", one)])
    a = store.claim(["q"], "w", 1000.0)
    assert a is not None and a.id == "a"
    assert store.claim(["q"], "w", 1000.0) is None  # b refused: in line
    b = store.get("b")
    assert b is not None and b.status is Status.RATE_LIMITED and b.attempts == 0
    assert b.started_at is None and b.worker_name is None
    assert store.ids("q", Status.RATE_LIMITED) == ["b"]
    assert store.limit_waiting("a") is None  # no put ended it yet
    a.status = Status.FINISHED
    assert store.put(a, expected={Status.STARTED})
    assert store.limit_waiting("a") is True
    assert store.limit_waiting("a") is None  # told once
    b.status, b.at_front = Status.QUEUED, True
    assert store.put(b, expected={Status.RATE_LIMITED})
    got = store.claim(["q"], "w", 1001.0)
    assert got is not None and got.id == "b" and got.attempts == 1
    got.status = Status.FINISHED
    assert store.put(got, expected={Status.STARTED})
    assert store.limit_waiting("b") is False
    assert _State.loads(store.get_value("limit:k")) == _State(["b"], [], [])


def test_the_claim_ahead_admits_and_passes_a_refused_job(store):
    """The put ending a worker's job claims its next one: a refused one waits, the next is taken."""
    one = RateLimit("k", concurrency=1)
    store.insert([_record("x", one)])
    x = store.claim(["q"], "other", 1000.0)  # holds k's one slot
    assert x is not None and x.id == "x"
    # "zb" sorts after "b" and "a" before both: the registry must keep the order of entry
    store.insert([_record("p", None), _record("zb", one), _record("b", one), _record("a", one),
                  _record("c", None)])
    p = store.claim(["q"], "w", 1000.0)
    assert p is not None and p.id == "p"
    p.status = Status.FINISHED
    assert store.put(p, expected={Status.STARTED}, expected_attempts=p.attempts)
    assert store.ids("q", Status.RATE_LIMITED) == ["zb", "b", "a"]  # one script refused all three
    assert store.get("c").status is Status.STARTED  # type: ignore[union-attr]  # claimed ahead
    nxt = store.claim(["q"], "w", 1001.0)
    assert nxt is not None and nxt.id == "c"
    assert _State.loads(store.get_value("limit:k")).waiting == ["zb", "b", "a"]
    assert store.limit_waiting("p") is None  # p had no limit


def test_a_rate_limit_that_does_not_parse_is_quarantined_not_admitted(store):
    store.insert([_record("bad", None)])
    store.redis.hset("rq:job:bad", "plugq_rate_limit", '["k", 0, null, null]')
    assert store.claim(["q"], "w", 1000.0) is None
    got = store.get("bad")
    assert got is not None and got.status is Status.FAILED
    assert "rate_limit" in (got.exc_info or "")
    assert store.get_value("limit:k") is None


def test_ids_that_need_escaping_keep_their_place_in_the_state(store):
    one = RateLimit("k", concurrency=1)
    odd = ['first "quoted" \\ /slashed/', "tab\there é ✓", "plain"]
    store.insert([_record(i, one) for i in odd])
    got = store.claim(["q"], "w", 1000.0)
    assert got is not None and got.id == odd[0]
    assert store.claim(["q"], "w", 1000.0) is None
    assert _State.loads(store.get_value("limit:k")) == _State([odd[0]], [], odd[1:])


def test_the_lua_rule_uses_the_engines_constants():
    import re

    from plugq import _limits
    from plugq_rq import _lua

    found = re.search(r"local LIMIT_TIDY_AT, LIMIT_EXACT, LIMIT_SLICES = (\d+), (\d+), (\d+)",
                      _lua.LIMIT_RULE)
    assert found is not None
    assert tuple(map(int, found.groups())) == (
        _limits.TIDY_AT, _limits.STARTS_EXACT, _limits.STARTS_SLICES)
