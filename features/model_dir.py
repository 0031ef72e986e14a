"""The model directory contract, shared by training (writer) and scoring (reader).

``<model_dir>/<version>/`` is a SavedModel in TF Serving's layout; ``version``
is a non-negative integer. Anything else in the directory (temporary export
folders such as ``.tmp-3``, non-integer names, version folders without
``saved_model.pb`` yet) is not a version: a writer that is still exporting
must never be served.

Each version describes itself with a :class:`ModelMetadata`: the alert
threshold chosen at training time and the behavioural configuration its
features were computed with (windows, label delay, lateness tolerance), plus
the training window and figures. It is written twice, from the same object:
``assets.extra/metadata.json`` for people and tools with the directory, and an
asset read by the ``fraud_metadata`` signature, so that a scorer talking only
to TF Serving's API (no model directory, e.g. a remote official TF Serving)
reads it with an ordinary Predict call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Any

from features import spec
from features.behaviour import BehaviourConfig
from features.errors import InputError

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
ASSETS_EXTRA = "assets.extra"
METADATA_FILE = "metadata.json"
WARMUP_FILE = "tf_serving_warmup_requests"

#: The signature that returns a version's metadata as a JSON string, one per request row.
METADATA_SIGNATURE = "fraud_metadata"
#: Its input (any strings; one output row per input row) and output aliases.
METADATA_REQUEST = "request"
METADATA_OUTPUT = "metadata"
#: The SavedModel asset the signature reads (``<version>/assets/<this>``).
METADATA_ASSET = "fraud_metadata.json"


class MetadataError(InputError):
    """A version's metadata is missing, unreadable, or lacks what serving needs."""


@dataclass(frozen=True)
class ModelMetadata:
    """What one exported version says about itself (written by training, read by all).

    ``threshold`` and the behavioural configuration are what scoring needs to
    give a transaction the score it gets in the batch path; the rest records
    how the version was made. ``details`` holds the free-form figures (row
    counts, training settings, validation metrics, library versions).
    """

    #: The alert threshold chosen at training time (None: the export has none).
    threshold: float | None
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)
    model_inputs: tuple[str, ...] = spec.MODEL_INPUTS
    train_start: date | None = None
    train_end: date | None = None
    validation_start: date | None = None
    history_start: date | None = None
    data_fingerprint: str | None = None
    created_at: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def require_threshold(self, source: str) -> float:
        """The threshold, or :class:`MetadataError` naming ``source`` when there is none."""
        if self.threshold is None:
            raise MetadataError(
                f"{source}: 'threshold' is missing (the alert threshold chosen at training time)"
            )
        return self.threshold

    @property
    def delay_days(self) -> int:
        """Days after which a transaction's label is known (the behavioural config's)."""
        return self.behaviour.delay_days

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``metadata.json`` (dates as ISO strings)."""
        out: dict[str, Any] = dict(self.details)
        out.update(
            threshold=self.threshold,
            delay_days=self.behaviour.delay_days,
            behaviour={
                "windows_days": list(self.behaviour.windows_days),
                "delay_days": self.behaviour.delay_days,
                "late_tolerance_hours": self.behaviour.late_tolerance_hours,
            },
            model_inputs=list(self.model_inputs),
            data_fingerprint=self.data_fingerprint,
            created_at=self.created_at,
        )
        for name in ("train_start", "train_end", "validation_start", "history_start"):
            value = getattr(self, name)
            out[name] = None if value is None else value.isoformat()
        return out

    def dumps(self) -> str:
        """The metadata as JSON text."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, data: Any, source: str) -> ModelMetadata:
        """Validate a metadata object; :class:`MetadataError` names ``source`` and the key."""
        if not isinstance(data, Mapping):
            raise MetadataError(f"{source}: model metadata is not a JSON object")
        threshold: Any = data.get("threshold")
        if threshold is not None and (
            not _is_number(threshold) or not 0.0 <= float(threshold) <= 1.0
        ):
            raise MetadataError(f"{source}: 'threshold' is not a number in [0, 1]: {threshold!r}")
        known = {f.name for f in fields(cls)} | {"delay_days"}
        return cls(
            threshold=None if threshold is None else float(threshold),
            behaviour=_behaviour(data, source),
            model_inputs=tuple(data.get("model_inputs") or spec.MODEL_INPUTS),
            train_start=_date(data, "train_start", source),
            train_end=_date(data, "train_end", source),
            validation_start=_date(data, "validation_start", source),
            history_start=_date(data, "history_start", source),
            data_fingerprint=data.get("data_fingerprint"),
            created_at=data.get("created_at"),
            details={k: v for k, v in data.items() if k not in known},
        )

    @classmethod
    def parse(cls, text: str | bytes, source: str) -> ModelMetadata:
        """Parse and validate metadata JSON text."""
        try:
            data = json.loads(text)
        except (UnicodeDecodeError, ValueError, RecursionError) as err:
            raise MetadataError(f"{source}: model metadata is not valid JSON: {err}") from None
        return cls.from_json(data, source)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _behaviour(data: Mapping[str, Any], source: str) -> BehaviourConfig:
    """The behavioural config; exports without a ``behaviour`` block used the defaults."""
    block = data.get("behaviour")
    values: dict[str, Any] = dict(block) if isinstance(block, Mapping) else {}
    values.setdefault("delay_days", data.get("delay_days", spec.DEFAULT_DELAY_DAYS))
    try:
        windows = tuple(int(w) for w in values.get("windows_days", spec.WINDOWS_DAYS))
        delay = values["delay_days"]
        tolerance = values.get("late_tolerance_hours", BehaviourConfig.late_tolerance_hours)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (delay, tolerance)):
            raise ValueError("delay_days and late_tolerance_hours must be integers")
        return BehaviourConfig(windows, delay, tolerance)
    except (TypeError, ValueError) as err:
        raise MetadataError(f"{source}: invalid behavioural configuration: {err}") from None


def _date(data: Mapping[str, Any], key: str, source: str) -> date | None:
    value = data.get(key)
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise MetadataError(f"{source}: {key!r} is not a date: {value!r}") from None


def is_version_dir(path: Path) -> bool:
    """Whether ``path`` is a complete-looking version folder (integer name, has the graph)."""
    return (
        path.name.isdigit()
        and path.is_dir()
        and any((path / name).is_file() for name in SAVED_MODEL_FILES)
    )


def list_versions(model_dir: str | Path) -> list[int]:
    """Every valid version in ``model_dir``, ascending; empty when there is none."""
    root = Path(model_dir)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if is_version_dir(p))


def latest_version(model_dir: str | Path) -> int | None:
    """Return the highest valid version in ``model_dir``, or None."""
    versions = list_versions(model_dir)
    return versions[-1] if versions else None


def version_path(model_dir: str | Path, version: int) -> Path:
    """Return the folder of ``version`` (TF Serving names it by the bare integer)."""
    return Path(model_dir) / str(version)


def require_model_dir(model_dir: str | Path) -> Path:
    """``model_dir`` as a Path; InputError when it is not an existing directory."""
    root = Path(model_dir)
    if not root.is_dir():
        raise InputError(f"model directory not found: {root}")
    return root


def metadata_path(model_dir: str | Path, version: int) -> Path:
    """Where ``version``'s ``metadata.json`` lives."""
    return version_path(model_dir, version) / ASSETS_EXTRA / METADATA_FILE


def write_metadata(version_dir: Path, metadata: ModelMetadata) -> None:
    """Write both copies of the metadata into a version folder (before it is published)."""
    text = metadata.dumps()
    extra = version_dir / ASSETS_EXTRA
    extra.mkdir(exist_ok=True)
    (extra / METADATA_FILE).write_text(text, encoding="utf-8")
    asset = version_dir / "assets" / METADATA_ASSET
    if asset.parent.is_dir():
        asset.write_text(text, encoding="utf-8")


def read_metadata(model_dir: str | Path, version: int | None = None) -> ModelMetadata:
    """Read ``assets.extra/metadata.json`` of ``version`` (default: the latest version).

    Raises :class:`MetadataError` when there is no version, or the file is
    missing, not a JSON object, or holds invalid values.
    """
    if version is None:
        version = latest_version(model_dir)
        if version is None:
            raise MetadataError(f"no model version found in {model_dir}")
    path = metadata_path(model_dir, version)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MetadataError(f"model metadata not found: {path}") from None
    except UnicodeDecodeError as err:
        raise MetadataError(f"model metadata is not valid JSON: {path}: {err}") from None
    return ModelMetadata.parse(text, str(path))
