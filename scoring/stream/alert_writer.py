"""Writing a batch's alerts; a batch the database refuses is retried one alert at a time.

PostgreSQL refuses values that SQLite takes (an amount beyond the column's
precision, an id longer than the column, a NUL character, an unpaired
surrogate in the feature snapshot). One such alert must not hold up the
others: when the database rejects a batch's contents, each alert is written
in its own transaction, and only the ones it still refuses become dead
letters, with the database's reason (never the statement's parameters).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from ingest.validation import ValidationError
from scoring.db.repository import NewAlert
from scoring.stream.decoder import where
from scoring.stream.ports import AlertStore, Message, RowsRejected

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Runs an attempt until it succeeds, retrying while its dependency is down.
Retry = Callable[[Callable[[], int], str, str], int]


class AlertWriter:
    """Inserts alerts idempotently; rows the database refuses come back as dead letters."""

    def __init__(self, store: AlertStore, retry: Retry) -> None:
        self.store = store
        self.retry = retry

    def write(
        self, alerts: Sequence[NewAlert], messages: Sequence[Message]
    ) -> tuple[int, list[tuple[Message, ValidationError]]]:
        """Write ``alerts`` (``messages[i]`` is the event of ``alerts[i]``).

        Returns how many rows were new and the dead letters of refused rows.
        """
        if not alerts:
            return 0, []
        try:
            return self.retry(lambda: self.store.write(alerts, None), "alert write", "database"), []
        except RowsRejected as err:
            log.warning(
                "the database refused a batch of %d alerts (%s); writing them one at a time",
                len(alerts),
                err,
            )
        inserted = 0
        refused: list[tuple[Message, ValidationError]] = []
        for alert, message in zip(alerts, messages, strict=True):
            try:
                inserted += self.retry(self._writer_of(alert), "alert write", "database")
            except RowsRejected as err:
                refused.append((message, ValidationError(where(message), None, str(err))))
        return inserted, refused

    def _writer_of(self, alert: NewAlert) -> Callable[[], int]:
        return lambda: self.store.write([alert], None)
