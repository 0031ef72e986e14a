"""`fraud simulate`: write labelled synthetic transactions of a simulated bank."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def simulate(
    out: Annotated[
        Path,
        typer.Option(
            help="Output: a .csv, .parquet or .jsonl file, or else a directory that gets "
            "date-partitioned Parquet (DIR/date=YYYY-MM-DD/part-0.parquet).",
            envvar="FRAUD_OUT",
        ),
    ],
    customers: Annotated[
        int, typer.Option(help="Number of customers (cards).", envvar="FRAUD_CUSTOMERS")
    ] = 5000,
    terminals: Annotated[
        int, typer.Option(help="Number of merchant terminals.", envvar="FRAUD_TERMINALS")
    ] = 10000,
    days: Annotated[int, typer.Option(help="Days to simulate.", envvar="FRAUD_DAYS")] = 183,
    start_date: Annotated[
        str, typer.Option(help="First simulated day, YYYY-MM-DD (UTC).", envvar="FRAUD_START_DATE")
    ] = "2018-04-01",
    seed: Annotated[
        int, typer.Option(help="Random seed: same seed, same data.", envvar="FRAUD_SEED")
    ] = 0,
    overwrite: Annotated[
        bool,
        typer.Option(
            help="Replace an existing output file (or a directory's date partitions).",
            envvar="FRAUD_OVERWRITE",
        ),
    ] = False,
    label_protocol: Annotated[
        str,
        typer.Option(
            help="handbook: each label known with its transaction (labelled files); "
            "realistic: a lake of transactions and labels as a bank gets them, chargebacks "
            "days to weeks late, analysts' decisions within hours (docs/labels.md).",
            envvar="FRAUD_LABEL_PROTOCOL",
        ),
    ] = "handbook",
) -> None:
    """Write labelled synthetic transactions: a bank with realistic fraud scenarios.

    Fraud Detection Handbook scenarios plus card testing; figures as JSON, last line.
    """
    from rich.console import Console

    from ingest.simulator import SimulationConfig, parse_start_date
    from ingest.simulator.run import simulate_to

    config = SimulationConfig(
        customers=customers,
        terminals=terminals,
        days=days,
        start_date=parse_start_date(start_date),
        seed=seed,
    )
    console = Console(stderr=True)
    with console.status("simulating") as status:
        figures = simulate_to(config, out, overwrite=overwrite, on_step=status.update,
                              label_protocol=label_protocol)
    console.print(
        f"{figures['transactions']:,} transactions, {figures['frauds']:,} frauds "
        f"in {figures['seconds']} s -> {out}"
    )
    print(json.dumps(figures))
