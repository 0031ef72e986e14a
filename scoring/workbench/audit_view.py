"""Reading the audit trail for pages and the API (writing and verifying: ``scoring.db.audit``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from scoring.db.workbench_models import AuditEntry


def audit_entries(session: Session, alert_id: int | None = None,
                  limit: int = 200) -> list[AuditEntry]:
    """Entries newest first, optionally of one alert."""
    stmt = select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(limit)
    if alert_id is not None:
        stmt = stmt.where(AuditEntry.alert_id == alert_id)
    return list(session.scalars(stmt))
