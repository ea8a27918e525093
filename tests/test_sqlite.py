"""The SQLite backend: the conformance suite, then what only a shared file can show."""

from __future__ import annotations

import pytest

from plugq.testing.conformance import BackendConformance
from plugq_sqlite import SqliteBackend


class TestSqliteConformance(BackendConformance):
    """The whole suite on a fresh file, with a short lease so abandonment shows quickly."""

    @pytest.fixture
    def backend(self, tmp_path):
        b = SqliteBackend(f"sqlite:///{tmp_path / 'conformance.db'}?lease=2")
        yield b
        b.close()
