"""The conformance suite on the memory backend, and memory-specific behaviour."""

from __future__ import annotations

import uuid

import pytest

from plugq import ManualClock
from plugq.testing.conformance import BackendConformance
from plugq_memory import MemoryStorage


class TestMemoryConformance(BackendConformance):
    @pytest.fixture
    def backend(self):
        return MemoryStorage(f"memory://conformance-{uuid.uuid4().hex}", clock=ManualClock())


class TestMemoryRealClockConformance(BackendConformance):
    """The same suite on the wall clock: nothing may depend on the manual clock."""

    @pytest.fixture
    def backend(self):
        return MemoryStorage(f"memory://wall-{uuid.uuid4().hex}")
