"""The model version the scorer scores with, and what that version asks of it.

The scorer never lets the server pick the version per request: it binds to
one version, reads that version's :class:`~features.model_dir.ModelMetadata`
through TF Serving's API (the ``fraud_metadata`` signature), and sends every
request pinned to it. Between batches it looks at what the server serves; a
new version is followed only when its behavioural configuration (windows,
label delay, lateness tolerance) is the one the scorer's state was built
with, and when a threshold is known for it. Anything else is refused,
visibly (log, ``/healthz``, a metric), and the bound version goes on scoring:
a transaction is never scored by a model whose features it was not given.

With a ``label`` (``fraud score --model-label stable``, the default) the bound
version is the one that TF Serving version label points at: promotion and
rollback (``fraud models``, ``fraud retrain``) move the label in the model
config and the scorer follows, with the same checks. A server that does not
know the label (no model config) is followed by its latest version, with a
warning. With a ``canary_share`` the version the ``canary_label`` points at
scores that share of the events, chosen by transaction id
(:mod:`features.canary`), under the same compatibility checks; each alert
records the version that scored it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from features import spec
from features.behaviour import BehaviourConfig
from features.canary import canary_rows
from features.model_dir import MetadataError, ModelMetadata
from scoring.clients.base import (
    ModelClient,
    ModelRequestError,
    ModelStatus,
    ModelUnavailable,
    Prediction,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Binding:
    """The bound version, its metadata and the alert threshold used with it."""

    version: int
    metadata: ModelMetadata
    threshold: float


class ModelRefused(Exception):  # noqa: N818 - reads as what happened to the version
    """A served version cannot be used by this scorer (and why)."""


class ServedModel:
    """Binds the scorer to one served version and follows compatible new ones."""

    def __init__(
        self,
        client: ModelClient,
        *,
        fixed_threshold: float | None = None,
        follow_seconds: float = 5.0,
        label: str | None = None,
        canary_label: str | None = None,
        canary_share: float = 0.0,
    ) -> None:
        if not 0.0 <= canary_share <= 1.0:
            raise ValueError(f"canary share must be within [0, 1], got {canary_share}")
        self.client = client
        self.fixed_threshold = fixed_threshold
        self.follow_seconds = follow_seconds
        self.label = label
        self.canary_label = canary_label if canary_share > 0 else None
        self.canary_share = canary_share
        #: The canary version and what it asks, while one is bound.
        self._canary: Binding | None = None
        #: How the bound version was found: "label <name>" or "latest".
        self.bound_by = "latest" if label is None else f"label {label}"
        self._on_refusal: Callable[[int, str], None] = lambda version, reason: None
        self._on_bound: Callable[[int], None] = lambda version: None
        self._binding: Binding | None = None
        #: Every version bound so far (a batch may straddle a switch).
        self._known: dict[int, Binding] = {}
        self._behaviour: BehaviourConfig | None = None
        self._refused: dict[int, str] = {}
        self._checked_at = 0.0

    def listen(self, bound: Callable[[int], None], refused: Callable[[int, str], None]) -> None:
        """Call ``bound(version)`` on every bind and ``refused(version, reason)`` on refusals."""
        self._on_bound, self._on_refusal = bound, refused

    @property
    def binding(self) -> Binding:
        """The bound version; only valid after :meth:`bind`."""
        if self._binding is None:
            raise RuntimeError("no model version bound yet")
        return self._binding

    @property
    def refused(self) -> dict[int, str]:
        """Versions refused so far, with the reason."""
        return dict(self._refused)

    @property
    def canary(self) -> Binding | None:
        """The canary version bound now, if any."""
        return self._canary

    def bind(self, behaviour: BehaviourConfig | None = None) -> Binding:
        """Bind to the version served now; ``behaviour`` (a restored state's) must match.

        Raises :class:`ModelUnavailable` while no version is served (retry),
        :class:`ModelRefused` when the served one cannot be used.
        """
        status = self._stable_status()
        if not status.ready or status.version is None:
            raise ModelUnavailable(f"no model version available: {status.message}")
        binding = self._check(status.version, behaviour)
        self._behaviour = binding.metadata.behaviour
        self._use(binding)
        self._follow_canary()
        return binding

    def _stable_status(self) -> ModelStatus:
        """The version to score with: the label's, or the latest when the server has no label."""
        if self.label is None:
            return self.client.status()
        status = self.client.status(label=self.label)
        if not status.unknown_label:
            if self.bound_by != f"label {self.label}":
                log.info("the model server now has label %r: following it", self.label)
            self.bound_by = f"label {self.label}"
            return status
        if self.bound_by != "latest" or self._binding is None:
            log.warning(
                "the model server has no version label %r (%s): following its latest "
                "version instead; serve a model config to bind to the label",
                self.label, status.message,
            )
        self.bound_by = "latest"
        return self.client.status()

    def threshold_of(self, version: int) -> float:
        """The alert threshold of a version this scorer bound (NaN for any other)."""
        binding = self._known.get(version)
        return binding.threshold if binding is not None else float("nan")

    def baseline_of(self, version: int) -> Mapping[str, object] | None:
        """The training baseline recorded in a bound version's export (for reason codes)."""
        binding = self._known.get(version)
        if binding is None:
            return None
        baseline = binding.metadata.details.get("baseline")
        return baseline if isinstance(baseline, Mapping) else None

    def scorer_of(self, version: int) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
        """A batch scoring function pinned to ``version``."""
        return lambda inputs: self.client.predict(inputs, version=version).scores

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Prediction:
        """Score with the bound version (ModelUnavailable while the server does not serve it).

        With a canary bound, the rows whose transaction id falls in the canary
        share go to the canary version (``Prediction.row_versions`` says which).
        """
        stable = self.binding.version
        canary = self._canary
        ids = inputs.get(spec.TRANSACTION_ID)
        if canary is None or ids is None or not len(ids):
            return self.client.predict(inputs, version=stable)
        to_canary = canary_rows(np.asarray(ids).tolist(), self.canary_share)
        if not to_canary.any():
            return self.client.predict(inputs, version=stable)
        if to_canary.all():
            return self.client.predict(inputs, version=canary.version)
        parts = {}
        for version, rows in ((stable, ~to_canary), (canary.version, to_canary)):
            parts[version] = self.client.predict(
                {name: values[rows] for name, values in inputs.items()}, version=version
            )
        scores = np.empty(len(ids), dtype=np.float32)
        scores[~to_canary] = parts[stable].scores
        scores[to_canary] = parts[canary.version].scores
        versions = np.where(to_canary, parts[canary.version].model_version,
                            parts[stable].model_version).astype(np.int64)
        return Prediction(scores, parts[stable].model_version, versions)

    def follow(self, *, force: bool = False) -> None:
        """Between batches: follow the served (or labelled) version if compatible, and the canary.

        An incompatible version is refused. Checks at most every ``follow_seconds``
        (unless ``force``); never raises for an unreachable server (the next
        predict reports that).
        """
        now = time.monotonic()
        if not force and now - self._checked_at < self.follow_seconds:
            return
        self._checked_at = now
        self._follow_stable()
        self._follow_canary()

    def _follow_stable(self) -> None:
        status = self._stable_status()
        version = status.version
        if not status.ready or version is None or version == self.binding.version:
            return
        if version in self._refused:
            return
        try:
            binding = self._check(version, self._behaviour)
        except ModelRefused as err:
            self._refuse(version, str(err))
            return
        except ModelUnavailable as err:
            log.warning("could not read the metadata of model version %d yet: %s", version, err)
            return
        log.info("now scoring with model version %d (was %d, %s)", version,
                 self.binding.version, self.bound_by)
        self._use(binding)

    def _follow_canary(self) -> None:
        """Bind the version the canary label points at, or drop the canary; never raises."""
        if self.canary_label is None:
            return
        try:
            status = self.client.status(label=self.canary_label)
        except ModelUnavailable as err:  # a client that raises instead of reporting
            status = ModelStatus(False, None, str(err))
        version = status.version
        before = self._canary
        if not status.ready or version is None or version == self.binding.version:
            if before is not None:
                log.info("canary version %d no longer served under label %r: every event "
                         "goes to version %d", before.version, self.canary_label,
                         self.binding.version)
            self._canary = None
            return
        if before is not None and before.version == version:
            return
        if version in self._refused:
            self._canary = None
            return
        try:
            binding = self._check(version, self._behaviour)
        except ModelRefused as err:
            self._canary = None
            self._refuse(version, f"canary: {err}")
            return
        except ModelUnavailable as err:
            log.warning("could not read the metadata of canary version %d yet: %s", version, err)
            return
        self._known[version] = binding
        self._canary = binding
        log.info("canary version %d scores %.3g%% of events (by transaction id), version %d "
                 "the rest", version, 100 * self.canary_share, self.binding.version)

    def _check(self, version: int, behaviour: BehaviourConfig | None) -> Binding:
        """Read ``version``'s metadata and check it against ``behaviour``."""
        try:
            served = self.client.metadata(version)
        except (ModelRequestError, MetadataError) as err:
            raise ModelRefused(f"version {version}: {err}") from None
        metadata = served.metadata
        if behaviour is not None and metadata.behaviour != behaviour:
            raise ModelRefused(
                f"version {version} was trained with behavioural features {_show(metadata)}, "
                f"but this scorer's state is built with {_show_config(behaviour)}; "
                "scoring it would give other scores than the batch path"
            )
        threshold = self.fixed_threshold
        if threshold is None:
            threshold = metadata.threshold
        if threshold is None:
            raise ModelRefused(
                f"version {version} has no alert threshold in its metadata "
                "(pass --threshold to score it with a fixed one)"
            )
        return Binding(served.version, metadata, threshold)

    def _use(self, binding: Binding) -> None:
        self._binding = binding
        self._known[binding.version] = binding
        self._on_bound(binding.version)

    def _refuse(self, version: int, reason: str) -> None:
        self._refused[version] = reason
        log.error(
            "refusing model version %d, still scoring with version %d: %s",
            version,
            self.binding.version,
            reason,
        )
        self._on_refusal(version, reason)


def _show(metadata: ModelMetadata) -> str:
    return _show_config(metadata.behaviour)


def _show_config(config: BehaviourConfig) -> str:
    return (
        f"(windows {list(config.windows_days)} days, label delay {config.delay_days} days, "
        f"late tolerance {config.late_tolerance_hours} h)"
    )
