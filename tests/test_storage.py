"""The storage contract: StorageConformance on every storage here, and on the docs example.

Also: proof that the suite can fail (a claim that hands a job out twice, a
claim that never hands one out), and no import cycles among plugq's modules.
"""

from __future__ import annotations

import ast
import re
import sys
import types
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from plugq import ManualClock
from plugq.storage import JobRecord, JobStatus, Storage
from plugq.testing.conformance import BackendConformance
from plugq.testing.storage import StorageConformance
from plugq_memory import MemoryStorage
from plugq_sqlite import SqliteStorage

ROOT = Path(__file__).resolve().parent.parent


class TestMemoryStorage(StorageConformance):
    @pytest.fixture
    def storage(self):
        return MemoryStorage(f"memory://storage-{uuid.uuid4().hex}", clock=ManualClock())


class TestSqliteStorage(StorageConformance):
    @pytest.fixture
    def storage(self, tmp_path):
        s = SqliteStorage(f"sqlite:///{tmp_path / 'storage.db'}", clock=ManualClock())
        yield s
        s.close()


# -- the example storage of docs/backends.md ------------------------------------------


def _docs_example() -> types.ModuleType:
    """The first python block of docs/backends.md, as the module ``plugq_dictstore``."""
    text = (ROOT / "docs" / "backends.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert code is not None, "docs/backends.md has no python block"
    module = types.ModuleType("plugq_dictstore")
    sys.modules["plugq_dictstore"] = module  # dataclasses and pickling look modules up
    exec(compile(code.group(1), "docs/backends.md", "exec"), module.__dict__)
    return module


DictStorage = _docs_example().DictStorage


def test_the_docs_example_imports_only_plugq_storage():
    text = (ROOT / "docs" / "backends.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert code is not None
    modules = {
        node.module for node in ast.walk(ast.parse(code.group(1)))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("plugq")
    }
    assert modules == {"plugq.storage"}


class TestDocsExampleStorage(StorageConformance):
    @pytest.fixture
    def storage(self):
        return DictStorage("dict://", clock=ManualClock())


class TestDocsExampleBehaviour(BackendConformance):
    @pytest.fixture
    def backend(self):
        return DictStorage("dict://", clock=ManualClock())


# -- the suite can fail -----------------------------------------------------------------


class ClaimsTwice(MemoryStorage):
    """Hands out the queue's head without taking it off the queue."""

    def claim(self, queues: Sequence[str], worker_name: str, now: float) -> JobRecord | None:
        for name in queues:
            ids = self.ids(name, JobStatus.QUEUED, 0, 1)
            if ids:
                rec = self.get(ids[0])
                assert rec is not None
                rec.status, rec.worker_name, rec.started_at = JobStatus.STARTED, worker_name, now
                rec.attempts += 1
                return rec
        return None


class NeverClaims(MemoryStorage):
    def claim(self, queues: Sequence[str], worker_name: str, now: float) -> JobRecord | None:
        return None


def _broken(cls: type[MemoryStorage]) -> Storage:
    return cls(f"memory://broken-{uuid.uuid4().hex}", clock=ManualClock())


@pytest.mark.parametrize("broken", [ClaimsTwice, NeverClaims], ids=["claims-twice", "never-claims"])
def test_the_suite_fails_a_broken_claim(broken):
    """A claim that hands a job out twice, or never hands one out, fails the suite."""
    suite = StorageConformance()
    with pytest.raises(AssertionError):
        suite.test_exactly_one_claimer_gets_each_job(_broken(broken))
    with pytest.raises(AssertionError):
        suite.test_claim_takes_the_head_and_marks_it_started(_broken(broken))


def test_the_suite_passes_the_unbroken_storage_on_the_same_tests():
    suite = StorageConformance()
    suite.test_exactly_one_claimer_gets_each_job(_broken(MemoryStorage))
    suite.test_claim_takes_the_head_and_marks_it_started(_broken(MemoryStorage))


def test_the_suite_has_at_least_thirty_primitive_tests():
    assert len([n for n in dir(StorageConformance) if n.startswith("test_")]) >= 30


# -- no import cycles -----------------------------------------------------------------------


def _module_graph(roots: Sequence[Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (any import, at module level or in a
    function; those under ``if TYPE_CHECKING:`` are left out)."""
    paths: dict[str, Path] = {}
    for root in roots:
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            paths[".".join(parts)] = path

    def resolve(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()

        def visit(node: ast.AST, package: str = package, found: set[str] = found) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    for other in child.orelse:
                        visit(other)
                    continue
                if isinstance(child, ast.Import):
                    found.update(a.name for a in child.names)
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        up = package.split(".")[: len(package.split(".")) - child.level + 1]
                        base = ".".join(up + ([child.module] if child.module else []))
                    found.add(base)
                    found.update(f"{base}.{a.name}" for a in child.names)
                visit(child)

        visit(ast.parse(path.read_text(encoding="utf-8")))
        # A package's __init__ re-exporting its own submodules is not a cycle of
        # design: its edges to its own children are left out.
        graph[name] = {
            t for t in map(resolve, found)
            if t is not None and t != name and not t.startswith(name + ".")
        }
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def test_no_import_cycles_among_the_packages_modules():
    graph = _module_graph([ROOT / "src", ROOT / "backends"])
    assert "plugq._engine" in graph and "plugq_rq.storage" in graph
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle(tmp_path):
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .a import x\n")
    (pkg / "a.py").write_text("def x():\n    from .b import y\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nfrom . import a\n"
                              "if TYPE_CHECKING:\n    from . import c\n")
    (pkg / "c.py").write_text("from .b import z\n")
    assert _cycles(_module_graph([tmp_path])) == [["pkg.a", "pkg.b"]]


def test_plugq_storage_imports_nothing_of_the_engine_or_the_api():
    graph = _module_graph([ROOT / "src"])
    assert graph["plugq.storage"] <= {"plugq.config", "plugq.exceptions"}


# -- reads never write ----------------------------------------------------------------------


def test_reading_an_expired_job_leaves_it_to_maintenance():
    from plugq import Job, NoSuchJobError, Queue
    from plugq.testing import tasks

    storage = MemoryStorage(f"memory://reads-{uuid.uuid4().hex}", clock=ManualClock())
    q = Queue("r", connection=storage)
    job = q.enqueue(tasks.add, 1, 2, ttl=5)
    storage.clock.advance(6)
    assert len(q) == 0 and q.get_job_ids() == [] and q.fetch_job(job.id) is None
    with pytest.raises(NoSuchJobError):
        Job.fetch(job.id, connection=storage)
    assert storage.get(job.id) is not None, "a read deleted the record"
    q.backend.maintenance()
    assert storage.get(job.id) is None


def test_sqlite_reading_a_corrupt_row_does_not_write(tmp_path):
    import sqlite3

    from plugq.storage import JobStatus

    storage = SqliteStorage(f"sqlite:///{tmp_path / 'poison.db'}", clock=ManualClock())
    storage.insert([JobRecord(id="bad", func_name="tasks.f", origin="q", payload=b"p")])
    raw = sqlite3.connect(tmp_path / "poison.db", isolation_level=None)
    raw.execute("UPDATE jobs SET timeout = 'forever' WHERE id = 'bad'")

    def stored_status() -> str:
        return raw.execute("SELECT status FROM jobs WHERE id = 'bad'").fetchone()[0]

    seen = storage.get("bad")
    assert seen is not None and seen.status is JobStatus.FAILED and "timeout" in (seen.exc_info or "")
    assert stored_status() == "queued", "a read wrote"
    assert storage.claim(["q"], "w", storage.clock.now()) is None  # the claim fails it in the file
    assert stored_status() == "failed"
    raw.close()
    storage.close()
