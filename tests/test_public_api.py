"""Every public name is documented, and the layers' contracts are importable as DESIGN.md names them."""

from __future__ import annotations

import importlib
import inspect

import pytest

PUBLIC = ["plugq", "plugq.storage", "plugq.testing", "plugq.testing.storage", "plugq.exceptions",
          "plugq_memory", "plugq_sqlite"]


@pytest.mark.parametrize("module_name", PUBLIC)
def test_every_name_in_all_is_documented(module_name):
    module = importlib.import_module(module_name)
    assert (module.__doc__ or "").strip(), f"{module_name} has no docstring"
    missing = []
    for name in module.__all__:
        obj = getattr(module, name)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not (obj.__doc__ or "").strip():
            missing.append(name)
    assert missing == [], f"{module_name}: undocumented public names {missing}"


def test_the_storage_contract_is_importable_as_designed():
    from plugq.storage import Clock, JobRecord, JobStatus, ManualClock, Storage, WorkerRecord
    from plugq.testing.storage import StorageConformance
    from plugq_memory import MemoryStorage
    from plugq_sqlite import SqliteStorage

    assert issubclass(MemoryStorage, Storage) and issubclass(SqliteStorage, Storage)
    assert issubclass(ManualClock, Clock)
    assert JobStatus.QUEUED == "queued"
    assert {"claim", "put", "insert"} <= set(Storage.__abstractmethods__)
    assert JobRecord and WorkerRecord and StorageConformance


def test_a_storage_declares_only_known_capabilities():
    from plugq.storage import Storage

    class Odd(Storage):  # type: ignore[misc]
        capabilities = frozenset({"teleport"})

    Odd.__abstractmethods__ = frozenset()
    with pytest.raises(TypeError, match="teleport"):
        Odd("odd://")


def test_a_storage_without_manual_clock_refuses_one():
    from plugq.exceptions import NotSupportedError
    from plugq.storage import ManualClock, Storage

    class WallOnly(Storage):  # type: ignore[misc]
        scheme = "wall"

    WallOnly.__abstractmethods__ = frozenset()
    with pytest.raises(NotSupportedError, match="ManualClock"):
        WallOnly("wall://", clock=ManualClock())
    assert WallOnly("wall://").clock.now() > 0
