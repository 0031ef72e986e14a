"""The dashboard's figures, each one GROUP BY in the database (no row loops in Python).

Alerts per day, open alerts by age, decisions per day, precision of decided
alerts per model version, score histograms of confirmed frauds vs false
positives, analysts' workload, and the threshold-versus-capacity table: for
candidate thresholds, the alerts a day the recent history would have raised
and the precision its decided alerts predict.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Date, Integer, and_, cast, func, select
from sqlalchemy.orm import Session

from scoring.db.models import Alert, AlertStatus
from scoring.db.workbench_models import Decision

#: Open-alert age buckets, in hours (upper bounds); the last is open-ended.
AGE_BUCKETS = (1, 4, 8, 24, 72)
#: Score bins of the histograms and the threshold table.
SCORE_BINS = 50
DAYS = 30


def _day(session: Session, column: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)


def _bin(session: Session, column: Any, bins: int) -> Any:
    """``floor(column * bins)``: PostgreSQL's floor; SQLite's integer cast (scores are >= 0)."""
    scaled = column * bins
    if session.get_bind().dialect.name == "postgresql":
        return func.floor(scaled)
    return cast(scaled, Integer)


def _day_key(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def alerts_per_day(session: Session, now: datetime, days: int = DAYS) -> list[tuple[str, int]]:
    """(day, alerts raised) over the last ``days`` days."""
    day = _day(session, Alert.created_at)
    rows = session.execute(
        select(day.label("d"), func.count()).where(Alert.created_at >= now - timedelta(days=days))
        .group_by(day).order_by(day)
    ).all()
    return [(_day_key(d), int(n)) for d, n in rows]


def open_by_age(session: Session, now: datetime) -> list[tuple[str, int]]:
    """(age bucket, open alerts): one indexed count per bucket boundary."""
    edges = [now - timedelta(hours=h) for h in AGE_BUCKETS]
    counts = []
    for edge in edges:  # open alerts created before each edge (older than h hours)
        counts.append(session.scalar(
            select(func.count()).select_from(Alert)
            .where(Alert.status == AlertStatus.OPEN.value, Alert.created_at < edge)) or 0)
    total = session.scalar(select(func.count()).select_from(Alert)
                           .where(Alert.status == AlertStatus.OPEN.value)) or 0
    labels = [f"< {AGE_BUCKETS[0]} h"]
    labels += [f"{a}-{b} h" for a, b in itertools.pairwise(AGE_BUCKETS)]
    labels += [f"> {AGE_BUCKETS[-1]} h"]
    older = [total, *counts]
    values = [older[i] - older[i + 1] for i in range(len(counts))] + [counts[-1]]
    return list(zip(labels, values, strict=True))


def decisions_per_day(session: Session, now: datetime,
                      days: int = DAYS) -> list[tuple[str, int, int]]:
    """(day, confirmed frauds, false positives) decided over the last ``days`` days."""
    day = _day(session, Decision.decided_at)
    rows = session.execute(
        select(day, Decision.status, func.count())
        .where(Decision.decided_at >= now - timedelta(days=days))
        .group_by(day, Decision.status).order_by(day)
    ).all()
    out: dict[str, list[int]] = {}
    for d, status, n in rows:
        slot = out.setdefault(_day_key(d), [0, 0])
        slot[0 if status == AlertStatus.CONFIRMED_FRAUD else 1] += int(n)
    return [(d, v[0], v[1]) for d, v in out.items()]


def precision_by_model(session: Session) -> list[dict[str, Any]]:
    """Per model version: decided alerts, confirmed frauds, precision."""
    rows = session.execute(
        select(Alert.model_version, Alert.status, func.count())
        .where(Alert.status != AlertStatus.OPEN.value)
        .group_by(Alert.model_version, Alert.status)
    ).all()
    per: dict[int, list[int]] = {}
    for version, status, n in rows:
        slot = per.setdefault(int(version), [0, 0])
        slot[0] += int(n)
        if status == AlertStatus.CONFIRMED_FRAUD:
            slot[1] += int(n)
    return [{"model_version": v, "decided": d, "frauds": f,
             "precision": round(f / d, 4) if d else None}
            for v, (d, f) in sorted(per.items())]


def score_histograms(session: Session, bins: int = SCORE_BINS) -> dict[str, list[int]]:
    """Counts per score bin of confirmed frauds and false positives."""
    column = _bin(session, Alert.score, bins)
    rows = session.execute(
        select(column, Alert.status, func.count())
        .where(Alert.status != AlertStatus.OPEN.value).group_by(column, Alert.status)
    ).all()
    out = {AlertStatus.CONFIRMED_FRAUD.value: [0] * bins,
           AlertStatus.FALSE_POSITIVE.value: [0] * bins}
    for b, status, n in rows:
        out[status][min(max(int(b), 0), bins - 1)] += int(n)
    return out


def workload(session: Session, now: datetime, days: int = 7) -> list[dict[str, Any]]:
    """Per analyst: open alerts held, proposals waiting, decisions of the last ``days`` days."""
    held: dict[Any, Any] = dict(session.execute(  # type: ignore[arg-type]
        select(Alert.assigned_to, func.count())
        .where(Alert.status == AlertStatus.OPEN.value, Alert.assigned_to.is_not(None))
        .group_by(Alert.assigned_to)).all())
    waiting: dict[Any, Any] = dict(session.execute(  # type: ignore[arg-type]
        select(Alert.proposed_by, func.count())
        .where(Alert.status == AlertStatus.OPEN.value, Alert.proposed_by.is_not(None))
        .group_by(Alert.proposed_by)).all())
    decided: dict[Any, Any] = dict(session.execute(  # type: ignore[arg-type]
        select(Decision.analyst, func.count())
        .where(Decision.decided_at >= now - timedelta(days=days)).group_by(Decision.analyst)
    ).all())
    names = sorted(set(held) | set(waiting) | set(decided))
    return [{"analyst": n, "open": int(held.get(n, 0)), "waiting_approval": int(waiting.get(n, 0)),
             f"decided_{days}d": int(decided.get(n, 0))} for n in names]


@dataclass(frozen=True)
class ThresholdRow:
    """One candidate threshold: expected alerts a day and predicted precision."""

    threshold: float
    alerts_per_day: float
    decided: int
    precision: float | None


def threshold_capacity(session: Session, now: datetime, days: int = DAYS,
                       bins: int = 100) -> dict[str, Any]:
    """For thresholds ``k / bins`` from the lowest recorded threshold up: alerts/day, precision.

    Alerts/day counts the alerts of the last ``days`` days whose score is at
    least the candidate; precision is the share of confirmed frauds among the
    decided alerts at or above it. Thresholds below the scorer's cannot be
    assessed (nothing below it was recorded).
    """
    column = _bin(session, Alert.score, bins)
    since = now - timedelta(days=days)
    recent: dict[Any, Any] = dict(session.execute(  # type: ignore[arg-type]
        select(column, func.count()).where(Alert.created_at >= since).group_by(column)).all())
    first = session.scalar(select(func.min(Alert.created_at)).where(Alert.created_at >= since))
    span_days = max((now - first) / timedelta(days=1), 1.0) if first is not None else float(days)
    span_days = min(span_days, float(days))
    decided_rows = session.execute(
        select(column, Alert.status, func.count())
        .where(Alert.status != AlertStatus.OPEN.value).group_by(column, Alert.status)).all()
    decided = [0] * (bins + 1)
    frauds = [0] * (bins + 1)
    for b, status, n in decided_rows:
        k = min(max(int(b), 0), bins)
        decided[k] += int(n)
        if status == AlertStatus.CONFIRMED_FRAUD:
            frauds[k] += int(n)
    counts = [0] * (bins + 1)
    for b, n in recent.items():
        counts[min(max(int(b), 0), bins)] += int(n)
    lowest = session.scalar(select(func.min(Alert.threshold)))
    rows: list[ThresholdRow] = []
    cum_alerts = cum_decided = cum_frauds = 0
    for k in range(bins, -1, -1):
        cum_alerts += counts[k]
        cum_decided += decided[k]
        cum_frauds += frauds[k]
        t = k / bins
        if lowest is not None and t < float(lowest) - 1e-12:
            break
        if k % 5 == 0 or k == bins:
            rows.append(ThresholdRow(t, round(cum_alerts / span_days, 1), cum_decided,
                                     round(cum_frauds / cum_decided, 4) if cum_decided else None))
    rows.reverse()
    return {"days": round(span_days, 2), "lowest_recorded_threshold": lowest,
            "rows": [r.__dict__ for r in rows]}


def summary(session: Session, who_can_see_workload: bool,
            now: datetime | None = None) -> dict[str, Any]:
    """Every figure of the dashboard, JSON-ready (``GET /api/v1/stats``)."""
    when = now or datetime.now(UTC)
    counts: dict[Any, Any] = dict(session.execute(  # type: ignore[arg-type]
        select(Alert.status, func.count()).group_by(Alert.status)).all())
    pending = session.scalar(select(func.count()).select_from(Alert).where(and_(
        Alert.status == AlertStatus.OPEN.value, Alert.proposed_status.is_not(None)))) or 0
    out: dict[str, Any] = {
        "generated_at": when.isoformat(),
        "alerts_by_status": {s.value: int(counts.get(s.value, 0)) for s in AlertStatus},
        "waiting_approval": int(pending),
        "alerts_per_day": [{"day": d, "alerts": n} for d, n in alerts_per_day(session, when)],
        "open_by_age": [{"age": a, "alerts": n} for a, n in open_by_age(session, when)],
        "decisions_per_day": [{"day": d, "confirmed_fraud": f, "false_positive": p}
                              for d, f, p in decisions_per_day(session, when)],
        "precision_by_model": precision_by_model(session),
        "score_histograms": {"bins": SCORE_BINS, **score_histograms(session)},
        "threshold_capacity": threshold_capacity(session, when),
    }
    if who_can_see_workload:
        out["workload"] = workload(session, when)
    return out
