"""Which versions of a model are served: TF Serving's version policies over a directory.

The manager polls the model directory. By default (no model config, or
``model_version_policy latest 1``) it serves the newest version: when a newer
one appears it loads it (and runs its warmup requests) *before* switching
requests to it, then unloads the old one (availability-preserving).

With a model config (``features.model_config``: TF Serving's ``models.config``)
it serves the versions the policy names (``specific``, ``all``, ``latest N``)
and resolves version labels (``stable``, ``canary``). Versions are loaded
before the ones they replace are unloaded. A label points at its version
once that version is AVAILABLE; until then it keeps pointing where it did (so
a config that adds a version and moves a label to it in one change is served
without a gap; the official server refuses such a change, see
docs/retraining.md). The config file is polled and re-applied when it changes;
a file that cannot be parsed leaves the previous config in force.

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
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from features import model_config as configs
from features.model_dir import list_versions, version_path
from scoring.model_server.errors import ServingError, servable_not_found, shorten
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
        policy: configs.VersionPolicy | None = None,
        labels: Mapping[str, int] | None = None,
        config_file: str | Path | None = None,
        config_poll_seconds: float | None = None,
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
        #: The versions served now (replaced whole, never mutated: lock-free lookups).
        self._served: dict[int, Servable] = {}
        self._statuses: dict[int, VersionStatus] = {}
        self._listings: dict[int, Listing] = {}
        self._failures: dict[int, _Failure] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.policy = policy or configs.VersionPolicy()
        #: Labels as configured, and as resolved (to AVAILABLE versions only).
        self._wanted_labels: dict[str, int] = dict(labels or {})
        self._labels: dict[str, int] = {}
        self.config_file = None if config_file is None else Path(config_file)
        self.config_poll_seconds = (
            poll_seconds if config_poll_seconds is None else config_poll_seconds
        )
        self._config_text: str | None = None
        self._config_checked_at = 0.0
        #: Why the config file in force is not the one on disk (empty when it is).
        self.config_error = ""
        self._base_path = ""
        if self.config_file is not None:
            config = configs.read(self.config_file)
            self._apply_config(config, initial=True)
            self._config_text = configs.format_config(config)  # re-applied only on a change

    def start(self) -> None:
        """Load the versions to serve now, then keep polling in a background thread.

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
        """Stop polling and drop the served versions."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._served = {}
            self._labels = {}

    def get(self, version: int | None = None, label: str | None = None) -> Servable:
        """The servable for ``version`` or ``label`` (neither: the latest); NOT_FOUND if none.

        An unknown label is INVALID_ARGUMENT, as in TF Serving; a configured label
        whose version is not loaded (yet) is NOT_FOUND (transient for clients).
        """
        served = self._served
        if label is not None:
            if label not in self._wanted_labels:
                raise ServingError(
                    "INVALID_ARGUMENT", f"Unrecognized servable version label: {shorten(label)}"
                )
            version = self._labels.get(label, self._wanted_labels[label])
            if version not in served:
                raise servable_not_found(self.model_name, version)
            return served[version]
        if version is None:
            if not served:
                raise servable_not_found(self.model_name, None)
            return served[max(served)]
        if version not in served:
            raise servable_not_found(self.model_name, version)
        return served[version]

    @property
    def serving_version(self) -> int | None:
        """The newest version served now (what "latest" requests get), or None."""
        served = self._served
        return max(served) if served else None

    @property
    def serving_versions(self) -> list[int]:
        """Every version served now, ascending."""
        return sorted(self._served)

    @property
    def labels(self) -> dict[str, int]:
        """The labels as resolved now: each points at an AVAILABLE version."""
        return dict(self._labels)

    def label_target(self, label: str) -> int | None:
        """The version the label resolves to now, else the one configured; None if unknown."""
        if label not in self._wanted_labels:
            return None
        return self._labels.get(label, self._wanted_labels[label])

    def statuses(self) -> list[VersionStatus]:
        """Every version seen so far, newest first (what GetModelStatus reports)."""
        with self._lock:
            return sorted(self._statuses.values(), key=lambda s: s.version, reverse=True)

    def poll(self) -> None:
        """One pass: re-read the config file if due, serve what the policy asks, resolve labels."""
        self._maybe_reload_config()
        versions = list_versions(self.model_dir)
        self._forget_missing(set(versions))
        if self.policy.latest_one:
            self._poll_latest(versions)
        else:
            self._poll_set(versions)
        self._resolve_labels()

    def _poll_latest(self, versions: list[int]) -> None:
        """Serve the newest loadable version on disk, unloading the one it replaces.

        Versions newer than the served one are considered newest first; one that is
        not quiet yet, or failed and waits for its retry, or ran out of retries, is
        passed over for an older one (still newer than the served one, or any when
        the served one was removed from disk).
        """
        current = self._newest()
        if current is not None and len(self._served) > 1:
            self._swap(current)  # a config change from several versions to latest 1
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

    def _poll_set(self, versions: list[int]) -> None:
        """Serve every version the policy names: load the missing ones, then unload the rest.

        Versions no longer wanted are unloaded once at least one wanted version is
        served, or at once when none of the wanted versions is on disk.
        """
        wanted = self.policy.aspired(versions)
        served = self._served
        for version in reversed(wanted):
            if version in served:
                continue
            listing = self._observe(version)
            if listing is None:
                self._set(version, VersionState.START)
                continue
            if not self._may_load(version, listing):
                continue
            servable = self._load(version, listing)
            if servable is not None:
                self._add(servable)
        served = self._served
        if any(v in served for v in wanted) or not wanted:
            for version in [v for v in served if v not in wanted]:
                why = "removed from disk" if version not in versions else "no longer configured"
                log.info("model %s version %d %s", self.model_name, version, why)
                self._remove(version)

    def _resolve_labels(self) -> None:
        """Point each label at its version once AVAILABLE; until then keep its old version."""
        served = self._served
        resolved: dict[str, int] = {}
        for label, target in self._wanted_labels.items():
            before = self._labels.get(label)
            if target in served:
                resolved[label] = target
                if before != target:
                    log.info("model %s label %s now points at version %d%s", self.model_name,
                             label, target, "" if before is None else f" (was {before})")
            elif before is not None and before in served:
                resolved[label] = before
        with self._lock:
            self._labels = resolved

    # -- the config file -------------------------------------------------------

    def _maybe_reload_config(self) -> None:
        if self.config_file is None or self.config_poll_seconds <= 0:
            return
        now = time.monotonic()
        if now - self._config_checked_at < self.config_poll_seconds:
            return
        self._config_checked_at = now
        try:
            text = self.config_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            self._config_failed(f"cannot read {self.config_file}: {err}")
            return
        if text == self._config_text:
            return
        try:
            config = configs.parse(text, str(self.config_file))
            if configs.format_config(config) == self._config_text:  # same config, other text
                self._config_text = text
                return
            self._apply_config(config)
        except configs.ModelConfigError as err:
            self._config_failed(str(err))
        else:
            self.config_error = ""
        self._config_text = text

    def _config_failed(self, reason: str) -> None:
        if reason != self.config_error:
            log.error("model config not applied, the previous one stays in force: %s", reason)
        self.config_error = reason

    def _apply_config(self, config: configs.ModelConfig, *, initial: bool = False) -> None:
        """Take the policy and labels of ``config`` (name and base path are fixed at start)."""
        if not initial:
            if config.name != self.model_name:
                raise configs.ModelConfigError(
                    f"{self.config_file}: the model name changed from {self.model_name!r} to "
                    f"{config.name!r}; restart the server to serve another model")
            if config.base_path != self._base_path:
                raise configs.ModelConfigError(
                    f"{self.config_file}: base_path changed to {config.base_path!r}; restart "
                    "the server to serve another directory")
        if not initial and (config.policy != self.policy or
                            dict(config.labels) != self._wanted_labels):
            log.info("model config reloaded: %s, labels %s", config.policy.describe(),
                     dict(config.labels))
        self.policy = config.policy
        self._wanted_labels = dict(config.labels)
        if initial:
            self._base_path = config.base_path
            self.model_name = config.name

    # -- polling internals -----------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # the poller must outlive any one bad pass
                log.exception("polling %s failed", self.model_dir)

    def _newest(self) -> Servable | None:
        served = self._served
        return served[max(served)] if served else None

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
        current = self._newest()
        served = self._served
        pending = [
            v
            for v in self._listings
            if v not in self._failures
            and v not in served
            and (not self.policy.latest_one or current is None or v > current.version)
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
        """Serve ``servable`` alone (None: nothing), unloading every other version."""
        with self._lock:
            old = self._served
            self._served = {} if servable is None else {servable.version: servable}
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
            for version in old:
                if servable is None or version != servable.version:
                    self._statuses[version] = VersionStatus(version, VersionState.END)
        for version in sorted(old):
            if servable is None or version != servable.version:
                log.info("unloaded model %s version %d", self.model_name, version)

    def _add(self, servable: Servable) -> None:
        """Serve ``servable`` besides the versions served already."""
        with self._lock:
            self._served = {**self._served, servable.version: servable}
            self._statuses[servable.version] = VersionStatus(
                servable.version, VersionState.AVAILABLE
            )

    def _remove(self, version: int) -> None:
        """Stop serving ``version`` (in-flight requests keep their reference and finish)."""
        with self._lock:
            self._served = {v: s for v, s in self._served.items() if v != version}
            self._statuses[version] = VersionStatus(version, VersionState.END)
        log.info("unloaded model %s version %d", self.model_name, version)


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
