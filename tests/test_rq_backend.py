"""The RQ backend: the conformance suite on a real redis-server and on fakeredis,
plus what is specific to Redis (URLs, connection errors, worker classes, losing Redis)."""

from __future__ import annotations

import uuid

import pytest

pytest.importorskip("rq")

from plugq.testing.conformance import BackendConformance

pytestmark = pytest.mark.redis


class TestRedisConformance(BackendConformance):
    """Every conformance test on a real redis-server, rq's forking worker (the default)."""

    @pytest.fixture
    def backend(self, redis_server):
        from plugq_rq.backend import RQBackend

        redis_server.flushall()
        b = RQBackend(redis_server.url)
        yield b
        b.close()


class TestRedisSimpleWorkerConformance(BackendConformance):
    """Every conformance test on a real redis-server with rq's SimpleWorker."""

    @pytest.fixture
    def backend(self, redis_server):
        from plugq_rq.backend import RQBackend

        redis_server.flushall()
        b = RQBackend(redis_server.url + "/0?worker_class=simple")
        yield b
        b.close()


class TestFakeRedisConformance(BackendConformance):
    """Every conformance test on fakeredis (one fresh in-process server per test)."""

    @pytest.fixture
    def backend(self):
        from plugq_rq.backend import RQBackend

        b = RQBackend(f"fakeredis://conformance-{uuid.uuid4().hex}")
        yield b
        b.close()
