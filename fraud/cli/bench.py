"""`fraud bench`: benchmarks that print figures (throughput, latency percentiles)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Benchmarks; each prints its figures as JSON on the last line.", no_args_is_help=True
)


@app.command("scoring")
def scoring(
    events: Annotated[int, typer.Option(min=1000, help="Events per throughput run.")] = 100_000,
    model_dir: Annotated[
        Path | None, typer.Option(help="Model to serve [default: train one on simulated data]")
    ] = None,
    latency_rate: Annotated[int, typer.Option(min=1, help="Events/s of the latency run.")] = 2000,
    latency_seconds: Annotated[float, typer.Option(min=1)] = 60.0,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep data and model here (reused by later runs).")
    ] = None,
    scorers: Annotated[
        int, typer.Option(min=1, help="Scale-out runs with 1, 2, ... up to this many scorers.")
    ] = 3,
) -> None:
    """End-to-end scoring: broker, model endpoint, scorer and database, all local.

    Prints {"inprocess_events_per_s", "grpc_events_per_s", "p50_ms", "p99_ms",
    "alerts_p99_ms", "all_alerts_p99_ms", "model_limit_events_per_s",
    "broker_limit_events_per_s", "scale_out": {"1": {"events_per_s",
    "cpu_s_per_1000_events", ...}, ...}, ...} last.
    """
    import logging
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from rich.console import Console

    from fraud.dev.bench_scoring import BenchPlan, run_bench

    logging.basicConfig(level=logging.WARNING)
    plan = BenchPlan(
        events=events,
        latency_rate=latency_rate,
        latency_seconds=latency_seconds,
        model_dir=model_dir,
        workdir=workdir,
        scorers=tuple(range(1, scorers + 1)),
    )
    figures = run_bench(plan, Console(stderr=True))
    print(json.dumps(figures))
