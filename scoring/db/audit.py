"""The tamper-evident audit trail: append entries, verify the chain.

Every entry's ``hash`` is the SHA-256 of its canonical content (sequence
number, time, actor, action, alert, before, after) and the previous entry's
hash, so editing, deleting or reordering any entry breaks every link after
it; :func:`verify` names the first broken one. ``audit_head`` holds the last
sequence number and hash: appends update it first, which serialises them on
one row lock (PostgreSQL) or the write lock (SQLite) so concurrent writers
cannot fork the chain, and a tail cut off the table no longer matches it.

On PostgreSQL the migration adds a trigger that refuses UPDATE, DELETE and
TRUNCATE on ``audit`` (SQLite gets the same triggers); the chain is what
still catches a change made by someone who can disable them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.orm import Session

from scoring.db.workbench_models import AuditEntry, AuditHead

GENESIS = "0" * 64
HEAD_ID = 1

AUDIT = cast(Table, AuditEntry.__table__)
HEAD = cast(Table, AuditHead.__table__)


@dataclass(frozen=True)
class Event:
    """A change to record: who did what to which alert, and the state before and after."""

    actor: str
    action: str
    alert_id: int | None = None
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None


def entry_hash(
    seq: int, at: datetime, actor: str, action: str, alert_id: int | None,
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, prev_hash: str,
) -> str:
    """The SHA-256 (hex) of an entry's canonical JSON, chained to ``prev_hash``."""
    body = {
        "seq": seq,
        "at": at.astimezone(UTC).isoformat(),
        "actor": actor,
        "action": action,
        "alert_id": alert_id,
        "before": before,
        "after": after,
        "prev": prev_hash,
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _take_head(session: Session, count: int) -> tuple[int, str]:
    """Reserve ``count`` sequence numbers; return the last used one and its hash (locked)."""
    stmt = (
        update(HEAD).where(HEAD.c.id == HEAD_ID)
        .values(seq=HEAD.c.seq + count)
        .returning(HEAD.c.seq, HEAD.c.hash)
    )
    row = session.execute(stmt).one_or_none()
    if row is None:  # a schema made by create_all (tests): no head row yet
        session.execute(insert(HEAD).values(id=HEAD_ID, seq=0, hash=GENESIS))
        row = session.execute(stmt).one()
    return int(row.seq) - count, str(row.hash)


def append(session: Session, events: Iterable[Event], at: datetime | None = None) -> list[str]:
    """Append ``events`` in order, in the caller's transaction; return their hashes.

    Call it after the changes it records, at the end of the transaction: the
    head is locked until commit.
    """
    batch = list(events)
    if not batch:
        return []
    when = (at or datetime.now(UTC)).astimezone(UTC)
    last_seq, prev = _take_head(session, len(batch))
    rows = []
    for offset, event in enumerate(batch, start=1):
        seq = last_seq + offset
        before = _jsonable(event.before)
        after = _jsonable(event.after)
        digest = entry_hash(seq, when, event.actor, event.action, event.alert_id, before,
                            after, prev)
        rows.append({
            "seq": seq, "at": when, "actor": event.actor, "action": event.action,
            "alert_id": event.alert_id, "before": before, "after": after,
            "prev_hash": prev, "hash": digest,
        })
        prev = digest
    session.execute(insert(AUDIT), rows)
    session.execute(update(HEAD).where(HEAD.c.id == HEAD_ID).values(hash=prev))
    return [str(r["hash"]) for r in rows]


def _jsonable(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A plain JSON object (timestamps as ISO strings), as it reads back from the database."""
    if value is None:
        return None
    return cast(dict[str, Any], json.loads(json.dumps(dict(value), default=_default)))


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


@dataclass(frozen=True)
class Verification:
    """The outcome of :func:`verify`."""

    ok: bool
    entries: int
    #: The first entry whose link is broken (its sequence number and row id), when not ok.
    broken_seq: int | None = None
    broken_id: int | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {"ok": self.ok, "entries": self.entries, "broken_seq": self.broken_seq,
                "broken_id": self.broken_id, "reason": self.reason}


def verify(session: Session, batch: int = 5000) -> Verification:
    """Recompute the whole chain; report the first entry that does not link, else OK."""
    expected_seq, prev, count = 1, GENESIS, 0
    stmt = select(AuditEntry).order_by(AuditEntry.seq).execution_options(yield_per=batch)
    for entry in session.scalars(stmt):
        count += 1
        if entry.seq != expected_seq:
            return Verification(False, count, entry.seq, entry.id,
                                f"sequence {expected_seq} expected, found {entry.seq} "
                                "(an entry was deleted or inserted)")
        if entry.prev_hash != prev:
            return Verification(False, count, entry.seq, entry.id,
                                "prev_hash does not match the previous entry's hash")
        digest = entry_hash(entry.seq, entry.at, entry.actor, entry.action, entry.alert_id,
                            entry.before, entry.after, entry.prev_hash)
        if digest != entry.hash:
            return Verification(False, count, entry.seq, entry.id,
                                "content does not match its hash (the entry was edited)")
        prev = entry.hash
        expected_seq += 1
    head = session.get(AuditHead, HEAD_ID)
    last_seq = expected_seq - 1
    if head is not None and (head.seq != last_seq or head.hash != prev):
        return Verification(False, count, last_seq + 1, None,
                            f"the chain ends at {last_seq} but its head says {head.seq} "
                            "(entries were removed from the end)")
    return Verification(True, count)
