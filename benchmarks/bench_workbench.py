"""Workbench speed with a million alerts: the queue (first and deep cursor pages, with and
without filters) and "next alert", over HTTP, on PostgreSQL and SQLite.

    .venv/bin/python benchmarks/bench_workbench.py                 # 1,000,000 alerts, both
    .venv/bin/python benchmarks/bench_workbench.py --alerts 3000 --requests 10   # smoke

The alerts are loaded in bulk (PostgreSQL: COPY; SQLite: one executemany
transaction), with the alerts' indexes dropped during the load and rebuilt
after, then ANALYZE. The workbench runs as a `fraud workbench` process; one
client sends the requests one after the other and times each, end to end
(connect, request, response read). The last stdout line is a JSON summary.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scoring.db.engine import make_engine, make_sessionmaker  # noqa: E402
from scoring.db.migrate import upgrade  # noqa: E402
from scoring.db.models import Alert  # noqa: E402
from scoring.workbench import auth  # noqa: E402
from scoring.workbench.queue import encode_cursor  # noqa: E402

FRAUD = Path(sys.executable).with_name("fraud")
PASSWORD = "benchmark password 1"
TARGET_P95_MS = 100.0
COLUMNS = ("transaction_id", "customer_id", "terminal_id", "amount", "event_time", "score",
           "threshold", "model_version", "features", "status", "created_at", "reviewed_at",
           "reviewed_by", "reasons", "assigned_to")
FILTERS = {"min_score": "0.6", "min_amount": "20", "max_amount": "400", "model_version": "2"}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- data ----------------------------------------------------------------------------------------


def generate(n: int, seed: int = 0) -> Iterator[tuple[Any, ...]]:
    """``n`` alert rows: 20% open (a few held by analysts), the rest decided, a year of them."""
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    ages = rng.uniform(0, 365 * 86400, n).astype(np.int64)
    scores = np.round(0.3 + 0.7 * rng.beta(1.2, 3.0, n), 6)
    amounts = np.round(rng.lognormal(3.8, 1.0, n), 2)
    customers = rng.integers(0, 100_000, n)
    terminals = rng.integers(0, 20_000, n)
    versions = rng.integers(1, 4, n)
    open_ = rng.random(n) < 0.2
    held = rng.random(n) < 0.01
    fraud = rng.random(n) < scores
    features = json.dumps({"amount": 0.0, "merchant_category": "5999", "country": "FR",
                           "channel": "ecom", "customer_amount_ratio_30d": 3.1})
    reasons = json.dumps([{"group": "amount", "contribution": 0.3,
                           "text": "amount 6.2x the card's 30-day mean"}])
    for i in range(n):
        created = now - timedelta(seconds=int(ages[i]))
        stamp = created.strftime("%Y-%m-%d %H:%M:%S")
        event = (created - timedelta(seconds=2)).strftime("%Y-%m-%d %H:%M:%S")
        if open_[i]:
            status, reviewed_at, reviewer = "open", None, None
        else:
            status = "confirmed_fraud" if fraud[i] else "false_positive"
            reviewed_at, reviewer = (created + timedelta(hours=2)).strftime(
                "%Y-%m-%d %H:%M:%S"), f"analyst{i % 12}"
        assigned = f"analyst{i % 12}" if open_[i] and held[i] else None
        yield (f"bench-{i}", f"C{customers[i]}", f"T{terminals[i]}", float(amounts[i]), event,
               float(scores[i]), 0.3, int(versions[i]), features, status, stamp, reviewed_at,
               reviewer, reasons, assigned)


def alert_indexes(engine: Any) -> list[tuple[str, list[str]]]:
    table = Alert.__table__
    return [(str(ix.name), [c.name for c in ix.columns]) for ix in table.indexes]  # type: ignore[attr-defined]


def load_sqlite(url: str, n: int) -> None:
    import sqlite3

    engine = make_engine(url)
    upgrade(engine)
    indexes = alert_indexes(engine)
    engine.dispose()
    path = url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    for name, _ in indexes:
        conn.execute(f"DROP INDEX IF EXISTS {name}")
    placeholders = ", ".join("?" * len(COLUMNS))
    with conn:
        conn.executemany(f"INSERT INTO alerts ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                         generate(n))
    for name, columns in indexes:
        conn.execute(f"CREATE INDEX {name} ON alerts ({', '.join(columns)})")
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()


def load_postgres(url: str, n: int) -> None:
    engine = make_engine(url)
    upgrade(engine)
    indexes = alert_indexes(engine)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for name, _ in indexes:
            cursor.execute(f"DROP INDEX IF EXISTS {name}")
        chunk = 100_000
        rows = generate(n)
        while True:
            buf = io.StringIO()
            count = 0
            for row in rows:
                buf.write("\t".join(_pg_text(v, i in TIMESTAMPS) for i, v in enumerate(row))
                          + "\n")
                count += 1
                if count == chunk:
                    break
            if count == 0:
                break
            buf.seek(0)
            cursor.copy_expert(f"COPY alerts ({', '.join(COLUMNS)}) FROM STDIN", buf)
            if count < chunk:
                break
        for name, columns in indexes:
            cursor.execute(f"CREATE INDEX {name} ON alerts ({', '.join(columns)})")
        raw.commit()
        driver: Any = raw.driver_connection
        driver.autocommit = True
        driver.cursor().execute("VACUUM ANALYZE alerts")
        driver.autocommit = False
    finally:
        raw.close()
        engine.dispose()


TIMESTAMPS = {COLUMNS.index(c) for c in ("event_time", "created_at", "reviewed_at")}


def _pg_text(value: Any, timestamp: bool) -> str:
    if value is None:
        return "\\N"
    text = str(value)
    if timestamp:
        return text + "+00"  # UTC
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


# --- the server and the client -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def workbench(url: str) -> Iterator[str]:
    port = free_port()
    # The access log goes to a file: a pipe nobody reads would fill up and block the server.
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [str(FRAUD), "workbench", "--db", url, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                err = log.read().decode(errors="replace")
                raise RuntimeError(f"the workbench did not start: {err[-2000:]}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def users(url: str) -> dict[str, str]:
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine).begin() as session:
            tokens = {}
            for name, role in (("bench-analyst", "analyst"), ("bench-supervisor", "supervisor")):
                auth.add_user(session, name, role, PASSWORD, "bench")
                tokens[name] = auth.create_token(session, name, "bench")
            return tokens
    finally:
        engine.dispose()


def deep_cursor(url: str, sort: str, offset: int, filters: dict[str, str] | None) -> str | None:
    """The cursor that starts a page ``offset`` rows into the open queue (found once, slowly)."""
    from sqlalchemy import select

    column = {"score": Alert.score, "time": Alert.created_at, "amount": Alert.amount}[sort]
    stmt = select(Alert).where(Alert.status == "open")
    if filters:
        stmt = stmt.where(Alert.score >= float(filters["min_score"]),
                          Alert.amount >= float(filters["min_amount"]),
                          Alert.amount <= float(filters["max_amount"]),
                          Alert.model_version == int(filters["model_version"]))
    order = (column.asc(), Alert.id.asc()) if sort == "time" else (column.desc(),
                                                                    Alert.id.desc())
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            alert = session.scalars(stmt.order_by(*order).offset(offset).limit(1)).first()
            return None if alert is None else encode_cursor(sort, alert)
    finally:
        engine.dispose()


def timed(n: int, call: Callable[[], httpx.Response], expect: int = 200) -> dict[str, float]:
    for _ in range(min(5, n)):  # warm-up: connection, caches
        call()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        response = call()
        samples.append(1000 * (time.perf_counter() - started))
        if response.status_code != expect:
            raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
    values = np.array(samples)
    return {"n": n, "p50_ms": round(float(np.percentile(values, 50)), 2),
            "p95_ms": round(float(np.percentile(values, 95)), 2),
            "p99_ms": round(float(np.percentile(values, 99)), 2),
            "max_ms": round(float(values.max()), 2)}


def sign_in(client: httpx.Client) -> None:
    page = client.get("/login")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    r = client.post("/login", data={"username": "bench-analyst", "password": PASSWORD,
                                    "csrf_token": token, "next": "/queue"})
    if r.status_code != 200:
        raise RuntimeError(f"sign-in failed: {r.status_code}")


def measure(url: str, n_alerts: int, requests: int) -> dict[str, Any]:
    deep = max(n_alerts // 10, 1)  # ~half-way through the open alerts (20% of all)
    tokens = users(url)
    cursors = {
        "score": deep_cursor(url, "score", deep, None),
        "time": deep_cursor(url, "time", deep, None),
        "score_filtered": deep_cursor(url, "score", max(deep // 20, 1), FILTERS),
    }
    out: dict[str, Any] = {}
    with workbench(url) as base:
        api = httpx.Client(base_url=base, timeout=30,
                           headers={"Authorization": f"Bearer {tokens['bench-analyst']}"})
        supervisor = httpx.Client(base_url=base, timeout=30, headers={
            "Authorization": f"Bearer {tokens['bench-supervisor']}"})
        page = httpx.Client(base_url=base, timeout=30, follow_redirects=True)
        sign_in(page)

        def api_get(params: dict[str, str]) -> Callable[[], httpx.Response]:
            return lambda: api.get("/api/v1/alerts", params=params)

        def page_get(params: dict[str, str]) -> Callable[[], httpx.Response]:
            return lambda: page.get("/queue", params=params)

        scenarios: dict[str, Callable[[], httpx.Response]] = {
            "queue_page_first": page_get({}),
            "queue_page_deep_cursor": page_get({"cursor": cursors["score"] or ""}),
            "queue_page_filtered_first": page_get(FILTERS),
            "queue_page_filtered_deep_cursor": page_get(
                {**FILTERS, "cursor": cursors["score_filtered"] or ""}),
            "queue_page_oldest_first_deep_cursor": page_get(
                {"sort": "time", "cursor": cursors["time"] or ""}),
            "queue_page_card_filter": page_get({"customer_id": "C4242", "status": "all"}),
            "api_alerts_first": api_get({}),
            "api_alerts_deep_cursor": api_get({"cursor": cursors["score"] or ""}),
            "api_alerts_filtered_deep_cursor": api_get(
                {**FILTERS, "cursor": cursors["score_filtered"] or ""}),
            "api_alerts_one_analyst": lambda: supervisor.get(
                "/api/v1/alerts", params={"assignee": "analyst3"}),
            "api_alerts_unassigned_by_time": api_get({"assignee": "none", "sort": "time"}),
            "api_alerts_amount_sort_filtered": api_get({**FILTERS, "sort": "amount"}),
        }
        for name, call in scenarios.items():
            out[name] = timed(requests, call)
            say(f"  {name}: {out[name]}")
        out["next_alert"] = timed(requests, lambda: api.post("/api/v1/alerts/next"))
        say(f"  next_alert: {out['next_alert']}")
        # Not a target: the dashboard's aggregates scan the table (a few requests only).
        out["stats_api_not_a_target"] = timed(min(requests, 5), lambda: api.get("/api/v1/stats"))
        say(f"  stats (dashboard figures): {out['stats_api_not_a_target']}")
        rows = page.get("/queue", params={"cursor": cursors["score"] or ""}).text.count(
            "<tr class=\"sla-")
        out["rows_per_page"] = rows
    return out


@contextmanager
def postgres_database(admin_url: str | None) -> Iterator[str]:
    import psycopg2

    host = os.environ.get("FRAUD_TEST_PG_HOST", "127.0.0.1")
    port = int(os.environ.get("FRAUD_TEST_PG_PORT", "5432"))
    if admin_url:
        yield admin_url
        return
    name = f"fraud_bench_{uuid.uuid4().hex[:8]}"
    user = "postgres"
    admin = psycopg2.connect(host=host, port=port, user=user, dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg2://{user}@{host}:{port}/{name}"
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--db", choices=("both", "sqlite", "postgresql"), default="both")
    parser.add_argument("--pg-url", help="an empty PostgreSQL database (default: a new one)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"))
    args = parser.parse_args()
    summary: dict[str, Any] = {
        "alerts": args.alerts, "requests_per_scenario": args.requests,
        "target_p95_ms": TARGET_P95_MS,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(), "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                                        f"{platform.python_version()}",
    }
    backends = ["postgresql", "sqlite"] if args.db == "both" else [args.db]
    for backend in backends:
        started = time.perf_counter()
        if backend == "sqlite":
            path = args.workdir / f"bench-workbench-{uuid.uuid4().hex[:8]}.db"
            url = f"sqlite:///{path}"
            try:
                say(f"sqlite: loading {args.alerts:,} alerts into {path}")
                load_sqlite(url, args.alerts)
                load_s = time.perf_counter() - started
                say(f"sqlite: loaded in {load_s:.1f} s")
                figures = measure(url, args.alerts, args.requests)
            finally:
                for suffix in ("", "-wal", "-shm"):
                    Path(str(path) + suffix).unlink(missing_ok=True)
        else:
            with postgres_database(args.pg_url) as url:
                say(f"postgresql: loading {args.alerts:,} alerts (COPY)")
                load_postgres(url, args.alerts)
                load_s = time.perf_counter() - started
                say(f"postgresql: loaded in {load_s:.1f} s")
                figures = measure(url, args.alerts, args.requests)
        worst = max(v["p95_ms"] for k, v in figures.items()
                    if isinstance(v, dict) and not k.endswith("not_a_target"))
        summary[backend] = {"load_seconds": round(load_s, 1), **figures,
                            "worst_p95_ms": worst, "meets_target": worst < TARGET_P95_MS}
    print(json.dumps(summary))


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
