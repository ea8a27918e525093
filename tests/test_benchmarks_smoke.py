"""The benchmark harness runs end to end and verifies what it measured.

Not a timed test: benchmarks are not tests. This only checks that
``python -m benchmarks`` works, writes its JSON, and that every result it
timed was checked afterwards.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_quick_memory_run_writes_verified_results(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--jobs", "200", "--only", "memory",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "results.md").exists()
    assert {"machine", "config", "systems", "targets", "all_verified"} <= results.keys()
    assert results["all_verified"] is True
    memory = results["systems"]["plugq-memory"]
    assert "skipped" not in memory
    metrics = memory["metrics"]
    for key in ("enqueue_single", "enqueue_bulk", "process_1", "latency_median", "latency_p99",
                "worker_rss", "drain_10k"):
        assert metrics[key]["value"] is not None, key
    for key in ("enqueue_single", "enqueue_bulk", "process_1", "drain_10k"):
        assert metrics[key]["verified"] is True, key
    assert metrics["process_1"]["jobs"] == 200
    assert {t["metric"] for t in results["targets"] if t["system"] == "plugq-memory"} == {
        "enqueue_single", "process_1", "drain_10k",
    }
    assert all(t["status"] in ("PASS", "MISS") for t in results["targets"])


@pytest.mark.redis
def test_redis_beyond_benchmark_runs_and_verifies_every_job(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    out = tmp_path / "beyond.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.redis_beyond", "--measured", "100", "--runs", "1",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr  # each run asserts its job count
    figures = json.loads(out.read_text())
    assert set(figures["median"]) == {"plain", "priority", "ratelimit", "rate+priority", "both"}
    assert all(rate > 0 for rate in figures["median"].values())


def test_sqlite_features_mode_runs_every_row() -> None:
    """``bench_sqlite.py --features``: plain, priority and each RateLimit form, all jobs done."""
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_sqlite.py", "--features", "--jobs", "60", "--runs", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split()[0] for line in proc.stdout.splitlines()[1:]]
    assert rows == ["plain", "priority", "concurrency", "rate", "concurrency+priority",
                    "rate+priority", "both"]
