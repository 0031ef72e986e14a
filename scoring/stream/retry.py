"""Retry with capped exponential backoff while an outside service is down."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class Aborted(Exception):  # noqa: N818 - reads as "the batch was aborted"
    """The wait was interrupted (shutdown or rebalance); the batch is not committed."""


def retry_until_done(
    attempt: Callable[[], T],
    transient: tuple[type[BaseException], ...],
    *,
    what: str,
    wait: Callable[[float], bool],
    initial_seconds: float,
    max_seconds: float,
    on_failure: Callable[[BaseException], None] = lambda _: None,
) -> T:
    """Call ``attempt`` until it succeeds; transient errors wait and retry.

    ``wait(seconds)`` sleeps while keeping the caller alive (e.g. polling a
    paused Kafka consumer) and returns False to abort, raising :class:`Aborted`.
    """
    delay = initial_seconds
    while True:
        try:
            return attempt()
        except transient as err:
            on_failure(err)
            log.warning("%s failed (%s); retrying in %.1fs", what, err, delay)
            if not wait(delay):
                raise Aborted(what) from err
            delay = min(max_seconds, delay * 2) * random.uniform(0.8, 1.0)
