"""`fraud demo`: the whole loop on embedded defaults, no servers needed beforehand."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer


def demo(
    workdir: Annotated[
        Path, typer.Option(help="Where the demo writes its data, model, report and database.")
    ] = Path(".fraud-demo"),
    customers: Annotated[int, typer.Option(min=100)] = 5000,
    terminals: Annotated[int, typer.Option(min=100)] = 10000,
    days: Annotated[int, typer.Option(min=60, help="Simulated days; the last 3 go live.")] = 62,
    epochs: Annotated[int, typer.Option(min=1)] = 8,
) -> None:
    """Simulate, train, serve, stream and score, then print what happened.

    Starts a local broker and model server, stops them at the end. Prints a
    JSON summary as the last line.
    """
    from rich.console import Console

    from fraud.dev.demo import DemoPlan, check_workdir, demo_workbench, run_demo

    check_workdir(workdir)
    plan = DemoPlan(workdir=workdir.resolve(), customers=customers, terminals=terminals,
                    days=days, epochs=epochs)
    console = Console(stderr=True)
    summary = run_demo(plan, console)
    db = summary["database"]
    with demo_workbench(db, plan.workdir / "lake", plan.workdir / "logs") as workbench:
        summary.update(workbench)
        console.print(f"[green]✓[/] Analyst workbench on {workbench['workbench']}")
        console.rule("[bold]Demo summary")
        for key, value in summary.items():
            console.print(f"  {key:32} {value}")
        print(json.dumps(summary), flush=True)
        if sys.stdin.isatty():
            console.print(f"Workbench: {workbench['workbench']}  login "
                          f"{workbench['workbench_login']}  (Ctrl-C stops it)")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                console.print("stopping the workbench")
