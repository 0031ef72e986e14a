"""N scorers in one consumer group and the terminal stage, as processes, against the real broker.

Scorers join, leave, die with ``kill -9``; the stage is killed and restarted,
and held back: every event above the threshold still gets exactly one alert,
scored as the batch path scores it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from ingest.kafka_io import KafkaSettings, ensure_topics
from scoring.db.engine import make_engine
from scoring.db.migrate import upgrade
from tests.integration.scoring_support import (
    Topics,
    alerts,
    produce,
    scorer_subprocess,
    small_bank,
    stage_subprocess,
    wait_for,
)
from tests.integration.test_scorer import expected_scores

pytestmark = pytest.mark.integration

THRESHOLD = 0.3
PARTITIONS = 6


@pytest.fixture
def topics(unique_topic) -> Topics:
    return Topics(
        unique_topic("tx"), unique_topic("labels"), unique_topic("dlq"), unique_topic("group")
    )


class Fleet:
    """Scorer and stage processes of one test, each with its own metrics port and log."""

    def __init__(self, topics: Topics, bootstrap: str, db: str, model_dir: Path, tmp: Path):
        self.topics, self.bootstrap, self.db, self.model_dir, self.tmp = (
            topics, bootstrap, db, model_dir, tmp
        )
        self.scorers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        self.stage: subprocess.Popen[bytes] | None = None
        self.stage_port = 0

    def common(self) -> list[str]:
        return ["--bootstrap-servers", self.bootstrap, "--db", self.db,
                "--model-dir", str(self.model_dir), "--checkpoint-seconds", "0.5"]

    def start_scorer(self, name: str) -> None:
        port = _free_port()
        args = [*self.common(), "--threshold", str(THRESHOLD), "--max-batch", "100",
                "--metrics-port", str(port), *self.topics.cli_args()]
        self.scorers[name] = (scorer_subprocess(args, self.tmp / f"{name}.log"), port)

    def start_stage(self) -> None:
        self.stage_port = _free_port()
        args = [*self.common(), "--metrics-port", str(self.stage_port),
                *self.topics.stage_cli_args()]
        self.stage = stage_subprocess(args, self.tmp / "stage.log")

    def health(self, name: str) -> dict:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.scorers[name][1]}/healthz",
                                        timeout=2) as answer:
                return dict(json.load(answer))
        except urllib.error.HTTPError as err:  # 503: degraded, with the same body
            return dict(json.load(err))
        except OSError:
            return {}

    def owned(self) -> dict[str, list[int]]:
        return {name: self.health(name).get("partitions_owned", []) for name in self.scorers}

    def stop_all(self) -> None:
        for proc, _ in self.scorers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        if self.stage is not None and self.stage.poll() is None:
            self.stage.send_signal(signal.SIGTERM)
        for proc, _ in self.scorers.values():
            _wait(proc)
        if self.stage is not None:
            _wait(self.stage)

    def logs(self) -> str:
        return "\n".join(p.read_text()[-1500:] for p in sorted(self.tmp.glob("*.log")))


def _wait(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _prepare(kafka_broker, topics: Topics, postgres_url: str) -> None:
    upgrade(make_engine(postgres_url))
    ensure_topics(
        KafkaSettings(kafka_broker.bootstrap), {topics.transactions: PARTITIONS, topics.labels: 3}
    )


def _produce_slowly(bootstrap: str, topic: str, table: pa.Table, pause: float = 0.5) -> None:
    for start in range(0, table.num_rows, 100):
        produce(bootstrap, topic, table.slice(start, 100))
        time.sleep(pause)


def _check_exact(postgres_url: str, events: pa.Table, fleet: Fleet) -> None:
    expected = expected_scores(events, weight=0.5)
    above = {t for t, s in expected.items() if s >= THRESHOLD + 1e-5}
    borderline = {t for t, s in expected.items() if abs(s - THRESHOLD) < 1e-5}
    written = alerts(postgres_url)
    ids = [a["transaction_id"] for a in written]
    assert len(ids) == len(set(ids)), "an event was alerted twice"
    assert above <= set(ids) <= above | borderline, fleet.logs()[-4000:]
    worst = max(abs(a["score"] - expected[a["transaction_id"]]) for a in written)
    assert worst <= 1e-5, f"largest stream/batch score difference {worst}"


def _phases(events: pa.Table, count: int = 3) -> list[pa.Table]:
    size = -(-events.num_rows // count)
    return [events.slice(start, size) for start in range(0, events.num_rows, size)]


def _feeder(bootstrap: str, topic: str, table: pa.Table) -> threading.Thread:
    feeder = threading.Thread(target=_produce_slowly, args=(bootstrap, topic, table))
    feeder.start()
    return feeder


def _alerted_from(postgres_url: str, ids: set[str]) -> bool:
    return bool(ids & {str(a["transaction_id"]) for a in alerts(postgres_url)})


def test_scorers_join_leave_and_die_and_the_stage_restarts_without_losing_exactness(
    kafka_broker, topics, postgres_url, toy_model_dir, tmp_path
):
    _prepare(kafka_broker, topics, postgres_url)
    events = small_bank(days=30, seed=7)  # ~5,400 events, fed in three phases
    first, second, third = _phases(events)
    expected = expected_scores(events, weight=0.5)
    above = {t for t, s in expected.items() if s >= THRESHOLD + 1e-5}
    above_second = above & set(second.column("transaction_id").to_pylist())
    assert above_second, "the second phase has no event above the threshold"
    fleet = Fleet(topics, kafka_broker.bootstrap, postgres_url, toy_model_dir, tmp_path)
    feeders: list[threading.Thread] = []
    try:
        fleet.start_stage()
        fleet.start_scorer("a")
        fleet.start_scorer("b")
        feeders.append(_feeder(kafka_broker.bootstrap, topics.transactions, first))
        wait_for(lambda: len(alerts(postgres_url)) > 50, 120, "the first alerts")
        wait_for(lambda: all(fleet.owned().values()), 60, "both scorers to own partitions")

        fleet.start_scorer("c")  # joins
        wait_for(lambda: len(fleet.owned()["c"]) > 0, 60, "the new scorer to get partitions")

        proc, _ = fleet.scorers["a"]  # leaves gracefully
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, fleet.logs()[-3000:]

        feeders[0].join()
        feeders.append(_feeder(kafka_broker.bootstrap, topics.transactions, second))
        wait_for(lambda: _alerted_from(postgres_url, above_second), 90, "progress after a leave")
        proc, _ = fleet.scorers["b"]  # dies mid-stream and is not restarted
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

        assert fleet.stage is not None  # the stage dies and is restarted
        fleet.stage.send_signal(signal.SIGKILL)
        fleet.stage.wait(10)
        fleet.start_stage()

        feeders[1].join()
        feeders.append(_feeder(kafka_broker.bootstrap, topics.transactions, third))
        feeders[2].join()
        wait_for(lambda: sorted(fleet.owned()["c"]) == list(range(PARTITIONS)), 90,
                 "the last scorer to own every partition")
        wait_for(lambda: above <= {a["transaction_id"] for a in alerts(postgres_url)}, 120,
                 "every event above the threshold to be alerted")
    finally:
        for feeder in feeders:
            feeder.join()
        fleet.stop_all()
    _check_exact(postgres_url, events, fleet)


def _owners_of_current_chains(postgres_url: str, group: str) -> dict[int, set[str]]:
    """Per partition, who wrote the rows a restore would read (from the newest base on)."""
    from sqlalchemy import text

    with make_engine(postgres_url).connect() as conn:
        rows = conn.execute(
            text("SELECT partition, seq, kind, owner FROM partition_checkpoints "
                 "WHERE consumer_group = :g ORDER BY partition, seq"),
            {"g": group},
        ).all()
    owners: dict[int, set[str]] = {}
    for partition, _seq, kind, owner in rows:
        if kind == "base":
            owners[partition] = set()
        owners.setdefault(partition, set()).add(owner)
    return owners


def test_a_scorer_frozen_past_its_session_timeout_cannot_bend_its_successors_state(
    kafka_broker, topics, postgres_url, toy_model_dir, tmp_path
):
    """SIGSTOP a scorer mid-stream until the group gives its partitions away, then wake it."""
    _prepare(kafka_broker, topics, postgres_url)
    events = small_bank(days=20, seed=11)
    first, second, third = _phases(events)
    fleet = Fleet(topics, kafka_broker.bootstrap, postgres_url, toy_model_dir, tmp_path)
    feeders: list[threading.Thread] = []
    try:
        fleet.start_stage()
        fleet.start_scorer("a")
        fleet.start_scorer("b")
        wait_for(lambda: all(fleet.owned().values()), 90, "both scorers to own partitions")
        feeders.append(_feeder(kafka_broker.bootstrap, topics.transactions, first))
        wait_for(lambda: len(alerts(postgres_url)) > 20, 120, "the first alerts")

        frozen, _ = fleet.scorers["b"]
        frozen.send_signal(signal.SIGSTOP)  # mid-stream, with state not yet checkpointed
        wait_for(lambda: sorted(fleet.owned()["a"]) == list(range(PARTITIONS)), 90,
                 "the other scorer to take every partition")
        feeders[0].join()
        feeders.append(_feeder(kafka_broker.bootstrap, topics.transactions, second))
        feeders[1].join()
        frozen.send_signal(signal.SIGCONT)  # wakes up believing it owns its partitions
        wait_for(lambda: all(fleet.owned().values()), 90, "the woken scorer to rejoin")
        feeders.append(_feeder(kafka_broker.bootstrap, topics.transactions, third))
        feeders[2].join()
        expected = expected_scores(events, weight=0.5)
        above = {t for t, s in expected.items() if s >= THRESHOLD + 1e-5}
        wait_for(lambda: above <= {a["transaction_id"] for a in alerts(postgres_url)}, 120,
                 "every event above the threshold to be alerted")
    finally:
        if fleet.scorers.get("b") and fleet.scorers["b"][0].poll() is None:
            fleet.scorers["b"][0].send_signal(signal.SIGCONT)
        for feeder in feeders:
            feeder.join()
        fleet.stop_all()
    _check_exact(postgres_url, events, fleet)
    owners = _owners_of_current_chains(postgres_url, topics.group)
    assert owners and all(len(o) == 1 for o in owners.values()), owners


def test_a_stage_held_back_holds_the_scorers_until_it_catches_up(
    kafka_broker, topics, postgres_url, toy_model_dir, tmp_path
):
    _prepare(kafka_broker, topics, postgres_url)
    bank = small_bank(days=14, seed=9)
    # The later events are more than the delay (7 days) past the first ones: they need
    # terminal history only a stage that reads on can give.
    first = bank.slice(0, 300)
    times = bank.column("timestamp").to_pylist()
    gap = next(i for i, t in enumerate(times) if t > times[299] + timedelta(days=8))
    later = bank.slice(gap, 300)
    produced = pa.concat_tables([first, later])
    fleet = Fleet(topics, kafka_broker.bootstrap, postgres_url, toy_model_dir, tmp_path)
    try:
        fleet.start_stage()
        fleet.start_scorer("a")
        fleet.start_scorer("b")
        produce(kafka_broker.bootstrap, topics.transactions, first)
        wait_for(lambda: len(alerts(postgres_url)) > 0, 120, "the first alerts")
        time.sleep(2)
        settled = len(alerts(postgres_url))

        assert fleet.stage is not None
        fleet.stage.send_signal(signal.SIGSTOP)  # the stage stops reading
        produce(kafka_broker.bootstrap, topics.transactions, later)

        def holding() -> bool:
            states = [fleet.health(name) for name in fleet.scorers]
            return any(h.get("terminal_stage", "ok").startswith("waiting") for h in states)

        wait_for(holding, 60, "a scorer to report that it waits for the stage")
        held = [fleet.health(name) for name in fleet.scorers]
        assert any(h["status"] == "degraded" for h in held)
        time.sleep(3)
        written = {a["transaction_id"] for a in alerts(postgres_url)}
        later_ids = set(later.column("transaction_id").to_pylist())
        assert not written & later_ids, "an event was scored while the stage was behind"
        assert len(written) >= settled
        expected = expected_scores(produced, weight=0.5)

        fleet.stage.send_signal(signal.SIGCONT)  # it catches up: the scorers go on by themselves
        above = {t for t, s in expected.items() if s >= THRESHOLD + 1e-5}
        wait_for(lambda: above <= {a["transaction_id"] for a in alerts(postgres_url)}, 120,
                 "the held events to be scored")
        wait_for(lambda: all(fleet.health(n).get("status") == "ok" for n in fleet.scorers), 60,
                 "both scorers healthy again")
    finally:
        if fleet.stage is not None and fleet.stage.poll() is None:
            fleet.stage.send_signal(signal.SIGCONT)
        fleet.stop_all()
    _check_exact(postgres_url, produced, fleet)
