"""The procrastinate app of the benchmark: one task, the shared digit sum."""

from __future__ import annotations

from typing import Any

from benchmarks.tasks import digit_sum


def make_app(conninfo: str) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))

    @app.task(name="digit_sum", queue="bench")
    def digit_sum_task(hex_string: str) -> int:
        return digit_sum(hex_string)

    return app
