"""A model directory's served versions, labels and decision log: promote, roll back, canary.

Two files beside the versions, both written only here:

- ``models.config`` (:mod:`features.model_config`): TF Serving's model config.
  Its ``specific`` policy lists the versions to keep loaded: the ``stable``
  one, the stable one before it (so that a rollback is a label move to a
  version already loaded), and the ``canary`` if there is one.
- ``decisions.jsonl``: one JSON object per line, appended, never rewritten:
  every retraining decision (promoted or not, and why), every promotion,
  rollback and canary change. Each entry that moves ``stable`` records the
  stable versions in the order they were promoted (``stable_history``): a
  rollback pops the last one.

Changes take an exclusive lock on ``.models.lock`` in the model directory, so
two operators (or a retraining and an operator) cannot lose each other's
change.

The official TF Serving refuses a config change that points a label already
in use at a version that is not AVAILABLE yet (``fraud model-server`` instead
keeps the label where it was until the version has loaded). For it, a label
move to a version not served yet is written in two steps when a ``wait``
callback is given: first the version is added to the served ones (labels
unchanged), ``wait(version)`` returns once the server reports it AVAILABLE,
then the label moves.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from features import model_config as configs
from features.errors import InputError
from features.model_dir import list_versions, require_model_dir

log = logging.getLogger(__name__)

DECISIONS_FILE = "decisions.jsonl"
LOCK_FILE = ".models.lock"
#: Stable versions remembered in each entry (rollback can go this far back).
HISTORY_KEPT = 50


@dataclass(frozen=True)
class Change:
    """What one operation did: the config now in force and the log entry written."""

    config: configs.ModelConfig
    entry: dict[str, Any]


def decisions_path(model_dir: str | Path) -> Path:
    """Where the decision log of a model directory lives."""
    return Path(model_dir) / DECISIONS_FILE


@contextmanager
def locked(model_dir: str | Path) -> Iterator[None]:
    """Hold the model directory's registry lock (blocking)."""
    path = Path(model_dir) / LOCK_FILE
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_config(model_dir: str | Path) -> configs.ModelConfig | None:
    """The model directory's config, or None when it has none yet."""
    path = configs.config_path(model_dir)
    return configs.read(path) if path.is_file() else None


def read_decisions(model_dir: str | Path) -> list[dict[str, Any]]:
    """Every entry of the decision log, oldest first (a torn line is skipped, with a warning)."""
    path = decisions_path(model_dir)
    if not path.is_file():
        return []
    entries = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:  # a write cut short by a crash: not a decision
            log.warning("%s:%d: skipped, not a JSON object: %r", path, number, line[:80])
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def append_decision(model_dir: str | Path, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Append ``entry`` (with the time and who ran it) to the log; return what was written."""
    written = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "by": _user(), **entry}
    line = json.dumps(written, sort_keys=True, default=str) + "\n"
    path = decisions_path(model_dir)
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                line = "\n" + line  # after a torn line: start a line of our own
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return written


def stable_history(decisions: list[dict[str, Any]]) -> list[int]:
    """The stable versions in promotion order, as the last entry that moved ``stable`` says."""
    for entry in reversed(decisions):
        history = entry.get("stable_history")
        if isinstance(history, list):
            return [int(v) for v in history]
    return []


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return str(os.getuid())


def _served(stable: int | None, previous: int | None, canary: int | None) -> list[int]:
    return sorted({v for v in (stable, previous, canary) if v is not None})


def _write(model_dir: Path, before: configs.ModelConfig | None, name: str, base_path: str | None,
           stable: int | None, canary: int | None, history: list[int]) -> configs.ModelConfig:
    labels = {}
    if stable is not None:
        labels[configs.STABLE] = stable
    if canary is not None:
        labels[configs.CANARY] = canary
    if before is not None:  # other labels an operator set are kept
        labels = {**{k: v for k, v in before.labels.items()
                     if k not in (configs.STABLE, configs.CANARY)}, **labels}
    previous = history[-2] if len(history) >= 2 else None
    served = set(_served(stable, previous, canary)) | set(labels.values())
    if not served:
        raise InputError("nothing would be served: no stable and no canary version")
    config = configs.specific(
        served, labels,
        before.name if before is not None else name,
        before.base_path if before is not None else (base_path or str(model_dir.resolve())),
    )
    configs.write(configs.config_path(model_dir), config)
    return config


#: Called with a version added to the served ones; returns once the server serves it.
Wait = Callable[[int], None]


def _serve_first(model_dir: Path, before: configs.ModelConfig | None, version: int,
                 wait: Wait | None) -> None:
    """Step one of a label move for the official server: load ``version``, labels unchanged."""
    if wait is None or before is None or before.label(configs.STABLE) is None:
        return
    if version in before.policy.aspired(list_versions(model_dir)):
        return
    served = set(before.served_versions or before.policy.aspired(list_versions(model_dir)))
    staged = configs.specific(served | {version}, before.labels, before.name, before.base_path)
    configs.write(configs.config_path(model_dir), staged)
    try:
        wait(version)
    except Exception as err:
        append_decision(model_dir, {
            "action": "label_move_abandoned", "version": version, "reason": str(err),
            "served_versions": list(staged.served_versions),
            "stable_before": before.label(configs.STABLE),
            "stable_after": before.label(configs.STABLE),
        })
        raise


def _require_version(model_dir: Path, version: int) -> None:
    versions = list_versions(model_dir)
    if version not in versions:
        raise InputError(f"model version {version} not found in {model_dir} (found {versions})")


def promote(
    model_dir: str | Path,
    version: int,
    *,
    action: str = "promote",
    reason: str = "",
    name: str = "fraud",
    base_path: str | None = None,
    details: Mapping[str, Any] | None = None,
    wait: Wait | None = None,
) -> Change:
    """Label ``version`` stable (keeping the previous stable loaded); log it.

    A canary on the same version is cleared (it is now the stable one).
    ``name`` and ``base_path`` are used only when the directory has no config yet.
    ``wait``: two steps for the official server (module doc). Call under :func:`locked`.
    """
    root = require_model_dir(model_dir)
    _require_version(root, version)
    before = read_config(root)
    _serve_first(root, before, version, wait)
    stable_before = before.label(configs.STABLE) if before else None
    canary_before = before.label(configs.CANARY) if before else None
    history = stable_history(read_decisions(root))
    if stable_before is not None and (not history or history[-1] != stable_before):
        history.append(stable_before)  # a config written by hand: remember what it served
    if not history or history[-1] != version:
        history.append(version)
    history = history[-HISTORY_KEPT:]
    canary = None if canary_before == version else canary_before
    config = _write(root, before, name, base_path, version, canary, history)
    entry = append_decision(root, {
        "action": action, "version": version, "reason": reason,
        "stable_before": stable_before, "stable_after": version,
        "canary_before": canary_before, "canary_after": canary,
        "served_versions": list(config.served_versions), "stable_history": history,
        **(details or {}),
    })
    return Change(config, entry)


def rollback(model_dir: str | Path, *, reason: str = "", wait: Wait | None = None) -> Change:
    """Move ``stable`` back to the stable version before the current one; log it.

    Refused when the log knows no earlier stable version, or when the config's
    stable label is not the last version the log promoted (a hand edit).
    Call under :func:`locked`.
    """
    root = require_model_dir(model_dir)
    before = read_config(root)
    current = before.label(configs.STABLE) if before else None
    if before is None or current is None:
        raise InputError(f"{configs.config_path(root)}: no stable version to roll back from")
    history = stable_history(read_decisions(root))
    if not history or history[-1] != current:
        raise InputError(
            f"the stable label points at version {current}, but the decision log's last "
            f"promoted version is {history[-1] if history else 'none'}: move the label with "
            "fraud models promote VERSION instead")
    if len(history) < 2:
        raise InputError(f"version {current} is the first stable version: nothing to roll "
                         "back to")
    history = history[:-1]
    target = history[-1]
    _require_version(root, target)
    _serve_first(root, before, target, wait)
    canary_before = before.label(configs.CANARY)
    canary = None if canary_before == target else canary_before
    config = _write(root, before, before.name, before.base_path, target, canary, history)
    entry = append_decision(root, {
        "action": "rollback", "version": target, "reason": reason,
        "stable_before": current, "stable_after": target,
        "canary_before": canary_before, "canary_after": canary,
        "served_versions": list(config.served_versions), "stable_history": history,
    })
    return Change(config, entry)


def set_canary(
    model_dir: str | Path,
    version: int | None,
    *,
    action: str = "canary",
    reason: str = "",
    name: str = "fraud",
    base_path: str | None = None,
    details: Mapping[str, Any] | None = None,
    wait: Wait | None = None,
) -> Change:
    """Point the ``canary`` label at ``version`` (None: remove it); log it. Under :func:`locked`.

    ``wait``: two steps for the official server (module doc).
    """
    root = require_model_dir(model_dir)
    if version is not None:
        _require_version(root, version)
    before = read_config(root)
    if version is not None:
        _serve_first(root, before, version, wait)
    stable = before.label(configs.STABLE) if before else None
    canary_before = before.label(configs.CANARY) if before else None
    if version is not None and version == stable:
        raise InputError(f"version {version} is the stable version; a canary must be another")
    history = stable_history(read_decisions(root))
    config = _write(root, before, name, base_path, stable, version, history)
    entry = append_decision(root, {
        "action": action, "version": version, "reason": reason,
        "stable_before": stable, "stable_after": stable,
        "canary_before": canary_before, "canary_after": version,
        "served_versions": list(config.served_versions),
        **(details or {}),
    })
    return Change(config, entry)


def record(model_dir: str | Path, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Log a decision that changes nothing served (a challenger kept out). Under :func:`locked`."""
    return append_decision(require_model_dir(model_dir), entry)
