"""``/metrics``: the store's state in Prometheus text format, through prometheus_client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..backend import Backend
from . import _data


class StoreCollector(Collector):
    """Reads the store at each scrape (nothing is kept between scrapes)."""

    def __init__(self, backend: Backend, chart: Callable[[], dict[str, Any]]) -> None:
        self.backend = backend
        self.chart = chart

    def collect(self) -> Iterator[Metric]:
        snap = _data.overview(self.backend)
        jobs = GaugeMetricFamily("plugq_jobs", "Jobs in the store per queue and status",
                                 labels=["queue", "status"])
        for q in snap["queues"]:
            for status, n in q["counts"].items():
                jobs.add_metric([q["name"], status], n)
        yield jobs

        workers = GaugeMetricFamily("plugq_workers", "Registered workers per state", labels=["state"])
        for state, n in sorted(snap["worker_states"].items()):
            workers.add_metric([state], n)
        yield workers

        # Each worker counts the jobs it ran since it started; a restarted worker
        # is a new series (its name changes), which rate() handles.
        finished = CounterMetricFamily("plugq_worker_jobs_finished",
                                       "Jobs a registered worker finished", labels=["worker"])
        failed = CounterMetricFamily("plugq_worker_jobs_failed",
                                     "Jobs a registered worker failed", labels=["worker"])
        for w in snap["workers"]:
            finished.add_metric([w["name"]], w.get("successful_jobs") or 0)
            failed.add_metric([w["name"]], w.get("failed_jobs") or 0)
        yield finished
        yield failed

        age = GaugeMetricFamily("plugq_queue_oldest_job_age_seconds",
                                "Seconds since the job at the head of the queue was enqueued "
                                "(0 for an empty queue)", labels=["queue"])
        for q in snap["queues"]:
            value = _data.oldest_queued_age(self.backend, q["name"], snap["time"])
            age.add_metric([q["name"]], value or 0.0)
        yield age

        chart = self.chart()
        last_hour = GaugeMetricFamily("plugq_jobs_ended_last_hour",
                                      "Jobs that finished or failed in the last hour (from ended_at)",
                                      labels=["status"])
        for status in ("finished", "failed"):
            last_hour.add_metric([status], sum(chart[status]))
        yield last_hour


def render(backend: Backend, chart: Callable[[], dict[str, Any]]) -> bytes:
    """The exposition text; ``chart`` returns the (cached) throughput chart."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(backend, chart))
    return generate_latest(registry)
