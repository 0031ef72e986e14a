"""Finding model versions in a model directory laid out as TF Serving expects.

``<model_dir>/<version>/`` is a SavedModel; ``version`` is a non-negative
integer. Anything else in the directory (temporary export folders such as
``.tmp-3``, non-integer names, version folders without ``saved_model.pb``
yet) is not a version: a writer that is still exporting must never be served.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fraud.errors import InputError

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
ASSETS_EXTRA = "assets.extra"
METADATA_FILE = "metadata.json"
WARMUP_FILE = "tf_serving_warmup_requests"


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


def read_metadata(model_dir: str | Path, version: int | None = None) -> dict[str, Any]:
    """Read ``assets.extra/metadata.json`` of ``version`` (default: the latest version).

    Raises InputError when there is no version or the file is missing or not a JSON object.
    """
    if version is None:
        version = latest_version(model_dir)
        if version is None:
            raise InputError(f"no model version found in {model_dir}")
    path = version_path(model_dir, version) / ASSETS_EXTRA / METADATA_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"model metadata not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"model metadata is not valid JSON: {path}: {err}") from None
    if not isinstance(data, dict):
        raise InputError(f"model metadata is not a JSON object: {path}")
    return data
