"""`fraud workbench`: the analyst web application over the alerts database."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from fraud.cli.db import DbOption
from scoring.db import DEFAULT_DB_URL


def workbench(
    db: DbOption = DEFAULT_DB_URL,
    host: Annotated[str, typer.Option(envvar="FRAUD_WORKBENCH_HOST",
                                      help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="FRAUD_WORKBENCH_PORT", min=1, max=65535)] = 8080,
    lake: Annotated[Path | None, typer.Option(
        help="Parquet lake (fraud archive) or transaction files: show the card's last 30 days."
    )] = None,
    four_eyes: Annotated[bool, typer.Option(
        "--four-eyes", help="A disposition is final only once a supervisor approves it."
    )] = False,
    sla_hours: Annotated[float, typer.Option(
        min=0.1, help="Service-level target: hours within which an alert should be decided."
    )] = 4.0,
    insecure_cookies: Annotated[bool, typer.Option(
        "--insecure-cookies",
        help="Cookies without Secure on a non-loopback address (plain-HTTP test setups only).",
    )] = False,
) -> None:
    """Serve the workbench: queue, alert pages, decisions, dashboard, users; API under /api/v1.

    Sign-in needs a user: `fraud users add NAME --role analyst|supervisor|admin`.
    """
    import uvicorn

    from fraud.cli.db import open_engine
    from scoring.workbench.app import create_app
    from scoring.workbench.settings import WorkbenchSettings

    with open_engine(db):  # migrated and reachable, or a one-line error
        pass
    settings = WorkbenchSettings(
        db_url=db, four_eyes=four_eyes, sla_hours=sla_hours, lake=lake,
        secure_cookies=WorkbenchSettings.secure_for(host) and not insecure_cookies,
    )
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    app = create_app(settings)
    print(f"workbench on http://{host}:{port}/ (four-eyes {'on' if four_eyes else 'off'})",
          file=sys.stderr, flush=True)
    # uvicorn's own access log prints query strings (card ids): ours prints paths only.
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning",
                proxy_headers=False)
