"""Retry with capped exponential backoff while an outside service is down."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

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


class RetryTiming(Protocol):
    """The settings a retrier follows."""

    @property
    def retry_initial_seconds(self) -> float:
        """The first wait."""
        ...

    @property
    def retry_max_seconds(self) -> float:
        """The longest wait."""
        ...


class Retrier:
    """Retries an attempt while its dependency is down, and reports it in health and metrics.

    ``keep_alive(seconds)`` waits while keeping the caller in its consumer
    group; ``aborted()`` says the wait must end (shutdown, rebalance), which
    raises :class:`Aborted`; ``on_failure(dependency)`` runs after each
    failure (the scorer looks the served model version up again).
    """

    def __init__(
        self,
        timing: RetryTiming,
        metrics: Any,
        keep_alive: Callable[[float], None],
        aborted: Callable[[], bool],
        on_failure: Callable[[str], None] = lambda dependency: None,
    ) -> None:
        self.timing = timing
        self.metrics = metrics
        self.keep_alive = keep_alive
        self.aborted = aborted
        self.on_failure = on_failure

    def __call__(self, attempt: Callable[[], T], what: str, dependency: str) -> T:
        """Run ``attempt`` until it succeeds, retrying while ``dependency`` is down."""
        from scoring.clients.base import ModelUnavailable
        from scoring.stream.ports import DependencyDown

        health = self.metrics.health
        field_name = f"{dependency}_ok"

        def failed(err: BaseException) -> None:
            setattr(health, field_name, False)
            health.last_error = f"{what}: {err}"[:500]
            self.metrics.retries.labels(dependency=dependency).inc()
            self.on_failure(dependency)

        def wait(seconds: float) -> bool:
            if self.aborted():
                return False
            self.keep_alive(seconds)
            return not self.aborted()

        result = retry_until_done(
            attempt,
            (DependencyDown, ModelUnavailable),
            what=what,
            wait=wait,
            on_failure=failed,
            initial_seconds=self.timing.retry_initial_seconds,
            max_seconds=self.timing.retry_max_seconds,
        )
        setattr(health, field_name, True)
        return result
