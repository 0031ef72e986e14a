"""``fraud retrain``: the scheduled retraining, from the lake to a gated promotion.

1. **Windows** (:func:`choose_windows`): the newest day with data minus the
   label delay is the last day whose labels are known. The evaluation window
   is the ``eval_days`` most recent labelled days; the training window is the
   ``train_days`` before it; the features' history before that. Neither model
   trained on the evaluation window: the challenger by construction, the
   champion is checked (its training window must end before it).
2. **Challenger**: ``training.train_job.run`` into a hidden staging folder of
   the model directory (``.retrain-*``, never a version a server loads).
3. **Evaluation**: challenger and champion (the version labelled ``stable``)
   on the evaluation window through the batch path
   (``training.evaluate_job.evaluate``), assessing the same transactions.
4. **Gate** (:mod:`training.gate`): promote or keep, with the reason.
5. **Record**: the decision goes into the challenger's metadata
   (``details.retrain``) before it is published as the next version, and into
   the decision log; a promotion moves the ``stable`` label (or ``canary``)
   in ``models.config`` (:mod:`features.model_registry`).

A dry run does steps 1-4 and writes nothing into the model directory.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from features import model_config as configs
from features import model_registry as registry
from features import spec
from features.behaviour import lookback_days
from features.errors import InputError
from features.model_dir import ModelMetadata, list_versions, read_metadata, write_metadata
from training.gate import GateRule, Verdict, decide
from training.settings import TrainConfig

Progress = Callable[[str], None]

#: Exit codes a scheduler can act on.
EXIT_PROMOTED = 0
EXIT_FAILED = 1
EXIT_INPUT_ERROR = 2
EXIT_KEPT = 3
#: Staging folders of challengers (hidden: no server loads them, no listing shows them).
STAGING_PREFIX = ".retrain-"
RETRAIN_LOCK = ".retrain.lock"


@dataclass(frozen=True)
class RetrainConfig:
    """Everything ``fraud retrain`` was asked to do."""

    input_path: Path
    model_dir: Path
    rule: GateRule = field(default_factory=GateRule)
    train_days: int = 28
    eval_days: int = 7
    delay_days: int = spec.DEFAULT_DELAY_DAYS
    #: Days of history before the training window (default: all the features look back over).
    history_days: int | None = None
    #: Decide as if the newest day with data were this one (default: the lake's newest day).
    as_of: date | None = None
    dry_run: bool = False
    #: Put an accepted challenger on the ``canary`` label instead of ``stable``.
    canary: bool = False
    model_name: str = "fraud"
    #: base_path written into a new models.config (default: the model directory, absolute).
    serving_base_path: str | None = None
    alerts_per_day: int = 100
    runner: str = "DirectRunner"
    beam_options: tuple[str, ...] = ()
    label_files: tuple[Path, ...] = ()
    train: TrainConfig = field(default_factory=TrainConfig)
    #: Model servers to wait for between adding a version and moving a label to it
    #: (the official TF Serving refuses both in one change); none: one change.
    wait_for_servers: tuple[str, ...] = ()
    wait_seconds: float = 300.0


@dataclass(frozen=True)
class Windows:
    """The days a retraining reads, trains on and evaluates on (UTC dates, inclusive)."""

    first_day: date
    newest_day: date
    as_of: date
    labelled_through: date
    history_start: date
    train_start: date
    train_end: date
    eval_start: date
    eval_end: date

    def as_dict(self) -> dict[str, str]:
        """ISO dates, for the decision."""
        return {k: v.isoformat() for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class RetrainResult:
    """The decision (printed last as JSON) and the exit code it maps to."""

    decision: dict[str, Any]
    exit_code: int


def choose_windows(
    first_day: date,
    newest_day: date,
    *,
    delay_days: int,
    train_days: int,
    eval_days: int,
    history_days: int | None = None,
    as_of: date | None = None,
) -> Windows:
    """The latest complete windows under the label delay (see the module doc).

    ``labelled_through = min(as_of, newest_day) - delay_days``; the evaluation
    window is the ``eval_days`` ending there, the training window the
    ``train_days`` before it, and the data must reach back over the history
    the features need before the training window (:class:`InputError` else).
    """
    if train_days < 2:
        raise InputError(f"--train-days must be >= 2, got {train_days}")
    if eval_days < 1:
        raise InputError(f"--eval-days must be >= 1, got {eval_days}")
    if delay_days < 0:
        raise InputError(f"--delay-days must be >= 0, got {delay_days}")
    history = lookback_days(delay_days) if history_days is None else history_days
    if history < 0:
        raise InputError(f"--history-days must be >= 0, got {history}")
    day = newest_day if as_of is None else min(as_of, newest_day)
    labelled_through = day - timedelta(days=delay_days)
    eval_end = labelled_through
    eval_start = eval_end - timedelta(days=eval_days - 1)
    train_end = eval_start - timedelta(days=1)
    train_start = train_end - timedelta(days=train_days - 1)
    history_start = train_start - timedelta(days=history)
    if first_day > history_start:
        raise InputError(
            f"the input holds data from {first_day} to {newest_day}: labels are known through "
            f"{labelled_through} ({delay_days}-day label delay), so the evaluation window is "
            f"{eval_start} to {eval_end} and the {train_days}-day training window "
            f"{train_start} to {train_end}, whose features need data from {history_start} "
            f"({history} days of history); {(first_day - history_start).days} day(s) missing"
        )
    return Windows(first_day, newest_day, day, labelled_through, history_start, train_start,
                   train_end, eval_start, eval_end)


def data_days(input_path: Path) -> tuple[date, date]:
    """First and newest day with transactions in the input (a lake, partitions, or files)."""
    from ingest import lake, readers

    if not input_path.exists():
        raise InputError(f"input not found: {input_path}")
    days: list[date] = []
    if lake.is_lake(input_path):
        files = lake.data_files(input_path, lake.TRANSACTIONS, None, None)
        days = [date.fromisoformat(f.parent.name.removeprefix("date=")) for f in files]
    elif input_path.is_dir():
        files = readers.list_files(input_path)
        parents = [f.parent.name for f in files]
        if parents and all(p.startswith("date=") for p in parents):
            days = [date.fromisoformat(p.removeprefix("date=")) for p in parents]
    if not days and not lake.is_lake(input_path):
        table = readers.read_transactions(input_path, labelled=False).table
        if table.num_rows:
            stamps = table.column(spec.TIMESTAMP).to_numpy().astype("datetime64[D]")
            days = [stamps.min().astype(date), stamps.max().astype(date)]
    if not days:
        raise InputError(f"no transactions in {input_path}")
    return min(days), max(days)


@contextmanager
def _exclusive(model_dir: Path) -> Iterator[None]:
    """One retraining at a time per model directory (a second one is an input error)."""
    with (model_dir / RETRAIN_LOCK).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"another fraud retrain is running on {model_dir}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_request(config: RetrainConfig) -> None:
    """Reject a bad request before anything is read."""
    if not config.input_path.exists():
        raise InputError(f"input not found: {config.input_path}")
    if config.model_dir.exists() and not config.model_dir.is_dir():
        raise InputError(f"--model-dir {config.model_dir} is not a directory")
    if config.alerts_per_day < 1:
        raise InputError(f"--alerts-per-day must be >= 1, got {config.alerts_per_day}")


def champion_of(model_dir: Path) -> int | None:
    """The version the ``stable`` label points at (None: no config or no label)."""
    config = registry.read_config(model_dir)
    stable = config.label(configs.STABLE) if config is not None else None
    if stable is not None and stable not in list_versions(model_dir):
        raise InputError(f"the stable label of {configs.config_path(model_dir)} points at "
                         f"version {stable}, which is not in {model_dir}")
    return stable


def _check_champion_window(metadata: ModelMetadata, champion: int, windows: Windows,
                           eval_days: int, delay_days: int) -> None:
    trained_until = metadata.train_end
    if trained_until is not None and trained_until >= windows.eval_start:
        need = trained_until + timedelta(days=eval_days + delay_days)
        raise InputError(
            f"the champion (version {champion}) trained on days through {trained_until}, "
            f"inside the evaluation window {windows.eval_start} to {windows.eval_end}: there "
            f"are not {eval_days} labelled days neither model trained on. Run again once the "
            f"input holds data through {need}."
        )


def run(config: RetrainConfig, progress: Progress | None = None) -> RetrainResult:
    """Run the retraining; every input error before any training."""
    say = progress or (lambda _: None)
    started = time.perf_counter()
    check_request(config)
    first, newest = data_days(config.input_path)
    windows = choose_windows(
        first, newest, delay_days=config.delay_days, train_days=config.train_days,
        eval_days=config.eval_days, history_days=config.history_days, as_of=config.as_of,
    )
    say(f"data {first} to {newest}; labels known through {windows.labelled_through}; "
        f"training {windows.train_start} to {windows.train_end}, evaluation "
        f"{windows.eval_start} to {windows.eval_end}")
    config.model_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(config.model_dir):
        champion = champion_of(config.model_dir)
        if champion is not None:
            champion_meta = read_metadata(config.model_dir, champion)
            _check_champion_window(champion_meta, champion, windows, config.eval_days,
                                   config.delay_days)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        staging = config.model_dir / f"{STAGING_PREFIX}{stamp}-{os.getpid()}"
        try:
            return _run(config, windows, champion, staging, stamp, started, say)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _run(config: RetrainConfig, windows: Windows, champion: int | None, staging: Path,
         stamp: str, started: float, say: Progress) -> RetrainResult:
    from training.evaluate_job import evaluate
    from training.train_job import TrainJobConfig
    from training.train_job import run as train

    timings: dict[str, float] = {}
    logs = staging / "logs" if config.dry_run else config.model_dir / "logs" / f"retrain-{stamp}"
    job = TrainJobConfig(
        input_path=config.input_path, train_start=windows.train_start,
        train_end=windows.train_end, model_dir=staging, delay_days=config.delay_days,
        runner=config.runner, beam_options=config.beam_options, logs_dir=logs,
        alerts_per_day=config.alerts_per_day,
        history_days=(windows.train_start - windows.history_start).days,
        label_files=config.label_files, train=config.train,
    )
    clock = time.perf_counter()
    trained = train(job, progress=say)
    timings["train_seconds"] = round(time.perf_counter() - clock, 1)
    clock = time.perf_counter()
    figures: dict[str, dict[str, Any]] = {}
    for who, model_dir, version in (("challenger", staging, 1),
                                    ("champion", config.model_dir, champion)):
        if version is None:
            continue
        say(f"evaluating the {who} on {windows.eval_start} to {windows.eval_end}")
        figures[who] = evaluate(config.input_path, windows.eval_start, windows.eval_end,
                                model_dir, version=version,
                                compromised_since=windows.train_start)
    timings["evaluate_seconds"] = round(time.perf_counter() - clock, 1)
    verdict = decide(figures["challenger"], figures.get("champion"), config.rule)
    say(verdict.reason)
    decision = _decision(config, windows, champion, verdict, figures, trained.metadata)
    if config.dry_run:
        timings["total_seconds"] = round(time.perf_counter() - started, 1)
        decision.update(dry_run=True, challenger_version=None, timings=timings,
                        exit_code=EXIT_PROMOTED if verdict.promote else EXIT_KEPT)
        return RetrainResult(decision, decision["exit_code"])
    return _publish_and_record(config, staging / "1", trained.metadata, decision, verdict,
                               champion, timings, started, say)


def _decision(config: RetrainConfig, windows: Windows, champion: int | None, verdict: Verdict,
              figures: dict[str, dict[str, Any]], challenger: ModelMetadata) -> dict[str, Any]:
    if champion is None:
        outcome = "first_champion"
    elif verdict.promote:
        outcome = "canary" if config.canary else "promoted"
    else:
        outcome = "kept_champion"
    compatible = True
    if champion is not None:
        compatible = read_metadata(config.model_dir, champion).behaviour == challenger.behaviour
    return {
        "decision": outcome,
        "promoted": verdict.promote,
        "reason": verdict.reason if compatible else (
            verdict.reason + "; NOTE: the challenger's behavioural configuration differs from "
            "the champion's: running scorers refuse it until restarted with a rebuilt state"),
        "champion_version": champion,
        "gate": {**config.rule.as_dict(), **verdict.as_dict()},
        "windows": windows.as_dict(),
        "figures": figures,
        "input": str(config.input_path),
        "dry_run": False,
    }


def _publish_and_record(config: RetrainConfig, staged: Path, metadata: ModelMetadata,
                        decision: dict[str, Any], verdict: Verdict, champion: int | None,
                        timings: dict[str, float], started: float,
                        say: Progress) -> RetrainResult:
    from training.export import publish

    with registry.locked(config.model_dir):
        now_stable = champion_of(config.model_dir)
        if now_stable != champion and verdict.promote:
            decision.update(decision="kept_champion", promoted=False, reason=(
                f"the stable label moved during the run (was {champion}, now {now_stable}): "
                "the challenger was compared with another version; run again"))
        record = {k: decision[k] for k in ("decision", "reason", "champion_version", "gate",
                                           "windows", "figures")}
        write_metadata(staged, replace(metadata, details={**metadata.details, "retrain": record}))
        published = publish(staged, config.model_dir)
        version = int(published.name)
        say(f"challenger published as version {version}")
        timings["total_seconds"] = round(time.perf_counter() - started, 1)
        entry = {"action": "retrain", **record, "challenger_version": version,
                 "timings": timings, "input": decision["input"]}
        promoted = decision["decision"] in ("promoted", "first_champion", "canary")
        wait = None
        if config.wait_for_servers:
            from scoring.clients.wait import waiter

            wait = waiter(list(config.wait_for_servers), config.model_name,
                          config.wait_seconds, say)
        if not promoted:
            registry.record(config.model_dir, {**entry, "version": version})
        else:
            try:
                if decision["decision"] == "canary":
                    registry.set_canary(config.model_dir, version, action="retrain",
                                        details=entry, name=config.model_name,
                                        base_path=config.serving_base_path, wait=wait)
                else:
                    registry.promote(config.model_dir, version, action="retrain",
                                     details=entry, reason=decision["reason"],
                                     name=config.model_name,
                                     base_path=config.serving_base_path, wait=wait)
            except InputError as err:
                decision.update(decision="promotion_incomplete", reason=(
                    f"{decision['reason']}; but the label did not move: {err}"))
                promoted = False
                registry.record(config.model_dir, {
                    **entry, "version": version, "decision": decision["decision"],
                    "reason": decision["reason"]})
        config_now = registry.read_config(config.model_dir)
    decision.update(
        challenger_version=version, timings=timings,
        labels=dict(config_now.labels) if config_now else {},
        served_versions=list(config_now.served_versions) if config_now else [],
        model_config=str(configs.config_path(config.model_dir)),
        exit_code=(EXIT_PROMOTED if promoted else
                   EXIT_FAILED if decision["decision"] == "promotion_incomplete" else EXIT_KEPT),
    )
    return RetrainResult(decision, decision["exit_code"])
