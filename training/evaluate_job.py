"""``fraud evaluate``: score a labelled period through the batch path and measure it.

The period's behavioural features are computed exactly as in training: the
history the features look back over (the longest window plus the label delay)
is replayed first, then only the period's rows are kept and scored through the
export's ``serving_default``. Every check of the input runs before that work.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from features import model_dir as versions_dir
from features import spec
from features.behaviour import lookback_days
from features.errors import InputError
from features.progress import Progress, silent
from training import evaluation as ev


@dataclass(frozen=True)
class ModelChoice:
    """The export being evaluated and what its metadata says."""

    model_dir: Path
    version: int
    path: Path
    threshold: float
    delay_days: int
    #: First day of the training window, when the metadata says it.
    train_start: date | None


def choose_model(model_dir: str | Path, version: int | None) -> ModelChoice:
    """Resolve ``version`` (default: the latest) and read its threshold and label delay."""
    root = versions_dir.require_model_dir(model_dir)
    versions = versions_dir.list_versions(root)
    if not versions:
        raise InputError(f"no model version found in {root}")
    if version is None:
        version = versions[-1]
    elif version not in versions:
        raise InputError(f"model version {version} not found in {root} (found {versions})")
    metadata = versions_dir.read_metadata(root, version)
    return ModelChoice(
        root,
        version,
        versions_dir.version_path(root, version),
        metadata.require_threshold(str(versions_dir.metadata_path(root, version))),
        metadata.delay_days,
        metadata.train_start,
    )


def _period_days(start: date, end: date) -> np.ndarray:
    return np.arange(np.datetime64(start, "D"), np.datetime64(end, "D") + 1)


@dataclass(frozen=True)
class LoadedPeriod:
    """The period's transactions and features, and which were known compromised."""

    transactions: pa.Table
    features: pa.Table
    known_compromised: np.ndarray


def _load_period(
    input_path: str | Path, start: date, end: date, model: ModelChoice, *, exclude_known: bool,
    compromised_since: date | None = None,
) -> LoadedPeriod:
    """Read history + period, check the period, compute its features (history replayed first).

    Cards known compromised are those with a fraud from ``compromised_since``
    (default: the model's training start, else the first day read) up to
    ``delay`` days before each day.
    """
    from features.behaviour import BehaviourConfig, compute_features
    from ingest.readers import read_transactions

    first = start - timedelta(days=lookback_days(model.delay_days))
    since = compromised_since or model.train_start or first
    read = read_transactions(input_path, labelled=True, start=min(first, since), end=end)
    table = read.table
    days = table.column(spec.TIMESTAMP).to_numpy().astype("datetime64[D]")
    in_period = days >= np.datetime64(start, "D")
    known = ev.known_compromised(
        days, table.column(spec.CUSTOMER_ID).to_numpy(), table.column(spec.LABEL_KEY).to_numpy(),
        np.datetime64(since, "D"), model.delay_days,
    )[in_period]
    period = table.filter(in_period)
    assessed = ~known if exclude_known else np.ones(period.num_rows, dtype=bool)
    _check_period(period.column(spec.LABEL_KEY).to_numpy()[assessed], start, end, exclude_known)
    replayed = days >= np.datetime64(first, "D")
    features = compute_features(table.filter(replayed),
                                BehaviourConfig(delay_days=model.delay_days), labels=read.labels)
    return LoadedPeriod(period, features.filter(in_period[replayed]), known)


def _check_period(assessed_labels: np.ndarray, start: date, end: date, excluded: bool) -> None:
    scope = " (cards already known compromised left out)" if excluded else ""
    if assessed_labels.size == 0:
        raise InputError(f"no transactions between {start} and {end}{scope}")
    if not assessed_labels.any():
        raise InputError(f"no frauds between {start} and {end}{scope}: "
                         "AUC-ROC and average precision need both classes")


def period_scores(period: pa.Table, scores: np.ndarray) -> ev.PeriodScores:
    """Arrange a scored period for the metrics (day = UTC calendar day of the event)."""
    timestamps = period.column(spec.TIMESTAMP).to_numpy()
    return ev.PeriodScores(
        transaction_ids=np.asarray(period.column(spec.TRANSACTION_ID).to_pylist(), dtype=object),
        days=timestamps.astype("datetime64[D]"),
        cards=np.asarray(period.column(spec.CUSTOMER_ID).to_pylist(), dtype=object),
        labels=period.column(spec.LABEL_KEY).to_numpy().astype(np.int64),
        scores=np.asarray(scores, dtype=np.float32),
    )


def write_scores(path: str | Path, period: ev.PeriodScores) -> None:
    """``transaction_id,score`` per transaction; scores printed exactly (repr of the float32)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([spec.TRANSACTION_ID, "score"])
        writer.writerows(zip(period.transaction_ids, period.scores.tolist(), strict=True))


def _check_request(input_path: str | Path, start: date, end: date) -> None:
    if end < start:
        raise InputError(f"--end {end} is before --start {start}")
    if not Path(input_path).exists():
        raise InputError(f"input not found: {input_path}")


def evaluate(
    input_path: str | Path,
    start: date,
    end: date,
    model_dir: str | Path,
    version: int | None = None,
    scores_out: str | Path | None = None,
    report_dir: str | Path | None = None,
    keep_known_compromised: bool = False,
    progress: Progress | None = None,
    compromised_since: date | None = None,
) -> dict[str, Any]:
    """Score ``[start, end]`` (UTC days, inclusive) with a model version; return the figures.

    Every transaction of the period is scored (and written to ``scores_out``);
    the metrics are computed, as in the Handbook's protocol, without the
    transactions of cards already known compromised on their day (see
    :func:`training.evaluation.known_compromised`) unless ``keep_known_compromised``.
    The label delay and the alert threshold come from the version's metadata.
    ``compromised_since`` overrides where "known compromised" counts from (the
    version's training start): models compared on one period then assess
    exactly the same transactions.
    """
    say = progress or silent
    _check_request(input_path, start, end)
    model = choose_model(model_dir, version)
    say(f"reading {input_path} and computing features ({lookback_days(model.delay_days)} "
        f"days of history before {start})")
    loaded = _load_period(input_path, start, end, model, exclude_known=not keep_known_compromised,
                          compromised_since=compromised_since)

    say(f"scoring {loaded.transactions.num_rows:,} transactions with {model.path}")
    from training.batch_scoring import score_table

    scores = score_table(model.path, loaded.transactions, loaded.features)
    scored = period_scores(loaded.transactions, scores)
    excluded = loaded.known_compromised & (not keep_known_compromised)
    assessed = scored.subset(~excluded)
    summary = ev.summarize(assessed, model.threshold, _period_days(start, end))
    if scores_out is not None:
        write_scores(scores_out, scored)
        say(f"scores written to {scores_out}")
    if report_dir is not None:
        from training.report import ReportContext, write_report

        context = ReportContext(str(model.model_dir), model.version, str(input_path),
                                start.isoformat(), end.isoformat(), int(excluded.sum()))
        say(f"report written to {write_report(report_dir, assessed, summary, context)}")
    return {**summary.figures(), "excluded_known_compromised": int(excluded.sum()),
            "model_version": model.version}
