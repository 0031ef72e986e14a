"""TF Serving's model config file (``models.config``): which versions are served, and labels.

The file is TF Serving's own text-format ``ModelServerConfig``, parsed and
written with TF Serving's protos, so the official ``tensorflow_model_server
--model_config_file=...`` and ``fraud model-server --model-config ...`` read
the same file the same way::

    model_config_list {
      config {
        name: "fraud"
        base_path: "/models/fraud"
        model_platform: "tensorflow"
        model_version_policy { specific { versions: 4 versions: 5 } }
        version_labels { key: "stable" value: 5 }
        version_labels { key: "canary" value: 6 }
      }
    }

Only what one model needs is supported: exactly one ``config`` entry, platform
``tensorflow``, the ``latest`` / ``specific`` / ``all`` version policies and
version labels. ``fraud models`` and ``fraud retrain`` write the file in the
model directory (:data:`CONFIG_FILE`), atomically (a temporary file renamed
over it), so a server polling it never reads half a file.

No TensorFlow here: TF Serving's config protos only need protobuf.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from features.errors import InputError

#: The file's name in the model directory.
CONFIG_FILE = "models.config"
#: The label the scorer binds to and promotion moves; the one a canary gets.
STABLE = "stable"
CANARY = "canary"
PLATFORM = "tensorflow"
#: Label names this code writes and accepts (TF Serving's REST paths take ``[^/:]+``;
#: word characters keep them safe in URLs and log lines).
_LABEL = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_HEADER = (
    "# TF Serving model config (text-format ModelServerConfig), written by fraud models /\n"
    "# fraud retrain. Served as: fraud model-server --model-config THIS_FILE, or\n"
    "# tensorflow_model_server --model_config_file=THIS_FILE (docs/retraining.md).\n"
)

PolicyKind = Literal["latest", "specific", "all"]


class ModelConfigError(InputError):
    """A model config file that cannot be read, or asks for what is not supported."""


@dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's ``model_version_policy``: ``latest {num_versions}``, ``specific``, ``all``."""

    kind: PolicyKind = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def aspired(self, on_disk: Iterable[int]) -> list[int]:
        """The versions to serve among ``on_disk``, ascending."""
        present = sorted(set(on_disk))
        if self.kind == "all":
            return present
        if self.kind == "specific":
            wanted = set(self.versions)
            return [v for v in present if v in wanted]
        return present[-self.num_versions:] if self.num_versions > 0 else []

    @property
    def latest_one(self) -> bool:
        """Whether this is TF Serving's default (serve only the newest version)."""
        return self.kind == "latest" and self.num_versions == 1

    def describe(self) -> str:
        """One line for logs and errors."""
        if self.kind == "specific":
            return f"specific versions {list(self.versions)}"
        if self.kind == "all":
            return "all versions"
        return f"latest {self.num_versions}"


@dataclass(frozen=True)
class ModelConfig:
    """One model's entry of a TF Serving model config file."""

    name: str
    base_path: str
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: Mapping[str, int] = field(default_factory=dict)
    platform: str = PLATFORM

    def label(self, name: str) -> int | None:
        """The version ``name`` points at, or None."""
        return self.labels.get(name)

    @property
    def served_versions(self) -> tuple[int, ...]:
        """The versions a ``specific`` policy lists (empty for the other policies)."""
        return self.policy.versions if self.policy.kind == "specific" else ()

    def base_dir(self, relative_to: Path | None = None) -> Path:
        """``base_path`` as a Path (a relative one is relative to ``relative_to``, else cwd)."""
        path = Path(self.base_path)
        if not path.is_absolute() and relative_to is not None:
            path = relative_to / path
        return path


def specific(versions: Iterable[int], labels: Mapping[str, int], name: str,
             base_path: str) -> ModelConfig:
    """A config serving exactly ``versions`` (and every labelled one) with ``labels``."""
    served = tuple(sorted(set(versions) | set(labels.values())))
    return ModelConfig(name, base_path, VersionPolicy("specific", versions=served),
                       dict(sorted(labels.items())))


def parse(text: str, source: str) -> ModelConfig:
    """Parse the text of a model config file; :class:`ModelConfigError` names ``source``."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    message = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as err:
        raise ModelConfigError(f"{source}: not a TF Serving model config: {err}") from None
    if message.WhichOneof("config") != "model_config_list":
        raise ModelConfigError(f"{source}: needs a model_config_list (custom configs are "
                               "not supported)")
    entries = message.model_config_list.config
    if len(entries) != 1:
        raise ModelConfigError(f"{source}: lists {len(entries)} models; this server serves "
                               "exactly one (one config entry)")
    entry = entries[0]
    if not entry.name:
        raise ModelConfigError(f"{source}: the model has no name")
    if not entry.base_path:
        raise ModelConfigError(f"{source}: model {entry.name!r} has no base_path")
    if entry.model_platform != PLATFORM:
        raise ModelConfigError(
            f"{source}: model {entry.name!r} has model_platform {entry.model_platform!r}; "
            f"only {PLATFORM!r} is served (and TF Serving requires it to be set)")
    labels = dict(entry.version_labels)
    for label, version in labels.items():
        if not _LABEL.match(label):
            raise ModelConfigError(f"{source}: version label {label[:80]!r} is not made of "
                                   "letters, digits and underscores (at most 64)")
        if version < 0:
            raise ModelConfigError(f"{source}: label {label!r} points at version {version}")
    return ModelConfig(entry.name, entry.base_path, _policy(entry, source),
                       dict(sorted(labels.items())))


def _policy(entry: object, source: str) -> VersionPolicy:
    policy = entry.model_version_policy  # type: ignore[attr-defined]
    kind = policy.WhichOneof("policy_choice")
    if kind is None:
        return VersionPolicy()  # TF Serving's default: latest 1
    if kind == "latest":
        count = policy.latest.num_versions or 1
        return VersionPolicy("latest", num_versions=count)
    if kind == "all":
        return VersionPolicy("all")
    versions = tuple(sorted(set(policy.specific.versions)))
    if not versions:
        raise ModelConfigError(f"{source}: model_version_policy specific lists no version")
    if any(v < 0 for v in versions):
        raise ModelConfigError(f"{source}: negative version in model_version_policy")
    return VersionPolicy("specific", versions=versions)


def format_config(config: ModelConfig) -> str:
    """The text of a model config file for ``config`` (TF Serving's text format)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    message = model_server_config_pb2.ModelServerConfig()
    entry = message.model_config_list.config.add()
    entry.name = config.name
    entry.base_path = config.base_path
    entry.model_platform = config.platform
    policy = config.policy
    if policy.kind == "specific":
        entry.model_version_policy.specific.versions.extend(policy.versions)
    elif policy.kind == "all":
        entry.model_version_policy.all.SetInParent()
    else:
        entry.model_version_policy.latest.num_versions = policy.num_versions
    for label, version in sorted(config.labels.items()):
        entry.version_labels[label] = version
    return _HEADER + text_format.MessageToString(message)


def read(path: str | Path) -> ModelConfig:
    """Read and parse a model config file."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelConfigError(f"model config file not found: {source}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ModelConfigError(f"cannot read the model config file {source}: {err}") from None
    return parse(text, str(source))


def write(path: str | Path, config: ModelConfig) -> None:
    """Write ``config`` to ``path`` atomically (temporary file, fsync, rename)."""
    target = Path(path)
    text = format_config(config)
    parse(text, str(target))  # never write what we could not read back
    temporary = target.with_name(f".{target.name}.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)


def config_path(model_dir: str | Path) -> Path:
    """Where a model directory's config file lives."""
    return Path(model_dir) / CONFIG_FILE


def check_label(name: str) -> str:
    """``name`` if it is a valid label, else :class:`ModelConfigError`."""
    if not _LABEL.match(name):
        raise ModelConfigError(f"version label {name[:80]!r} must be letters, digits and "
                               "underscores (at most 64)")
    return name
