"""The workbench's settings, fixed when the application is created."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class WorkbenchSettings:
    """What ``fraud workbench`` was started with, plus the security limits."""

    db_url: str
    #: An analyst's disposition is final only once a supervisor approves it.
    four_eyes: bool = False
    #: Service-level target: an open alert should be decided within this many hours.
    sla_hours: float = 4.0
    #: The Parquet lake (or labelled files) to show a card's recent transactions from.
    lake: Path | None = None
    #: Send cookies with ``Secure`` (on unless the server listens on loopback only).
    secure_cookies: bool = True
    #: A session ends after this long without a request ...
    session_idle_seconds: int = 30 * 60
    #: ... and this long after sign-in in any case.
    session_absolute_seconds: int = 12 * 3600
    #: Failed sign-ins tolerated per account / per client address within the window.
    max_failures_per_account: int = 5
    max_failures_per_client: int = 20
    login_window_seconds: int = 15 * 60
    #: Alerts per queue page (the API's ``limit`` default).
    page_size: int = 50
    #: How many of a card's / terminal's other alerts the alert page shows.
    related_alerts: int = 20
    #: Days of a card's transactions read from the lake.
    lake_days: int = 30

    @staticmethod
    def secure_for(host: str) -> bool:
        """Whether cookies need ``Secure`` for a server listening on ``host``."""
        return host not in LOOPBACK_HOSTS
