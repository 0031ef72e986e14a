"""`fraud demo`: the whole loop on embedded defaults, driving the real ``fraud`` commands.

simulate -> local broker -> train -> evaluate (batch path, report) -> model
server -> db upgrade -> terminal stage + two scorers in one group (gRPC) <-
produce the live period -> archive -> summary -> workbench.
Every step is a ``fraud`` subprocess, so the demo exercises exactly what a user
runs; everything started is stopped at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from rich.console import Console

from features.errors import InputError
from fraud.dev.local_broker import LocalBroker
from scoring.model_server.process import model_server_process


@dataclass(frozen=True)
class DemoPlan:
    """The demo's bank and calendar (the Handbook protocol: 7 training days, 7-day delay)."""

    workdir: Path
    customers: int = 5000
    terminals: int = 10000
    start: date = date(2018, 4, 1)
    days: int = 62
    train_days: int = 7
    delay_days: int = 7
    live_days: int = 3
    epochs: int = 8
    seed: int = 0

    @property
    def train_start(self) -> date:
        """First training day."""
        return self.train_end - timedelta(days=self.train_days - 1)

    @property
    def train_end(self) -> date:
        """Last training day: the delay before the live period."""
        return self.live_start - timedelta(days=self.delay_days + 1)

    @property
    def live_start(self) -> date:
        """First day streamed live."""
        return self.start + timedelta(days=self.days - self.live_days)

    @property
    def live_end(self) -> date:
        """Last simulated day."""
        return self.start + timedelta(days=self.days - 1)


class Demo:
    """Runs the steps and keeps track of what must be stopped."""

    def __init__(self, plan: DemoPlan, console: Console) -> None:
        self.plan = plan
        self.console = console
        self.fraud = str(Path(sys.executable).with_name("fraud"))
        self.env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self.logs = plan.workdir / "logs"

    def step(self, title: str, *args: str) -> dict[str, Any]:
        """Run one ``fraud`` command, its output in a log; return its JSON last line."""
        started = time.monotonic()
        log = self.logs / f"{args[0]}.log"
        status = self.console.status(f"[bold]{title}[/] (fraud {args[0]}, log: {log})")
        with status, log.open("ab") as err:
            done = subprocess.run(
                [self.fraud, *args], stdout=subprocess.PIPE, stderr=err, env=self.env, check=False
            )
        if done.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"fraud {args[0]} failed ({done.returncode}):\n" + "\n".join(tail))
        last = done.stdout.decode().strip().splitlines()[-1]
        self.console.print(f"[green]✓[/] {title} [dim]({time.monotonic() - started:.0f}s)[/]")
        try:
            parsed: dict[str, Any] = json.loads(last)
        except json.JSONDecodeError:
            parsed = {"result": last}
        return parsed

    def start(self, stack: ExitStack, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start a long-running ``fraud`` command; it is stopped (SIGTERM) on exit."""
        log = (self.logs / f"{name}.log").open("ab")
        stack.callback(log.close)
        proc = subprocess.Popen(
            [self.fraud, *args], stdout=subprocess.PIPE, stderr=log, env=self.env
        )
        stack.callback(_terminate, proc)
        return proc


def run_demo(plan: DemoPlan, console: Console | None = None) -> dict[str, Any]:
    """Run the whole loop; return the closing summary's figures."""
    console = console or Console(stderr=True)
    if plan.workdir.exists():
        shutil.rmtree(plan.workdir)
    (plan.workdir / "logs").mkdir(parents=True)
    demo = Demo(plan, console)
    started = time.monotonic()
    w = plan.workdir
    lake, models, db = w / "lake", w / "models", f"sqlite:///{w / 'alerts.db'}"

    sim = demo.step(
        "Simulating the bank",
        "simulate",
        "--out",
        str(lake),
        "--customers",
        str(plan.customers),
        "--terminals",
        str(plan.terminals),
        "--days",
        str(plan.days),
        "--start-date",
        plan.start.isoformat(),
        "--seed",
        str(plan.seed),
    )
    history, live = _split_live_period(lake, plan, w)
    with ExitStack() as stack:
        broker = LocalBroker(log_path=demo.logs / "broker.log")
        with console.status("[bold]Starting the local Kafka broker (Tansu)[/]"):
            broker.start()
        stack.callback(broker.stop)
        console.print(f"[green]✓[/] Local broker on {broker.bootstrap}")

        model_path = demo.step(
            "Training (Beam + TFT, Keras under MirroredStrategy)",
            "train",
            "--input",
            str(lake),
            "--train-start",
            plan.train_start.isoformat(),
            "--train-end",
            plan.train_end.isoformat(),
            "--model-dir",
            str(models),
            "--delay-days",
            str(plan.delay_days),
            "--epochs",
            str(plan.epochs),
        )["result"]
        batch = demo.step(
            "Evaluating the live period through the batch path",
            "evaluate",
            "--input",
            str(lake),
            "--start",
            plan.live_start.isoformat(),
            "--end",
            plan.live_end.isoformat(),
            "--model-dir",
            str(models),
            "--scores-out",
            str(w / "batch_scores.csv"),
            "--report-dir",
            str(w / "report"),
        )
        server_log = stack.enter_context((demo.logs / "model-server.log").open("ab"))
        grpc_port = stack.enter_context(model_server_process(models, stderr=server_log))
        console.print(f"[green]✓[/] Model server (TF Serving API) on grpc :{grpc_port}")
        demo.step("Creating the alerts database", "db", "upgrade", "--db", db)

        wiring = [
            "--bootstrap-servers",
            broker.bootstrap,
            "--db",
            db,
            "--model-server",
            f"grpc://127.0.0.1:{grpc_port}",
            "--history",
            str(history),
        ]
        demo.start(stack, "terminal-stage", "terminal-stage", *wiring)
        console.print("[green]✓[/] Terminal stage (shared terminal state) started")
        scorers = [
            demo.start(stack, f"score-{i}", "score", *wiring, "--exit-when-idle", "8")
            for i in (1, 2)
        ]
        console.print("[green]✓[/] Two scorers started in one consumer group")
        produced = demo.step(
            "Producing the live period into Kafka",
            "produce",
            "--input",
            str(live),
            "--bootstrap-servers",
            broker.bootstrap,
            "--labels-topic",
            "fraud-labels",
        )
        with console.status("[bold]Scoring the live stream through gRPC[/] (logs: logs/score-*)"):
            summaries = []
            for scorer in scorers:
                out, _ = scorer.communicate(timeout=900)
                if scorer.returncode != 0:
                    raise RuntimeError(f"a scorer failed ({scorer.returncode}); see {demo.logs}")
                summaries.append(json.loads(out.decode().strip().splitlines()[-1]))
        scored = _combined(summaries)
        console.print(
            f"[green]✓[/] Scored {scored['events']:,} events "
            f"({' + '.join(str(s['events']) for s in summaries)} by the two scorers)"
        )
        archived = demo.step(
            "Archiving the live topics into the Parquet lake",
            "archive",
            "--out",
            str(w / "archive"),
            "--bootstrap-servers",
            broker.bootstrap,
            "--exit-when-idle",
            "2",
        )

    summary = _summary(plan, db, live, w, sim, produced, scored, batch, model_path)
    summary["archived_transactions"] = archived["transactions"]
    summary["archived_labels"] = archived["labels"]
    summary["archive"] = str(w / "archive")
    summary["seconds"] = round(time.monotonic() - started, 1)
    return summary


def _combined(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The scorers' run summaries added up (their rates: events over the longest run)."""
    events = sum(s["events"] for s in summaries)
    active = max(s["active_seconds"] for s in summaries) or 1.0
    return {
        "events": events,
        "dead_letters": sum(s["dead_letters"] for s in summaries),
        "events_per_s": round(events / active, 1),
        "per_scorer_events": [s["events"] for s in summaries],
    }


def _split_live_period(lake: Path, plan: DemoPlan, workdir: Path) -> tuple[Path, Path]:
    """History (labelled, before the live period) and the live period, as files."""
    from ingest.readers import read_transactions

    before = read_transactions(lake, labelled=True, end=plan.live_start - timedelta(days=1))
    live = read_transactions(lake, labelled=True, start=plan.live_start, end=plan.live_end)
    history_path, live_path = workdir / "history.parquet", workdir / "live.parquet"
    pq.write_table(before.table, history_path)
    pq.write_table(live.table, live_path)
    return history_path, live_path


def _summary(
    plan: DemoPlan,
    db: str,
    live: Path,
    workdir: Path,
    sim: dict[str, Any],
    produced: dict[str, Any],
    scored: dict[str, Any],
    batch: dict[str, Any],
    model_path: str,
) -> dict[str, Any]:
    """Figures of the run: alert precision against the simulator's labels, batch agreement."""
    from sqlalchemy import text

    from scoring.db.engine import make_engine

    labels = pq.read_table(live, columns=["transaction_id", "is_fraud"]).to_pydict()
    is_fraud = dict(zip(labels["transaction_id"], labels["is_fraud"], strict=True))
    engine = make_engine(db)
    with engine.connect() as conn:
        alerts = conn.execute(text("SELECT transaction_id, score, threshold FROM alerts")).all()
    engine.dispose()
    batch_scores = _read_scores(workdir / "batch_scores.csv")
    threshold = alerts[0].threshold if alerts else None
    batch_alerts = {t for t, s in batch_scores.items() if threshold is not None and s >= threshold}
    stream_alerts = {a.transaction_id for a in alerts}
    max_diff = max((abs(a.score - batch_scores[a.transaction_id]) for a in alerts), default=0.0)
    true_alerts = sum(is_fraud.get(a.transaction_id, 0) for a in alerts)
    return {
        "transactions_simulated": sim.get("transactions"),
        "model": model_path,
        "live_period": f"{plan.live_start}..{plan.live_end}",
        "events_produced": produced.get("sent"),
        "events_scored": scored["events"],
        "events_per_scorer": scored["per_scorer_events"],
        "dead_letters": scored["dead_letters"],
        "alerts": len(alerts),
        "alert_precision": round(true_alerts / len(alerts), 3) if alerts else None,
        "frauds_in_live_period": int(sum(is_fraud.values())),
        "frauds_alerted": true_alerts,
        "threshold": threshold,
        "scorer_events_per_s": scored["events_per_s"],
        "stream_vs_batch_same_alerts": stream_alerts == batch_alerts,
        "stream_vs_batch_max_score_diff": max_diff,
        "batch_auc_roc": batch.get("auc_roc"),
        "batch_card_precision_at_100": batch.get("card_precision_at_100"),
        "report": str(workdir / "report" / "index.html"),
        "database": db,
        "logs": str(workdir / "logs"),
    }


def _read_scores(path: Path) -> dict[str, float]:
    with path.open(newline="") as f:
        return {row["transaction_id"]: float(row["score"]) for row in csv.DictReader(f)}


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def demo_workbench(db: str, lake: Path | None, logs: Path, port: int = 8080,
                   user: str = "demo") -> Iterator[dict[str, str]]:
    """The workbench on the demo's database with a demo login; stopped on exit.

    Creates ``user`` (a supervisor) with a random password, starts ``fraud
    workbench`` on ``port`` (another free port if taken), checks that its
    sign-in page answers, and yields its address and the login.
    """
    fraud = str(Path(sys.executable).with_name("fraud"))
    password = secrets.token_urlsafe(12)
    env = dict(os.environ, FRAUD_PASSWORD=password)
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "workbench.log").open("ab") as log:
        added = subprocess.run([fraud, "users", "add", user, "--role", "supervisor", "--db", db],
                               stdout=subprocess.PIPE, stderr=log, env=env, check=False)
        if added.returncode != 0:
            raise RuntimeError(f"fraud users add failed ({added.returncode}); see {log.name}")
        port = port if _port_free(port) else _free_port()
        args = [fraud, "workbench", "--db", db, "--port", str(port)]
        if lake is not None:
            args += ["--lake", str(lake)]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, env=os.environ.copy())
        try:
            url = f"http://127.0.0.1:{port}/"
            _wait_until_answers(url + "login", proc)
            yield {"workbench": url, "workbench_login": f"{user} / {password}"}
        finally:
            _terminate(proc)


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_answers(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the workbench exited ({proc.returncode}); see logs/workbench.log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the workbench did not answer at {url}")
        time.sleep(0.2)


def check_workdir(workdir: Path) -> None:
    """Refuse to wipe a directory that is not a previous demo's."""
    if workdir.exists() and any(workdir.iterdir()) and not (workdir / "logs").is_dir():
        raise InputError(f"{workdir} exists and is not a demo work directory; choose another")
