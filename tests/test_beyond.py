"""plugq's features beyond RQ: manual-clock, query-plan and multi-process tests.

The per-backend behaviour is in plugq.testing.beyond.BeyondConformance (run
by every BackendConformance subclass) and the primitives in
plugq.testing.storage_beyond (run by every StorageConformance subclass).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from _cli_helpers import PLUGQ, clean_env
from plugq import JobStatus, ManualClock, Queue, Unique, cron
from plugq._engine import engine_for
from plugq.testing import tasks
from plugq_memory import MemoryStorage
from plugq_sqlite import SqliteStorage

MIDNIGHT = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


@pytest.fixture
def clocked():
    clock = ManualClock(MIDNIGHT + 90)  # 00:01:30
    storage = MemoryStorage(f"memory://beyond-{uuid.uuid4().hex}", clock=clock)
    return engine_for(storage), clock


# -- cron on a manual clock ---------------------------------------------------------------


def test_a_day_of_an_hourly_cron_in_milliseconds(clocked):
    backend, clock = clocked
    entry = cron.CronEntry(name="hourly", func_name="plugq.testing.tasks.add",
                           queue_name="cron", args=(1, 1), cron="0 * * * *")
    schedulers = [cron.Scheduler(backend, [entry]) for _ in range(3)]
    started = time.perf_counter()
    made = []
    for _ in range(24 * 12):  # every five minutes, for a day
        clock.advance(300)
        for s in schedulers:
            made += s.tick()
    elapsed = time.perf_counter() - started
    ticks = sorted(j.meta["cron_tick"] for j in made)
    assert ticks == [MIDNIGHT + 3600 * h for h in range(1, 25)]
    assert Queue("cron", connection=backend).count == 24
    assert elapsed < 2.0, elapsed


def test_missed_ticks_are_enqueued_once_never_as_a_burst(clocked):
    backend, clock = clocked
    entry = cron.CronEntry(name="every-minute", func_name="plugq.testing.tasks.add",
                           queue_name="cron", args=(1, 1), interval=60)
    s = cron.Scheduler(backend, [entry])
    assert len(s.tick()) == 1  # a new interval entry runs at once
    clock.advance(10 * 3600)   # everything was down for ten hours
    late = s.tick()
    assert len(late) == 1
    assert s.tick() == []
    [state] = cron.status(backend)
    assert state["next_run"] > clock.now()
    assert state["next_run"] - clock.now() <= 60
    clock.advance(60)
    assert len(s.tick()) == 1


def test_a_changed_schedule_starts_afresh(clocked):
    backend, clock = clocked
    old = cron.CronEntry(name="e", func_name="plugq.testing.tasks.add", queue_name="cron",
                         interval=3600)
    cron.Scheduler(backend, [old]).tick()
    new = cron.CronEntry(name="e", func_name="plugq.testing.tasks.add", queue_name="cron",
                         cron="*/5 * * * *")
    s = cron.Scheduler(backend, [new])
    assert s.tick() == []
    clock.advance(300)
    assert len(s.tick()) == 1
    assert cron.status(backend)[0]["schedule"] == "*/5 * * * *"


def test_register_validates_and_names_entries_stably():
    cron.clear()
    try:
        with pytest.raises(ValueError, match="exactly one"):
            cron.register(tasks.add)
        with pytest.raises(ValueError, match="exactly one"):
            cron.register(tasks.add, interval=5, cron="* * * * *")
        with pytest.raises(ValueError, match="not a valid cron"):
            cron.register(tasks.add, cron="every day")
        with pytest.raises(ValueError, match="interval"):
            cron.register(tasks.add, interval=0)
        a = cron.register(tasks.add, args=(1, 2), interval=5)
        b = cron.register(tasks.add, args=(1, 2), interval=5)
        c = cron.register(tasks.add, args=(2, 2), interval=5)
        assert a.name == b.name != c.name
        assert len(cron.registered()) == 2
    finally:
        cron.clear()


def test_load_a_config_file_or_module(tmp_path):
    conf = tmp_path / "cron_conf.py"
    conf.write_text("from plugq import cron\n"
                    "cron.register('plugq.testing.tasks.add', args=(1, 2), interval=30)\n")
    cron.clear()
    try:
        [entry] = cron.load(str(conf))
        assert entry.interval == 30 and entry.func_name == "plugq.testing.tasks.add"
        with pytest.raises(ValueError, match="no such file"):
            cron.load(str(tmp_path / "absent.py"))
        with pytest.raises(ValueError, match="failed to import"):
            cron.load("no_such_module_here")
    finally:
        cron.clear()


def test_cron_info_shows_last_and_next_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'info.db'}"
    conf = tmp_path / "conf.py"
    conf.write_text("from plugq import cron\n"
                    "cron.register('plugq.testing.tasks.add', queue_name='c', args=(1, 2), "
                    "cron='0 6 * * *')\n"
                    "cron.register('plugq.testing.tasks.add', queue_name='c', args=(1, 3), "
                    "interval=600)\n")
    env = clean_env(PLUGQ_URL=url)
    run = subprocess.run([PLUGQ, "cron", str(conf), "--burst"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    info = subprocess.run([PLUGQ, "info", "--json"], env=env, capture_output=True, text=True,
                          timeout=60)
    import json

    snap = json.loads(info.stdout)
    by_schedule = {e["schedule"]: e for e in snap["cron"]}
    assert by_schedule["every 600s"]["last_run"] is not None
    assert by_schedule["every 600s"]["next_run"] > by_schedule["every 600s"]["last_run"]
    assert by_schedule["0 6 * * *"]["last_run"] is None
    assert snap["queues"]["c"]["queued"] == 1
    text = subprocess.run([PLUGQ, "info"], env=env, capture_output=True, text=True, timeout=60)
    assert "Cron" in text.stdout and "every 600s" in text.stdout


# -- unique keys on a manual clock ----------------------------------------------------------


def test_a_unique_keys_period_on_the_manual_clock(clocked):
    backend, clock = clocked
    q = Queue("u", connection=backend)
    hourly = Unique("digest", period=3600)
    first = q.enqueue(tasks.add, 1, 1, unique=hourly)
    clock.advance(3599)
    assert q.enqueue(tasks.add, 1, 1, unique=hourly).id == first.id
    clock.advance(1)
    second = q.enqueue(tasks.add, 1, 1, unique=hourly)
    assert second.id != first.id
    assert q.count == 2
    with pytest.raises(ValueError):
        Unique("k", period=0)
    with pytest.raises(ValueError):
        Unique("")


# -- Redis: issue 16 natively, beside rq's own keys ---------------------------------------------
# The contract itself runs on Redis through StorageConformance (tests/test_redis_storage.py)
# and BackendConformance (tests/test_rq_backend.py), real server and fakeredis; these
# check the layout rq's tools see (docs/redis.md, "Beyond rq").

REDIS_FEATURES = {"priority", "unique_keys", "progress", "values", "rate_limit", "workflows"}


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["redis", "fakeredis"])
def test_redis_runs_every_beyond_feature(request, kind):
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        server.flushall()
        url = server.url
    else:
        url = f"fakeredis://beyond-{uuid.uuid4().hex}"
    q = Queue("x", connection=url)
    assert q.backend.features >= REDIS_FEATURES  # so the conformance runs, never skips
    cron.Scheduler(q.backend)  # no refusal


@pytest.fixture
def redis_store(redis_server):
    from plugq_rq.storage import RedisStorage

    redis_server.flushall()
    storage = RedisStorage(redis_server.url)
    yield storage
    storage.close()


@pytest.mark.redis
def test_redis_priority_0_stays_in_rqs_list_other_levels_beside_it(redis_store):
    r = redis_store.redis
    q = Queue("lv", connection=redis_store)
    zero = q.enqueue(tasks.add, 0, 0)
    high = q.enqueue(tasks.add, 5, 5, priority=5)
    low = q.enqueue(tasks.add, -1, -1, priority=-1)
    assert r.lrange("rq:queue:lv", 0, -1) == [zero.id.encode()]  # what rq's worker pops
    assert r.lrange("plugq:priority:lv:5", 0, -1) == [high.id.encode()]
    assert r.lrange("plugq:priority:lv:-1", 0, -1) == [low.id.encode()]
    assert r.zrange("plugq:levels:lv", 0, -1, withscores=True) == [(b"-1", -1.0), (b"5", 5.0)]
    assert q.get_job_ids() == [high.id, zero.id, low.id] and q.count == 3
    taken = [redis_store.claim(["lv"], "w", time.time()) for _ in range(3)]
    assert [t.id for t in taken if t] == [high.id, zero.id, low.id]
    # emptied levels leave the index: the next claim looks at rq's list alone
    assert not r.exists("plugq:levels:lv", "plugq:priority:lv:5", "plugq:priority:lv:-1")


@pytest.mark.redis
def test_redis_priority_claim_is_an_index_lookup(redis_store):
    """A claim sends Redis the same commands whatever the depth and spread of levels."""
    r = redis_store.redis

    def claim_commands(depth: int, spread: int) -> dict[str, int]:
        r.flushall()
        q = Queue("idx", connection=redis_store)
        q.enqueue_many([Queue.prepare_data(tasks.add, (i, i),
                                           priority=random.randint(-spread, spread))
                        for i in range(depth)])
        top = q.enqueue(tasks.add, 0, 0, priority=10)
        redis_store.claim(["elsewhere"], "w", time.time())  # the script is loaded (not counted)
        r.config_resetstat()
        got = redis_store.claim(["idx"], "w", time.time())
        assert got is not None and got.id == top.id
        return {k: v["calls"] for k, v in r.info("commandstats").items()}

    deep, shallow = claim_commands(5000, 3), claim_commands(10, 0)
    assert deep == shallow  # not one command more for 500x the jobs and 7 levels
    # no listing or scan of a list, a level set or the keyspace: the top level is ZREVRANGE 0 0
    assert not {"cmdstat_lrange", "cmdstat_zrange", "cmdstat_scan", "cmdstat_keys"} & deep.keys()
    assert deep["cmdstat_zrevrange"] == 1


@pytest.mark.redis
def test_redis_rq_worker_runs_the_priority_0_jobs_and_leaves_the_rest(redis_store, tmp_path):
    from redis import Redis
    from rq import Queue as RQQueue
    from rq import SimpleWorker

    out = tmp_path / "rq.txt"
    q = Queue("mix", connection=redis_store)
    q.enqueue(tasks.append_line, str(out), "zero")
    high = q.enqueue(tasks.append_line, str(out), "high", priority=3)
    conn = Redis.from_url(redis_store.url)
    assert RQQueue("mix", connection=conn).count == 1  # rq sees level 0 only
    SimpleWorker([RQQueue("mix", connection=conn)], connection=conn).work(burst=True)
    assert out.read_text().splitlines() == ["zero"]
    assert q.get_job_ids() == [high.id]


@pytest.mark.redis
def test_redis_unique_key_index_progress_field_values_and_rate_limited_registry(redis_store):
    from plugq import RateLimit, Worker

    r = redis_store.redis
    q = Queue("u", connection=redis_store)
    job = q.enqueue(tasks.add, 1, 1, unique=Unique("report"))
    assert r.zrange("plugq:unique:report", 0, -1) == [job.id.encode()]
    assert q.enqueue(tasks.add, 1, 1, unique=Unique("report")).id == job.id
    data = r.hget(f"rq:job:{job.id}", "data")
    job.set_progress(0.5, message="half")
    assert b"half" in r.hget(f"rq:job:{job.id}", "plugq_progress")
    assert r.hget(f"rq:job:{job.id}", "data") == data  # one field written, not the record
    job.delete()
    assert not r.exists("plugq:unique:report")  # a deleted job leaves the index
    hourly = RateLimit("api", limit=1, period=3600)
    jobs = [q.enqueue(tasks.add, i, i, rate_limit=hourly) for i in range(3)]
    Worker([q], connection=redis_store).work(burst=True)
    assert [j.get_status() for j in jobs] == [JobStatus.FINISHED] + [JobStatus.RATE_LIMITED] * 2
    waiting = [j.id.encode() for j in jobs[1:]]
    assert r.zrange("plugq:rate_limited:u", 0, -1) == waiting  # in the order they waited
    assert q.backend.job_ids("u", JobStatus.RATE_LIMITED) == [j.id for j in jobs[1:]]
    assert r.hget(f"rq:job:{jobs[1].id}", "status") == b"rate_limited"
    assert list(redis_store.values("limit:")) == ["limit:api"]
    assert r.hexists("plugq:values", "limit:api")  # the limit's state, one named value


# -- the claim stays an index lookup ----------------------------------------------------------


def test_sqlite_priority_claim_is_an_index_lookup(tmp_path):
    from plugq_sqlite import backend as impl

    db = tmp_path / "plan.db"
    storage = SqliteStorage(f"sqlite:///{db}")
    q = Queue("big", connection=storage)
    q.enqueue_many([Queue.prepare_data(tasks.add, (i, i), priority=random.randint(-3, 3))
                    for i in range(5000)])
    top = q.enqueue(tasks.add, 0, 0, priority=10)
    conn = sqlite3.connect(db)
    try:
        conn.execute("ANALYZE")
        plan = " | ".join(row[3] for row in conn.execute(
            "EXPLAIN QUERY PLAN " + impl._CLAIM, (1.0, "w", 1.0, "big", 1.0)))
    finally:
        conn.close()
    assert "jobs_by_status" in plan, plan
    assert "TEMP B-TREE" not in plan and "SCAN jobs" not in plan, plan
    started = time.perf_counter()
    got = [storage.claim(["big"], "w", time.time()) for _ in range(3)]
    assert time.perf_counter() - started < 0.5
    assert got[0] is not None and got[0].id == top.id
    assert [r.priority for r in got if r] == [10, 3, 3]
    storage.close()


@pytest.mark.postgres
def test_postgres_priority_claim_is_an_index_lookup(postgres_url):
    import psycopg

    from plugq_postgres import PostgresStorage

    storage = PostgresStorage(postgres_url)
    try:
        q = Queue("idx", connection=storage)
        q.enqueue_many([Queue.prepare_data(tasks.add, (i, i), priority=random.randint(-3, 3))
                        for i in range(3000)])
        top = q.enqueue(tasks.add, 0, 0, priority=10)
        s = f'"{storage.schema}"'
        plain = postgres_url.split("?")[0]
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f"ANALYZE {s}.jobs")
            plan = "\n".join(row[0] for row in conn.execute(
                f"EXPLAIN SELECT id FROM {s}.jobs WHERE origin = 'idx' AND status = 'queued' "
                "AND (expires_at IS NULL OR expires_at > 0) ORDER BY qrank, pos LIMIT 1 "
                "FOR UPDATE SKIP LOCKED"))
        assert "jobs_by_status" in plan, plan
        assert "Sort" not in plan, plan
        got = storage.claim(["idx"], "w", time.time())
        assert got is not None and got.id == top.id
    finally:
        storage.close()


# -- many processes ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_url(request, tmp_path) -> str:
    """A store every process of a test shares: a SQLite file, a real redis-server or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    server = request.getfixturevalue("redis_server")
    server.flushall()
    return server.url


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


@pytest.mark.slow
def test_three_workers_with_cron_enqueue_each_tick_once(tmp_path, shared_url):
    url = shared_url
    out = tmp_path / "ran.txt"
    conf = tmp_path / "cron_conf.py"
    conf.write_text(textwrap.dedent(f"""
        from plugq import cron
        cron.register("plugq.testing.tasks.append_line", queue_name="cronq",
                      args=({str(out)!r}, "tick"), interval=1)
    """))
    env = clean_env(PLUGQ_URL=url)
    procs = [
        _spawn([PLUGQ, "worker", "cronq", "--cron", str(conf), "--name", f"w{i}"], env,
               tmp_path / f"w{i}.log")
        for i in range(3)
    ]
    try:
        time.sleep(6.5)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)
    q = Queue("cronq", connection=url)
    ids = [i for status in JobStatus for i in q.backend.job_ids("cronq", status)]
    recs = [r for r in q.backend.fetch_jobs(ids) if r is not None]
    ticks = [q.fetch_job(r.id).meta["cron_tick"] for r in recs]  # type: ignore[union-attr]
    logs = "\n".join((tmp_path / f"w{i}.log").read_text() for i in range(3))
    assert len(ticks) == len(set(ticks)), logs  # no tick enqueued twice
    assert 5 <= len(ticks) <= 8, (sorted(ticks), logs)
    gaps = [b - a for a, b in zip(sorted(ticks), sorted(ticks)[1:], strict=False)]
    assert all(abs(g - 1.0) < 1e-6 for g in gaps), gaps
    finished = [r for r in recs if r.status is JobStatus.FINISHED]
    assert len(out.read_text().splitlines()) == len(finished)  # each ran once


_PRODUCER = """
import sys, time
from plugq import Queue, Unique
from plugq.testing import tasks
url, start = sys.argv[1], float(sys.argv[2])
q = Queue("race", connection=url)
while time.time() < start:
    time.sleep(0.001)
ids = {q.enqueue(tasks.add, 1, 2, unique=Unique("race-key")).id for _ in range(15)}
print(" ".join(sorted(ids)))
"""


def _race(url: str) -> None:
    start = time.time() + 2.0
    procs = [
        subprocess.Popen([sys.executable, "-c", _PRODUCER, url, str(start)], env=clean_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=60)
        assert p.returncode == 0, stderr
        outs.append(stdout.split())
    seen = {i for ids in outs for i in ids}
    assert len(seen) == 1, outs
    assert Queue("race", connection=url).count == 1


@pytest.mark.slow
def test_racing_producer_processes_get_one_unique_job(shared_url):
    _race(shared_url)


@pytest.mark.slow
@pytest.mark.postgres
def test_racing_producer_processes_get_one_unique_job_postgres(postgres_url):
    _race(postgres_url)


@pytest.mark.slow
def test_a_worker_process_takes_jobs_by_priority(tmp_path, shared_url):
    url = shared_url
    out = tmp_path / "order.txt"
    q = Queue("prio", connection=url)
    prios = [random.randint(-5, 5) for _ in range(30)]
    for n, p in enumerate(prios):
        q.enqueue(tasks.append_line, str(out), f"{p} {n}", priority=p)
    run = subprocess.run([PLUGQ, "worker", "prio", "--burst"], env=clean_env(PLUGQ_URL=url),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    order = [tuple(map(int, line.split())) for line in out.read_text().splitlines()]
    assert order == sorted(order, key=lambda pn: (-pn[0], pn[1]))


# -- schema upgrades ----------------------------------------------------------------------------


def test_a_version_1_sqlite_file_is_upgraded_in_place(tmp_path):
    from plugq_sqlite import schema

    db = tmp_path / "v1.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    schema._run_script(conn, schema.SCHEMA_V1)
    conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("COMMIT")
    v1 = schema.JOB_COLUMNS[: schema.JOB_COLUMNS.index("attempts") + 1]
    conn.execute(
        f"INSERT INTO jobs ({', '.join(v1)}, pos) VALUES ({', '.join('?' * len(v1))}, 1)",
        ("old", "plugq.testing.tasks.add", "q", b"p", "pickle", "queued", "", 1.0, 1.0, None,
         None, 180.0, 500, 1, None, b"", None, None, None, None, None, None, 0, None, None,
         None, None, 0, 0),
    )
    conn.close()
    storage = SqliteStorage(f"sqlite:///{db}")
    try:
        rec = storage.get("old")
        assert rec is not None and rec.priority == 0 and rec.unique_key is None
        assert storage.ids("q", JobStatus.QUEUED) == ["old"]
        got = storage.claim(["q"], "w", time.time())
        assert got is not None and got.id == "old"
    finally:
        storage.close()
    check = sqlite3.connect(db)
    try:
        assert check.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    finally:
        check.close()


# -- rate limits ----------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def clocked_both(request, tmp_path):
    """Memory admits through compare-and-set; SQLite inside its claim (gated_claim)."""
    clock = ManualClock(MIDNIGHT + 90)
    if request.param == "memory":
        storage = MemoryStorage(f"memory://beyond-{uuid.uuid4().hex}", clock=clock)
    else:
        storage = SqliteStorage(f"sqlite:///{tmp_path / 'clocked.db'}", clock=clock)
    yield engine_for(storage), clock
    storage.close()


def test_a_start_behind_the_last_one_keeps_the_order():
    """A process whose clock is a little behind adds a start before the last: still sorted."""
    from plugq import RateLimit
    from plugq._limits import _State

    st, limit = _State(), RateLimit("k", limit=5, period=10)
    for moment in (1.0, 3.0, 2.0, 0.5, 4.0):
        st.add_start(limit, moment)
    assert st.starts == [0.5, 1, 1.0, 1, 2.0, 1, 3.0, 1, 4.0, 1]
    st.expire(limit, 12.0)  # a start at 2.0 s or before has left the period
    assert st.starts == [3.0, 1, 4.0, 1] and st.started() == 2


def test_a_rate_limits_period_on_the_manual_clock(clocked_both):
    from plugq import RateLimit, Worker

    backend, clock = clocked_both
    q = Queue("rl", connection=backend)
    per_minute = RateLimit("partner-api", limit=2, period=60)
    jobs = [q.enqueue(tasks.add, i, 0, rate_limit=per_minute) for i in range(5)]

    def statuses() -> list[str]:
        return [j.get_status().value for j in jobs]

    Worker([q], connection=backend).work(burst=True)
    assert statuses() == ["finished"] * 2 + ["rate_limited"] * 3
    clock.advance(59.9)
    backend.maintenance()
    Worker([q], connection=backend).work(burst=True)
    assert statuses() == ["finished"] * 2 + ["rate_limited"] * 3
    clock.advance(0.1)
    backend.maintenance()
    Worker([q], connection=backend).work(burst=True)
    assert statuses() == ["finished"] * 4 + ["rate_limited"]  # first in line, first out
    clock.advance(60)
    backend.maintenance()
    Worker([q], connection=backend).work(burst=True)
    assert statuses() == ["finished"] * 5


def test_a_high_concurrency_keeps_its_holder_list_short(clocked_both):
    from plugq import RateLimit, Worker
    from plugq._limits import TIDY_AT, _State

    backend, _ = clocked_both
    q = Queue("rl", connection=backend)
    jobs = [q.enqueue(tasks.add, i, 0, rate_limit=RateLimit("wide", concurrency=1000))
            for i in range(3 * TIDY_AT)]
    Worker([q], connection=backend).work(burst=True)
    assert all(j.get_status() == JobStatus.FINISHED for j in jobs)
    state = _State.loads(backend.storage.get_value("limit:wide"))
    assert 1 <= len(state.holders) <= TIDY_AT  # ended holders were swept, not kept by the 1000


@pytest.mark.parametrize(("limit_n", "gap", "share"), [(300, 0.02, 0.95), (16, 0.5, 1.0)])
def test_a_rate_limits_state_stays_bounded_and_never_runs_over(limit_n, gap, share):
    """Above STARTS_EXACT starts per period, merged starts leave late, never early.

    Up to STARTS_EXACT, exactly the sliding window's admissions; above, at
    least ``share`` of them (against an exact sliding log of the same arrivals).
    """
    from plugq import RateLimit
    from plugq._limits import STARTS_EXACT, STARTS_SLICES, _decide

    limit = RateLimit("big", limit=limit_n, period=10.0)
    rnd = random.Random(16)
    arrivals, t = [], 0.0
    for _ in range(4000):
        t += rnd.uniform(0.0, gap)  # arrivals outpace the limit: it binds
        arrivals.append(t)
    raw, ours = None, []
    for n, now in enumerate(arrivals):
        admitted, st = _decide(limit, raw, f"j{n}", now, lambda ids: {})
        raw = st.dumps()
        assert len(st.starts) // 2 <= max(STARTS_EXACT, STARTS_SLICES + 1)  # (time, count) pairs
        if admitted:
            ours.append(now)
    exact: list[float] = []  # the exact sliding log, for comparison
    for now in arrivals:
        if sum(1 for a in exact if a > now - 10.0) < limit_n:
            exact.append(now)
    for i, a in enumerate(ours):
        window = [b for b in ours[: i + 1] if b > a - 10.0]
        assert len(window) <= limit_n, (a, len(window))
    assert len(ours) <= len(exact)
    assert len(ours) >= share * len(exact), (len(ours), len(exact))


def _overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


@pytest.mark.slow
@pytest.mark.parametrize("form", ["concurrency", "rate"])
def test_rate_limit_holds_across_three_worker_processes(tmp_path, form, shared_url):
    from plugq import RateLimit

    url = shared_url
    out = tmp_path / "spans.txt"
    q = Queue("rl", connection=url)
    if form == "concurrency":
        limit, n, seconds = RateLimit("shared", concurrency=2), 10, 0.4
    else:
        limit, n, seconds = RateLimit("shared", limit=3, period=1.0), 9, 0.05
    jobs = [q.enqueue(tasks.record_start_end, str(out), seconds, rate_limit=limit)
            for _ in range(n)]
    env = clean_env(PLUGQ_URL=url)
    procs = [_spawn([PLUGQ, "worker", "rl", "--name", f"w{i}"], env, tmp_path / f"w{i}.log")
             for i in range(3)]
    try:
        end = time.monotonic() + 60
        while not all(j.get_status() == JobStatus.FINISHED for j in jobs):
            assert time.monotonic() < end, [j.get_status() for j in jobs]
            time.sleep(0.1)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)
    rows = [line.split() for line in out.read_text().splitlines()]
    spans = [(float(a), float(b)) for a, b, _ in rows]
    pids = {pid for _, _, pid in rows}
    assert len(spans) == n
    assert len(pids) >= 2  # the work was spread over processes
    if form == "concurrency":
        assert _overlap(spans) == 2, spans  # never more than 2, and the slots were used
    else:
        starts = sorted(s for s, _ in spans)
        # At most 3 starts in any one-second window, measured by the tasks
        # themselves: a task starts a few ms (tens under load) after the slot
        # was granted, so the window is allowed 0.1 s of that jitter.
        assert all(b - a >= 1.0 - 0.1 for a, b in zip(starts, starts[3:], strict=False)), starts
        assert starts[-1] - starts[0] >= 2.0 - 0.01


@pytest.mark.parametrize("seed", range(20))
def test_a_limits_kept_start_texts_follow_every_change(seed):
    """_State keeps each start's JSON text beside it (pairs) and changes both in
    step: after any mix of admissions, expiries, out-of-order starts and copies,
    what dumps writes is what json.dumps writes of the state."""
    import json

    from plugq import RateLimit
    from plugq._limits import _State

    rnd = random.Random(seed)
    limit = RateLimit("k", limit=rnd.choice([3, 16, 17, 1000]), period=rnd.choice([1.0, 0.37, 10]))
    st, now = _State.loads(None), 1733612345.0
    for step in range(300):
        now += rnd.choice([0.0, 0.001, 0.01, 0.05, 0.2])
        at = now - rnd.choice([0.0, 0.0, 0.0, 0.03])  # now and then a clock a little behind
        st.expire(limit, now)
        st.add_start(limit, at)
        if rnd.random() < 0.3:
            st.holders.append(str(uuid.UUID(int=rnd.getrandbits(128))))
        text = st.dumps()
        assert text == json.dumps([st.holders, st.starts, st.waiting]), step
        # The next admission starts from a copy of the remembered state, or
        # (another process wrote last) from the JSON text itself.
        st = _State.loads(text) if rnd.random() < 0.7 else _State(*json.loads(text))
        assert (st.holders, st.starts, st.waiting) == tuple(json.loads(text))


@pytest.mark.parametrize("state", [
    ([], [], []),
    (["a", 'quote"d', "é-ü"], [1.0, 1, 2.5, 3, 1733612345.123456, 17], ["w"]),
    ([str(uuid.uuid4()) for _ in range(8)], [0.1 + 0.2, 2], [str(uuid.uuid4()) for _ in range(3)]),
])
def test_a_limits_state_is_written_as_json_and_read_back(state):
    """_State.dumps writes by hand what json.dumps writes (it remembers texts for speed)."""
    import json

    from plugq._limits import _State

    for _ in range(2):  # the second time from the remembered texts and the last-written state
        text = _State(*[list(part) for part in state]).dumps()
        assert text == json.dumps(list(state))
        back = _State.loads(text)
        assert (back.holders, back.starts, back.waiting) == tuple(list(p) for p in state)
        back.holders.append("changed")  # a copy: the remembered state is not touched
    assert _State.loads(text).holders == list(state[0])


def _held_back_behind(first, q, url, limit):
    """Once ``first`` (holding ``limit``'s only slot) runs, a job of the same limit that
    another worker claims is held back, in line; returns that job."""
    from plugq import Worker

    end = time.monotonic() + 15
    while first.get_status() != JobStatus.STARTED:
        assert time.monotonic() < end, "the first job never started"
        time.sleep(0.01)
    held = q.enqueue(tasks.add, 2, 3, rate_limit=limit)
    Worker([q], connection=url, name="second").work(burst=True)
    assert held.get_status() == JobStatus.RATE_LIMITED
    return held


@pytest.mark.parametrize("stop", ["max_jobs", "stop_flag"])
def test_a_worker_that_stops_after_a_limited_job_wakes_its_line(tmp_path, stop):
    """On SQLite a job's end hands its line to the worker's next claim (_limits.Ended); a
    worker that stops instead (max_jobs reached, or told to stop) reads it as it stops:
    the job held back while the first ran is queued again, not left waiting."""
    import threading

    from plugq import RateLimit, Worker

    url = f"sqlite:///{tmp_path}/line.db"
    q = Queue("q", connection=url)
    gate = tmp_path / "gate"
    limit = RateLimit("line", concurrency=1)
    first = q.enqueue(tasks.wait_for_file, str(gate), rate_limit=limit)
    worker = Worker([q], connection=url, name="first")
    runs = {}

    def run() -> None:
        if stop == "max_jobs":
            runs["n"] = worker.work(max_jobs=1)
        else:
            runs["n"] = worker.work()

    runner = threading.Thread(target=run)
    runner.start()
    try:
        held = _held_back_behind(first, q, url, limit)
        if stop == "stop_flag":
            worker.request_stop()
    finally:
        gate.touch()
        runner.join(timeout=30)
    assert not runner.is_alive()
    assert first.get_status() == JobStatus.FINISHED
    assert held.get_status() == JobStatus.QUEUED  # woken by the first worker as it stopped
    assert q.job_ids == [held.id]
    Worker([q], connection=url, name="third").work(burst=True)
    assert held.get_status() == JobStatus.FINISHED and held.result == 5


def test_a_limited_jobs_end_wakes_its_line_before_the_next_job_runs(tmp_path):
    """The line a limited job leaves is woken when that job ends, not when the worker next
    finds its queues empty: here the worker goes on to a long job, and the job held back
    is queued again (for any worker) while that one runs."""
    import threading

    from plugq import RateLimit, Worker

    url = f"sqlite:///{tmp_path}/line.db"
    q = Queue("q", connection=url)
    gate_a, gate_c = tmp_path / "a", tmp_path / "c"
    limit = RateLimit("line", concurrency=1)
    first = q.enqueue(tasks.wait_for_file, str(gate_a), rate_limit=limit)
    runner = threading.Thread(
        target=lambda: Worker([q], connection=url, name="first").work(burst=True))
    runner.start()
    try:
        held = _held_back_behind(first, q, url, limit)
        long = q.enqueue(tasks.wait_for_file, str(gate_c))
        gate_a.touch()
        end = time.monotonic() + 15
        while held.get_status() != JobStatus.QUEUED:
            assert time.monotonic() < end, (held.get_status(), long.get_status())
            time.sleep(0.01)
        assert long.get_status() == JobStatus.STARTED  # it woke before the long job ended
        assert first.get_status() == JobStatus.FINISHED
    finally:
        gate_a.touch()
        gate_c.touch()
        runner.join(timeout=30)
    assert not runner.is_alive()
    assert [j.get_status() for j in (first, held, long)] == [JobStatus.FINISHED] * 3
    assert held.result == 5
