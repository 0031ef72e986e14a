"""Helpers for the workbench tests and its benchmark: seeded alerts, users, a live server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from scoring.db import repository as repo
from scoring.db.engine import make_engine, make_sessionmaker
from scoring.workbench import auth
from scoring.workbench.settings import WorkbenchSettings

PASSWORD = "correct horse battery"
T0 = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)

REASONS = [
    {"group": "amount", "contribution": 0.41,
     "text": "amount 812.40: 6.2x the card's 30-day mean (131.03)"},
    {"group": "terminal_risk", "contribution": 0.22,
     "text": "terminal: 4 of its 9 known transactions of a 30-day window were fraud"},
    {"group": "customer_novelty", "contribution": 0.05,
     "text": "first use of this terminal by the card in 30 days"},
]


def new_alert(i: int, *, score: float | None = None, customer: str | None = None,
              model_version: int = 1) -> repo.NewAlert:
    return repo.NewAlert(
        transaction_id=f"tx-{i}",
        customer_id=customer or f"C{i % 5}",
        terminal_id=f"T{i % 3}",
        amount=round(10.0 + 7.5 * i, 2),
        event_time=T0 + timedelta(minutes=i),
        score=score if score is not None else round(0.5 + (i % 50) / 100, 4),
        threshold=0.5,
        model_version=model_version,
        features={"amount": 10.0 + 7.5 * i, "merchant_category": "5999", "country": "FR",
                  "channel": "ecom", "customer_amount_ratio_30d": 6.2},
        reasons=REASONS,
    )


def seed(url: str, alerts: list[repo.NewAlert]) -> None:
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine).begin() as session:
            repo.insert_alerts(session, alerts)
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    token: str


def add_users(url: str, roles: dict[str, str]) -> dict[str, Account]:
    """Create users (name -> role) with :data:`PASSWORD`; return each with an API token."""
    engine = make_engine(url)
    out: dict[str, Account] = {}
    try:
        with make_sessionmaker(engine).begin() as session:
            for name, role in roles.items():
                auth.add_user(session, name, role, PASSWORD, "test")
                out[name] = Account(name, role, auth.create_token(session, name, "test"))
    finally:
        engine.dispose()
    return out


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def live_server(settings: WorkbenchSettings, workers_threads: int = 40) -> Iterator[str]:
    """A real uvicorn server on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    from scoring.workbench.app import create_app

    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, access_log=False,
                            log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the workbench did not start")
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.engine.dispose()


def bearer(account: Account) -> dict[str, str]:
    return {"Authorization": f"Bearer {account.token}"}


def login(client: httpx.Client, name: str, password: str = PASSWORD) -> httpx.Response:
    """Sign in through the form (fetches the sign-in CSRF token first)."""
    page = client.get("/login")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    return client.post("/login", data={"username": name, "password": password,
                                       "csrf_token": token, "next": "/queue"})


def csrf_of(html: str) -> str:
    return html.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


