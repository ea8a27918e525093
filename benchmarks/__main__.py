"""``python -m benchmarks``: plugq's backends beside their peers, same machine, same run."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Config,
    Metric,
    NotApplicable,
    System,
    byte_compile_plugq,
    median,
    new_hexes,
    percentile,
)
from benchmarks.peers import Huey, PersistQueue, RawRq
from benchmarks.pg_systems import PgQueuer, PlugqPostgres, Procrastinate
from benchmarks.plugq_systems import PlugqMemory, PlugqRedis, PlugqSqlite
from benchmarks.report import evaluate_targets, markdown

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small runs, whole run under 60 s")
    p.add_argument("--jobs", type=int, default=None, help="jobs per run (default 2000; quick 300)")
    p.add_argument("--runs", type=int, default=None,
                   help="runs per figure, median taken (default 3; quick 1)")
    p.add_argument("--only", default="", help="comma-separated system names or aliases "
                   "(memory, sqlite, redis, rq, huey, huey-sqlite, persist-queue, postgres, "
                   "procrastinate, pgqueuer, …)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where results.md/json go")
    p.add_argument("--workers", type=int, default=2, help="N for the N-worker-process runs (default 2)")
    return p.parse_args(argv)


@contextmanager
def redis_server() -> Iterator[int | None]:
    """A private redis-server on a free port for the run, stopped at the end (None if absent)."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def build_systems(workdir: Path, redis_port: int | None) -> list[System]:
    url = None if redis_port is None else f"redis://127.0.0.1:{redis_port}/0"
    return [
        PlugqMemory(workdir),
        PlugqSqlite(workdir),
        PlugqSqlite(workdir, "full"),
        Huey(workdir, "sqlite"),
        PersistQueue(workdir),
        PlugqRedis(workdir, url, "simple"),
        RawRq(workdir, url, "simple"),
        PlugqRedis(workdir, url, "fork"),
        RawRq(workdir, url, "fork"),
        Huey(workdir, "redis", redis_port),
        PlugqPostgres(workdir),
        Procrastinate(workdir),
        PgQueuer(workdir, 1),
        PgQueuer(workdir, 10),
    ]


def selected(system: System, only: set[str]) -> bool:
    return not only or system.name in only or bool(system.aliases & only)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Recorder:
    """One system's runs so far; :meth:`result` turns them into medians."""

    def __init__(self, system: System, log: Callable[[str], None]) -> None:
        self.system = system
        self.log = log
        self.values: dict[str, list[float]] = {}
        self.verified: dict[str, bool] = {}
        self.jobs: dict[str, int | None] = {}
        self.units: dict[str, str] = {}
        self.not_applicable: dict[str, str] = {}
        self.notes: list[str] = []

    def record(self, key: str, unit: str, body: Callable[[], tuple[float, bool, int | None]]) -> None:
        self.units[key] = unit
        if key in self.not_applicable:
            return
        try:
            value, ok, jobs = body()
        except NotApplicable as exc:
            self.not_applicable[key] = str(exc)
            return
        self.values.setdefault(key, []).append(value)
        self.verified[key] = self.verified.get(key, True) and ok
        self.jobs[key] = jobs
        self.log(f"  {self.system.name} {key}: {value:,.2f} {unit}{'' if ok else ' UNVERIFIED'}")

    def result(self) -> dict[str, Any]:
        metrics: dict[str, Metric] = {}
        for key, unit in self.units.items():
            if key in self.not_applicable:
                metrics[key] = Metric(None, unit, note=self.not_applicable[key])
            elif key in self.values:
                runs = self.values[key]
                metrics[key] = Metric(median(runs), unit, runs, self.verified.get(key),
                                      jobs=self.jobs.get(key))
        if not self.system.multi_process:
            metrics["process_n"] = Metric(None, "jobs/s", note="one process holds the store")
        return {"metrics": {k: m.to_json() for k, m in metrics.items()}, "notes": self.notes}


def measure_once(rec: Recorder, cfg: Config) -> None:
    """One run of every figure for one system (the caller repeats and interleaves runs)."""
    system = rec.system

    def enqueue(bulk: bool) -> tuple[float, bool, int | None]:
        system.reset()
        # A bulk run of a few thousand jobs lasts a few tens of milliseconds,
        # too short to read through the noise of a shared machine: time 10,000.
        hexes = new_hexes(cfg.jobs if cfg.quick or not bulk else max(cfg.jobs, 10_000))
        enqueue = system.enqueue_bulk if bulk else system.enqueue_single
        # Untimed warm-up on the same store: first-call costs (connections,
        # statement caches, lazy imports) are not the steady rate.
        warm = new_hexes(50)
        enqueue(warm)
        start = time.perf_counter()
        enqueue(hexes)
        seconds = time.perf_counter() - start
        return len(hexes) / seconds, system.queued_count() == len(warm) + len(hexes), len(hexes)

    rss: list[float] = []

    def process(workers: int) -> Callable[[], tuple[float, bool, int | None]]:
        def body() -> tuple[float, bool, int | None]:
            system.reset()
            n = max(50, int(cfg.jobs * system.job_scale))
            run = system.process(new_hexes(n), workers)
            if not run.verified:
                rec.notes.append(f"processing with {workers} worker(s) failed verification: {run.detail}")
            if workers == 1 and run.rss_kb:
                rss.append(run.rss_kb / 1024)
            return run.jobs / run.seconds, run.verified, run.jobs
        return body

    if system.measures_enqueue:
        rec.record("enqueue_single", "jobs/s", lambda: enqueue(False))
        rec.record("enqueue_bulk", "jobs/s", lambda: enqueue(True))
    rec.record("process_1", "jobs/s", process(1))
    if system.multi_process:
        rec.record("process_n", "jobs/s", process(cfg.workers_n))
    if rss:
        rec.record("worker_rss", "MiB", lambda: (rss[0], True, None))

    samples: list[float] = []

    def latency() -> tuple[float, bool, int | None]:
        samples[:] = [s * 1000 for s in system.latency(cfg.latency_samples)]
        return median(samples), True, len(samples)

    rec.record("latency_median", "ms", latency)
    if samples:
        rec.record("latency_p99", "ms", lambda: (percentile(samples, 99), True, len(samples)))
    elif "latency_median" in rec.not_applicable:
        rec.units["latency_p99"] = "ms"
        rec.not_applicable["latency_p99"] = rec.not_applicable["latency_median"]

    if isinstance(system, PlugqMemory):
        rec.record("drain_10k", "s", lambda: (*system.drain_10k(), 10_000))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config(
        jobs=args.jobs or (300 if args.quick else 2000),
        runs=args.runs or (1 if args.quick else 3),
        quick=args.quick,
        latency_samples=20 if args.quick else 100,
        workers_n=args.workers,
    )
    only = {s.strip() for s in args.only.split(",") if s.strip()}

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "load_before": load()},
        "config": vars(cfg),
        "systems": {},
    }
    # plugq's modules as an installed plugq has them: byte-compiled (the peers are).
    results["config"]["plugq_bytecode"] = byte_compile_plugq()
    workdir = Path(tempfile.mkdtemp(prefix="plugq-bench-"))
    started = time.monotonic()
    try:
        with redis_server() as port:
            systems = [s for s in build_systems(workdir, port) if selected(s, only)]
            if not systems:
                log(f"no system matches --only {args.only!r}")
                return 2
            recorders: dict[str, Recorder] = {}
            for system in systems:
                entry: dict[str, Any] = {"peer": system.peer}
                if not system.measures_enqueue:
                    entry["enqueue_from"] = (getattr(system, "enqueue_from", None)
                                           or system.name.replace("-fork", "-simple"))
                results["systems"][system.name] = entry
                reason = system.unavailable()
                if reason:
                    entry["skipped"] = reason
                    log(f"{system.name}: skipped ({reason})")
                else:
                    recorders[system.name] = Recorder(system, log)
            # Runs are interleaved across systems, in alternating order, so that
            # a plugq figure and its peer's are taken minutes apart at most: on a
            # shared machine the load drifts, and a ratio of two figures taken
            # at different times would measure the drift.
            for run in range(cfg.runs):
                order = list(recorders.values())
                if run % 2:
                    order.reverse()
                for rec in order:
                    if "skipped" in results["systems"][rec.system.name]:
                        continue
                    log(f"{rec.system.name} (run {run + 1}/{cfg.runs}):")
                    try:
                        measure_once(rec, cfg)
                    except Exception as exc:
                        entry = results["systems"][rec.system.name]
                        entry["skipped"] = f"failed: {type(exc).__name__}: {exc}"
                        entry["traceback"] = traceback.format_exc()
                        log(f"{rec.system.name}: FAILED\n{entry['traceback']}")
            for name, rec in recorders.items():
                if "skipped" not in results["systems"][name]:
                    results["systems"][name].update(rec.result())
                rec.system.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["machine"]["load_after"] = load()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["targets"] = evaluate_targets(results)
    results["all_verified"] = all(
        m.get("verified") is not False
        for info in results["systems"].values() for m in info.get("metrics", {}).values()
    ) and not any("failed" in str(info.get("skipped", "")) for info in results["systems"].values())
    text = markdown(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(text)
    for t in results["targets"]:
        print(f"{t['status']:4}  {t['system']} {t['metric']} {t['target']}")
    print(f"elapsed {results['elapsed_s']} s; written to {args.out}/results.md and results.json")
    return 0 if results["all_verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
