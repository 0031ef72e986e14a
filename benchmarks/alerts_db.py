"""Alerts database write speed: idempotent batch inserts and checkpoint upserts.

Usage: .venv/bin/python benchmarks/alerts_db.py [--db URL] [--alerts 50000] [--batch 1000]
Prints JSON figures last. The database must be empty or new (it is migrated first).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from features.spec import BEHAVIOURAL_FEATURES
from scoring.db import repository as repo
from scoring.db.engine import make_engine, make_sessionmaker, safe_url
from scoring.db.migrate import upgrade


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default=None, help="default: a new SQLite file in a tmp dir")
    parser.add_argument("--alerts", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'bench.db'}"
        print(json.dumps(run(url, args.alerts, args.batch)))


def run(url: str, n: int, batch_size: int) -> dict[str, object]:
    engine = make_engine(url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    features = {name: 0.5 for name in BEHAVIOURAL_FEATURES}
    alerts = [
        repo.NewAlert(f"bench-{i}", f"c{i % 5000}", f"t{i % 10000}", 42.0,
                      t0 + timedelta(seconds=i), 0.9, 0.5, 1, features)
        for i in range(n)
    ]
    state = bytes(256 * 1024)

    def write_all() -> tuple[int, float]:
        inserted, start = 0, time.perf_counter()
        for offset in range(0, n, batch_size):
            with sessions.begin() as session:  # one scorer commit: alerts + checkpoint
                inserted += repo.insert_alerts(session, alerts[offset:offset + batch_size])
                repo.save_checkpoint(session, "bench", "transactions:0",
                                     {"transactions:0": offset}, state, 1)
        return inserted, time.perf_counter() - start

    fresh, fresh_s = write_all()
    replayed, replay_s = write_all()
    engine.dispose()
    return {
        "db": safe_url(url).split(":")[0],
        "alerts": n,
        "batch": batch_size,
        "features_per_alert": len(features),
        "checkpoint_state_bytes": len(state),
        "insert_alerts_per_s": round(fresh / fresh_s),
        "replay_alerts_per_s": round(n / replay_s),
        "replay_inserted": replayed,
    }


if __name__ == "__main__":
    main()
