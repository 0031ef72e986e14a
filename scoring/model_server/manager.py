"""Which version of a model is served: TF Serving's latest-version policy over a directory.

The manager polls the model directory; when a newer version appears it loads
it (and runs its warmup requests) *before* switching requests to it, then
unloads the old one (availability-preserving, ``model_version_policy latest 1``).

A version folder is loaded only once it is complete, which a poll cannot know
for sure (TF Serving's answer is that writers publish atomically: write
elsewhere, then rename). The rule here, for writers that copy in place
(``cp -r``, ``rsync``): a folder is *quiet* once nothing under it changed for
``settle_seconds``, judged by both

- the newest ctime and mtime of the folder and everything under it being at
  least ``settle_seconds`` old (ctime cannot be set back, so ``cp -a`` or
  ``rsync -a`` preserving old mtimes does not fool it), and
- its listing (every path, type, size, mtime and ctime) being identical to the
  one the previous poll saw, when a previous poll saw it.

A version that fails to load keeps the previous one serving and is retried as
TF Serving does it: up to ``max_load_retries`` more times (TF Serving's
``--max_num_load_retries``, default 5), ``load_retry_interval`` seconds apart
(``--load_retry_interval_micros``, default one minute). A version whose files
change after a failure is tried again from scratch, once quiet again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from features.model_dir import list_versions, version_path
from scoring.model_server.errors import ServingError, servable_not_found
from scoring.model_server.servable import Servable
from scoring.model_server.warmup import run_warmup

log = logging.getLogger(__name__)

#: One entry of a version folder's listing: relative path, is-a-folder, size, mtime, ctime.
Entry = tuple[str, bool, int, int, int]
Listing = tuple[Entry, ...]


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


@dataclass(frozen=True)
class _Failure:
    listing: Listing
    attempts: int
    retry_at: float  # time.monotonic()


class ModelManager:
    """Loads and swaps the versions of one model directory; thread-safe lookups."""

    def __init__(
        self,
        model_name: str,
        model_dir: str | Path,
        poll_seconds: float = 2.0,
        *,
        warmup: bool = True,
        max_load_retries: int = 5,
        load_retry_interval: float = 60.0,
        settle_seconds: float | None = None,
    ) -> None:
        self.model_name = model_name
        self.model_dir = Path(model_dir)
        self.poll_seconds = poll_seconds
        #: None: one poll interval, so that a new folder is quiet across two polls.
        self.settle_seconds = poll_seconds if settle_seconds is None else settle_seconds
        self.max_load_retries = max_load_retries
        self.load_retry_interval = load_retry_interval
        self._warmup = warmup
        self._lock = threading.Lock()
        self._current: Servable | None = None
        self._statuses: dict[int, VersionStatus] = {}
        self._listings: dict[int, Listing] = {}
        self._failures: dict[int, _Failure] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Load the latest complete version now, then keep polling in a background thread.

        A version that is not quiet yet (just copied) is waited for once, up to
        ``settle_seconds``, so that a server started next to a fresh export serves it.
        """
        self.poll()
        wait = self._settle_wait()
        if wait is not None:
            time.sleep(wait)
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
        """One pass: serve the newest loadable version on disk, unloading the one it replaces.

        Versions newer than the served one are considered newest first; one that is
        not quiet yet, or failed and waits for its retry, or ran out of retries, is
        passed over for an older one (still newer than the served one, or any when
        the served one was removed from disk).
        """
        versions = list_versions(self.model_dir)
        self._forget_missing(set(versions))
        current = self._current
        for version in reversed(versions):
            if current is not None and version == current.version:
                return
            listing = self._observe(version)
            if listing is None:
                self._set_pending(version, current)
                continue
            if not self._may_load(version, listing):
                continue
            servable = self._load(version, listing)
            if servable is not None:
                self._swap(servable)
            return
        if current is not None and not versions:
            log.info("model %s version %d removed from disk", self.model_name, current.version)
            self._swap(None)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # the poller must outlive any one bad pass
                log.exception("polling %s failed", self.model_dir)

    def _forget_missing(self, on_disk: set[int]) -> None:
        for version in [v for v in self._listings if v not in on_disk]:
            del self._listings[version]
        for version in [v for v in self._failures if v not in on_disk]:
            del self._failures[version]
        with self._lock:
            for version in [v for v, s in self._statuses.items() if v not in on_disk]:
                if self._statuses[version].state is VersionState.START:
                    del self._statuses[version]

    def _observe(self, version: int) -> Listing | None:
        """The folder's listing if it is quiet (see the module doc), else None."""
        listing = _listing(version_path(self.model_dir, version))
        previous = self._listings.pop(version, None)
        if listing is None:
            return None
        self._listings[version] = listing
        if previous is not None and previous != listing:
            return None
        newest = max(max(entry[3], entry[4]) for entry in listing) / 1e9
        if time.time() - newest < self.settle_seconds:
            return None
        return listing

    def _settle_wait(self) -> float | None:
        """Seconds until a version that is not quiet may be (for ``start``), or None."""
        current = self._current
        pending = [
            v
            for v in self._listings
            if v not in self._failures and (current is None or v > current.version)
        ]
        if not pending or self.settle_seconds <= 0:
            return None
        newest = max(max(max(e[3], e[4]) for e in self._listings[v]) for v in pending) / 1e9
        return min(self.settle_seconds, max(0.0, newest + self.settle_seconds - time.time())) + 0.05

    def _set_pending(self, version: int, current: Servable | None) -> None:
        if current is None or version > current.version:
            self._set(version, VersionState.START)

    def _may_load(self, version: int, listing: Listing) -> bool:
        failure = self._failures.get(version)
        if failure is None:
            return True
        if failure.listing != listing:
            log.info("model %s version %d changed on disk: loading again", self.model_name, version)
            del self._failures[version]
            return True
        return failure.attempts <= self.max_load_retries and time.monotonic() >= failure.retry_at

    def _set(self, version: int, state: VersionState, error: str = "") -> None:
        with self._lock:
            self._statuses[version] = VersionStatus(version, state, error)

    def _load(self, version: int, listing: Listing) -> Servable | None:
        self._set(version, VersionState.LOADING)
        path = version_path(self.model_dir, version)
        try:
            servable = Servable(self.model_name, version, path)
            warmed = run_warmup(servable) if self._warmup else 0
        except Exception as err:  # any load failure keeps the old version serving
            self._failed(version, listing, err)
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

    def _failed(self, version: int, listing: Listing, err: Exception) -> None:
        previous = self._failures.get(version)
        attempts = (previous.attempts if previous is not None else 0) + 1
        self._failures[version] = _Failure(
            listing, attempts, time.monotonic() + self.load_retry_interval
        )
        total = self.max_load_retries + 1
        if attempts <= self.max_load_retries:
            then = f"retrying in {self.load_retry_interval:g} s"
        else:
            then = "not retried unless its files change"
        # The status is public: our own ServingError messages describe the version's
        # contents (a failing warmup request); anything else (TF's, the OS's) names
        # server paths and goes to the log only.
        if isinstance(err, ServingError):
            reason = err.message
        else:
            reason = "the SavedModel could not be loaded (details in the server log)"
        servable_id = f"{{name: {self.model_name} version: {version}}}"
        message = (
            f"Loading servable: {servable_id} failed: {reason} "
            f"(attempt {attempts} of {total}, {then})"
        )
        log.warning(
            "loading model %s version %d from %s failed (attempt %d of %d, %s): %s",
            self.model_name,
            version,
            version_path(self.model_dir, version),
            attempts,
            total,
            then,
            err,
        )
        self._set(version, VersionState.END, message)

    def _swap(self, servable: Servable | None) -> None:
        with self._lock:
            old, self._current = self._current, servable
            if servable is not None:
                self._statuses[servable.version] = VersionStatus(
                    servable.version, VersionState.AVAILABLE
                )
                for version in [
                    v
                    for v, s in self._statuses.items()
                    if v < servable.version and s.state is VersionState.START
                ]:
                    del self._statuses[version]  # passed over: no longer aspired
            if old is not None:
                self._statuses[old.version] = VersionStatus(old.version, VersionState.END)
        if old is not None:
            log.info("unloaded model %s version %d", self.model_name, old.version)


def _listing(folder: Path) -> Listing | None:
    """Every entry under ``folder`` (itself included), sorted; None if it changed under us."""
    entries: list[Entry] = []
    try:
        top = folder.stat()
        entries.append((".", True, 0, top.st_mtime_ns, top.st_ctime_ns))
        for root, dirs, files in os.walk(folder, onerror=_raise):
            for name in dirs + files:
                path = os.path.join(root, name)
                stat = os.lstat(path)
                entries.append(
                    (
                        os.path.relpath(path, folder),
                        name in dirs,
                        stat.st_size,
                        stat.st_mtime_ns,
                        stat.st_ctime_ns,
                    )
                )
    except OSError:
        return None
    return tuple(sorted(entries))


def _raise(err: OSError) -> None:
    raise err
