"""Which version of a model is served: TF Serving's latest-version policy over a directory.

The manager polls the model directory; when a newer version appears it loads
it (and runs its warmup requests) *before* switching requests to it, then
unloads the old one (availability-preserving, ``model_version_policy latest 1``).
A version that fails to load keeps the previous one serving and is retried on
later polls, up to a bound.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from features.model_dir import latest_version, version_path
from scoring.model_server.errors import servable_not_found
from scoring.model_server.servable import Servable
from scoring.model_server.warmup import run_warmup

log = logging.getLogger(__name__)


class VersionState(StrEnum):
    """A version's life cycle, as TF Serving's ModelVersionStatus.State names it."""

    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


@dataclass(frozen=True)
class VersionStatus:
    """The state of one version; ``error`` is set when its load failed."""

    version: int
    state: VersionState
    error: str = ""


class ModelManager:
    """Loads and swaps the versions of one model directory; thread-safe lookups."""

    def __init__(
        self,
        model_name: str,
        model_dir: str | Path,
        poll_seconds: float = 2.0,
        *,
        warmup: bool = True,
        max_load_attempts: int = 5,
    ) -> None:
        self.model_name = model_name
        self.model_dir = Path(model_dir)
        self.poll_seconds = poll_seconds
        self._warmup = warmup
        self._max_load_attempts = max_load_attempts
        self._lock = threading.Lock()
        self._current: Servable | None = None
        self._statuses: dict[int, VersionStatus] = {}
        self._failures: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Load the latest version now, then keep polling in a background thread."""
        self.poll()
        self._thread = threading.Thread(
            target=self._run, name=f"model-poll-{self.model_name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and drop the served version."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._current = None

    def get(self, version: int | None = None) -> Servable:
        """Return the servable for ``version`` (None: latest); NOT_FOUND if not loaded."""
        current = self._current
        if current is None or (version is not None and version != current.version):
            raise servable_not_found(self.model_name, version)
        return current

    @property
    def serving_version(self) -> int | None:
        """The version requests go to now, or None before any version loaded."""
        current = self._current
        return current.version if current else None

    def statuses(self) -> list[VersionStatus]:
        """Every version seen so far, newest first (what GetModelStatus reports)."""
        with self._lock:
            return sorted(self._statuses.values(), key=lambda s: s.version, reverse=True)

    def poll(self) -> None:
        """One pass: serve the latest version on disk, unloading the one it replaces."""
        desired = latest_version(self.model_dir)
        current = self._current
        if current is not None and desired == current.version:
            return
        if desired is None:
            if current is not None:
                log.info("model %s version %d removed from disk", self.model_name, current.version)
                self._swap(None)
            return
        if self._failures.get(desired, 0) >= self._max_load_attempts:
            return
        servable = self._load(desired)
        if servable is not None:
            self._swap(servable)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # the poller must outlive any one bad pass
                log.exception("polling %s failed", self.model_dir)

    def _set(self, version: int, state: VersionState, error: str = "") -> None:
        with self._lock:
            self._statuses[version] = VersionStatus(version, state, error)

    def _load(self, version: int) -> Servable | None:
        self._set(version, VersionState.LOADING)
        path = version_path(self.model_dir, version)
        try:
            servable = Servable(self.model_name, version, path)
            warmed = run_warmup(servable) if self._warmup else 0
        except Exception as err:  # any load failure keeps the old version serving
            attempts = self._failures[version] = self._failures.get(version, 0) + 1
            servable_id = f"{{name: {self.model_name} version: {version}}}"
            message = f"Loading servable: {servable_id} failed: {err}"
            log.warning("%s (attempt %d of %d)", message, attempts, self._max_load_attempts)
            self._set(version, VersionState.END, message)
            return None
        log.info(
            "loaded model %s version %d from %s (%d warmup requests)",
            self.model_name,
            version,
            path,
            warmed,
        )
        self._failures.pop(version, None)
        return servable

    def _swap(self, servable: Servable | None) -> None:
        with self._lock:
            old, self._current = self._current, servable
            if servable is not None:
                self._statuses[servable.version] = VersionStatus(
                    servable.version, VersionState.AVAILABLE
                )
            if old is not None:
                self._statuses[old.version] = VersionStatus(old.version, VersionState.END)
        if old is not None:
            log.info("unloaded model %s version %d", self.model_name, old.version)
