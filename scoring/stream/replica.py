"""A scorer's read-only copy of the terminal stage's state, and whether it is far enough.

The replica starts from the stage's latest checkpoint (read from the database
both share) and applies the stage's messages from the offset that checkpoint
names. Each message upserts terminal entries and says how far the stage has
read its inputs (:mod:`scoring.terminal_stage.protocol`); :meth:`covers`
tells the scorer whether an event can be scored exactly. A message of
another epoch (the stage started over from an empty or rebuilt state) makes
the replica reload the stage's checkpoint.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from features.behaviour import BehaviourConfig, terminal_store
from features.state_codec import decode_terminals
from features.terminal_state import TerminalStore
from features.timebase import DAY_US
from scoring.stream.ports import SavedState
from scoring.stream.sealed import CheckpointUnusable, unseal
from scoring.terminal_stage.protocol import InputEnds, StageProgress, config_from_json, decode

log = logging.getLogger(__name__)


class StageNotReady(Exception):  # noqa: N818 - reads as the stage's condition
    """The terminal stage has not written its first checkpoint, or runs another config."""


class StateFollower(Protocol):
    """Reads the state topic."""

    def seek(self, offset: int) -> None:
        """Read from ``offset`` on."""
        ...

    def poll(self, timeout_ms: int) -> list[tuple[int, bytes]]:
        """The next ``(offset, value)`` messages."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class StageCheckpoints(Protocol):
    """The stage's checkpoint in the database."""

    def load(self) -> SavedState | None:
        """The stage's current checkpoint, if any."""
        ...


class TerminalReplica:
    """Terminal state as the stage last published it, and the stage's progress."""

    def __init__(self, follower: StateFollower, checkpoints: StageCheckpoints) -> None:
        self.follower = follower
        self.checkpoints = checkpoints
        self.config: BehaviourConfig | None = None
        self.store: TerminalStore | None = None
        self.epoch: str | None = None
        self.progress = StageProgress()
        self.next_offset = 0
        self.expiry_floor_us: int | None = None

    def start(self, config: BehaviourConfig) -> None:
        """Load the stage's checkpoint; StageNotReady until there is one with ``config``."""
        saved = self.checkpoints.load()
        if saved is None:
            raise StageNotReady(
                "the terminal stage has written no checkpoint yet (is `fraud terminal-stage` "
                "running against this database?)"
            )
        payload = unseal(saved.state, "terminal-stage checkpoint")
        store = terminal_store(config)
        try:
            header = decode_terminals(payload, store)
        except Exception as err:
            raise CheckpointUnusable(f"terminal-stage checkpoint does not decode ({err})") from None
        stage_config = config_from_json(header["config"])
        if stage_config != config:
            raise StageNotReady(
                f"the terminal stage runs with behavioural configuration {stage_config}, "
                f"the bound model with {config}: restart the stage with this model"
            )
        self.config, self.store = config, store
        self.epoch = header["epoch"]
        self.next_offset = int(header["next_output_offset"])
        self.expiry_floor_us = header.get("expiry_floor_us")
        self.progress = StageProgress()
        self.follower.seek(self.next_offset)
        log.info(
            "terminal replica loaded the stage's checkpoint (epoch %s, %d terminals), "
            "following from offset %d",
            self.epoch,
            len(store.histories),
            self.next_offset,
        )

    def follow(self, timeout_ms: int = 0) -> int:
        """Apply the stage's new messages; how many were applied."""
        assert self.store is not None and self.config is not None
        applied = 0
        for offset, value in self.follower.poll(timeout_ms):
            try:
                message = decode(value)
            except ValueError as err:
                log.error("state topic offset %d is not a stage message (%s): skipped", offset, err)
                continue
            if message.epoch != self.epoch:
                log.warning(
                    "the terminal stage started a new epoch (%s): reloading its checkpoint",
                    message.epoch,
                )
                self._restart()
                return applied
            if message.config != self.config:
                raise StageNotReady("the terminal stage changed its behavioural configuration")
            self.store.upsert(message.entries)
            self.progress = message.progress
            self.next_offset = offset + 1
            floor = message.expiry_floor_us
            if floor is not None and (
                self.expiry_floor_us is None or floor - self.expiry_floor_us >= DAY_US
            ):
                self.store.expire_before(floor)
                self.expiry_floor_us = floor
            applied += 1
        return applied

    def _restart(self) -> None:
        assert self.config is not None
        try:
            self.start(self.config)
        except (StageNotReady, CheckpointUnusable) as err:
            log.warning("terminal replica waits for the stage's new checkpoint: %s", err)
            self.progress = StageProgress()

    def covers(self, time_us: int, ends: InputEnds | None = None) -> bool:
        """Whether events up to ``time_us`` can be scored exactly (:class:`StageProgress`)."""
        assert self.config is not None
        return self.progress.covers(
            time_us,
            self.config.delay_days * DAY_US,
            self.config.label_latency_minutes * 60_000_000,
            ends,
        )

    @property
    def horizon_us(self) -> int:
        """How far back (event time) an event's terminal features look."""
        assert self.store is not None
        return self.store.horizon_us

    def lag_seconds(self, time_us: int, ends: InputEnds | None = None) -> float:
        """Event-time seconds the stage is behind what ``time_us`` needs (0 when it is not)."""
        assert self.config is not None
        lag = self.progress.lag_us(
            time_us,
            self.config.delay_days * DAY_US,
            self.config.label_latency_minutes * 60_000_000,
            ends,
        )
        return max(0, lag) / 1e6

    def read(self, terminals: list[str], times_us: list[int]) -> np.ndarray:
        """The terminal features of events (the stage's state, read-only)."""
        assert self.store is not None
        return self.store.read(terminals, times_us)
