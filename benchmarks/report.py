"""The results as a markdown table, targets PASS/MISS, and JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Column order of the table: metric key, header, what "better" means.
COLUMNS: list[tuple[str, str, str]] = [
    ("enqueue_single", "enqueue (jobs/s)", "higher"),
    ("enqueue_bulk", "enqueue_many (jobs/s)", "higher"),
    ("process_1", "processing, 1 worker (jobs/s)", "higher"),
    ("process_n", "processing, N workers (jobs/s)", "higher"),
    ("latency_median", "idle wake-up median (ms)", "lower"),
    ("latency_p99", "idle wake-up p99 (ms)", "lower"),
    ("worker_rss", "worker peak RSS (MiB)", "lower"),
]


@dataclass
class Target:
    system: str
    metric: str
    text: str
    #: absolute bound (value >= bound, or <= for 'lower' metrics) ...
    absolute: float | None = None
    #: ... or a minimum ratio against ``peer``'s figure for the same metric.
    ratio: float | None = None
    peer: str | None = None
    lower_is_better: bool = False


TARGETS: list[Target] = [
    Target("plugq-memory", "enqueue_single", ">= 50,000 jobs/s", absolute=50_000),
    Target("plugq-memory", "process_1", ">= 20,000 jobs/s", absolute=20_000),
    Target("plugq-memory", "drain_10k", "10,000 jobs drain in < 1 s", absolute=1.0,
           lower_is_better=True),
    Target("plugq-sqlite", "enqueue_single", ">= 1.5x huey-sqlite", ratio=1.5, peer="huey-sqlite"),
    Target("plugq-sqlite", "process_1", ">= 2x huey-sqlite", ratio=2.0, peer="huey-sqlite"),
    Target("plugq-sqlite", "enqueue_bulk", ">= 50,000 jobs/s", absolute=50_000),
    Target("plugq-sqlite", "latency_median", "<= 10 ms", absolute=10.0, lower_is_better=True),
    Target("plugq-redis-simple", "enqueue_single", ">= 2x rq", ratio=2.0, peer="rq-simple"),
    Target("plugq-redis-simple", "enqueue_bulk", ">= 3x rq's enqueue_many", ratio=3.0,
           peer="rq-simple"),
    Target("plugq-redis-simple", "process_1", ">= 6x rq SimpleWorker", ratio=6.0,
           peer="rq-simple"),
    Target("plugq-redis-simple", "process_1", ">= 1.0x huey-redis (one thread)", ratio=1.0,
           peer="huey-redis"),
    Target("plugq-redis-simple", "process_n", ">= 1.0x huey-redis, N processes each", ratio=1.0,
           peer="huey-redis"),
    Target("plugq-redis-simple", "worker_rss", "<= rq SimpleWorker's", ratio=1.0,
           peer="rq-simple", lower_is_better=True),
    Target("plugq-redis-fork", "process_1", ">= 0.9x rq Worker (forking)", ratio=0.9,
           peer="rq-fork"),
    Target("plugq-postgres", "enqueue_single", ">= 2x procrastinate defer", ratio=2.0,
           peer="procrastinate"),
    Target("plugq-postgres", "enqueue_bulk", ">= 50,000 jobs/s", absolute=50_000),
    Target("plugq-postgres", "process_1", ">= 3x procrastinate", ratio=3.0, peer="procrastinate"),
    Target("plugq-postgres", "process_1", ">= pgqueuer at the same claim batch size (1)",
           ratio=1.0, peer="pgqueuer-b1"),
    Target("plugq-postgres", "latency_median", "<= 5 ms", absolute=5.0, lower_is_better=True),
]


def value_of(results: dict[str, Any], system: str, metric: str) -> float | None:
    m = results["systems"].get(system, {}).get("metrics", {}).get(metric)
    return None if m is None else m.get("value")


def enqueue_source(results: dict[str, Any], system: str) -> str:
    """Forking variants share their simple sibling's enqueue figures."""
    return results["systems"].get(system, {}).get("enqueue_from", system)


def ratio(results: dict[str, Any], system: str, metric: str, peer: str | None = None) -> float | None:
    """``system``'s figure over ``peer``'s (the system's own peer when None)."""
    peer = peer or results["systems"].get(system, {}).get("peer")
    if peer is None:
        return None
    if metric.startswith("enqueue"):
        system, peer = enqueue_source(results, system), enqueue_source(results, peer)
    mine, theirs = value_of(results, system, metric), value_of(results, peer, metric)
    if mine is None or not theirs:
        return None
    return mine / theirs


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for t in TARGETS:
        if t.system not in results["systems"]:
            continue
        system = enqueue_source(results, t.system) if t.metric.startswith("enqueue") else t.system
        value = value_of(results, system, t.metric)
        status, measured, by = "N/A", None, None
        if t.absolute is not None and value is not None:
            measured = value
            ok = value <= t.absolute if t.lower_is_better else value >= t.absolute
            status = "PASS" if ok else "MISS"
            by = value / t.absolute
        elif t.ratio is not None:
            r = ratio(results, t.system, t.metric, t.peer)
            if r is not None:
                measured = r
                ok = r <= t.ratio if t.lower_is_better else r >= t.ratio
                status = "PASS" if ok else "MISS"
                by = r / t.ratio
        out.append({"system": t.system, "metric": t.metric, "target": t.text, "status": status,
                    "measured": measured, "kind": "ratio" if t.ratio is not None else "absolute",
                    "fraction_of_target": by})
    return out


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "n/a"
    if metric.startswith("latency"):
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    if metric == "drain_10k":
        return f"{value:.3f} s"
    if metric == "worker_rss":
        return f"{value:.0f}"
    return f"{value:,.0f}"


def cell(results: dict[str, Any], system: str, metric: str) -> str:
    info = results["systems"][system]
    if metric.startswith("enqueue") and info.get("enqueue_from"):
        return f"= {info['enqueue_from']}"
    m = info.get("metrics", {}).get(metric)
    if m is None:
        return "—"
    text = _fmt(m.get("value"), metric)
    if m.get("value") is None and m.get("note"):
        text = f"n/a ({m['note']})"
    if m.get("verified") is False:
        text += " **UNVERIFIED**"
    r = ratio(results, system, metric)
    if r is not None:
        text += f" ({r:.2f}x)"
    return text


def markdown(results: dict[str, Any]) -> str:
    cfg, machine = results["config"], results["machine"]
    lines = [
        f"Machine: {machine['cpus']} CPUs, {machine['platform']}, Python {machine['python']}; "
        f"load average {machine['load_before']} before, {machine['load_after']} after.",
        f"Jobs per run: {cfg['jobs']} (forking workers: a quarter), median of {cfg['runs']} run(s), "
        f"N = {cfg['workers_n']} worker processes, {cfg['latency_samples']} latency samples per run.",
        "",
        "Ratios in parentheses are plugq ÷ its peer (huey-sqlite for sqlite, raw rq with the same "
        "worker class for redis, procrastinate for postgres); for latency and RSS lower is better.",
        "",
        "| system | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
        "| --- |" + " ---: |" * len(COLUMNS),
    ]
    for system, info in results["systems"].items():
        if info.get("skipped"):
            lines.append(f"| {system} | skipped: {info['skipped']} |" + " |" * (len(COLUMNS) - 1))
            continue
        lines.append(f"| {system} | " + " | ".join(cell(results, system, k) for k, _, _ in COLUMNS) + " |")
    extra = results["systems"].get("plugq-memory", {}).get("metrics", {}).get("drain_10k")
    if extra and extra.get("value") is not None:
        lines += ["", f"plugq-memory drains 10,000 queued jobs in {extra['value']:.3f} s."]
    if results.get("targets"):
        lines += ["", "| target | measured | status |", "| --- | ---: | --- |"]
        for t in results["targets"]:
            if t["measured"] is None:
                measured = "n/a"
            elif t["kind"] == "ratio":
                # Three decimals: 0.896 must not read as a missed "0.90x".
                measured = f"{t['measured']:.3f}x"
            else:
                measured = _fmt(t["measured"], t["metric"])
            lines.append(f"| {t['system']} {t['metric']} {t['target']} | {measured} | {t['status']} |")
    notes = [f"- {s}: {n}" for s, info in results["systems"].items() for n in info.get("notes", [])]
    if notes:
        lines += ["", "Notes:", *notes]
    lines += ["", f"All results verified: {'yes' if results['all_verified'] else 'NO'}."]
    return "\n".join(lines) + "\n"
