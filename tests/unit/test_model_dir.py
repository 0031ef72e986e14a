import json
from pathlib import Path

import pytest

from features import model_dir
from features.errors import InputError


def _version(root: Path, name: str, *, graph: bool = True) -> Path:
    path = root / name
    (path / "variables").mkdir(parents=True)
    if graph:
        (path / "saved_model.pb").write_bytes(b"graph")
    return path


def test_lists_only_complete_integer_versions(tmp_path: Path) -> None:
    _version(tmp_path, "1")
    _version(tmp_path, "10")
    _version(tmp_path, "3")
    _version(tmp_path, "4", graph=False)  # still being written
    _version(tmp_path, ".tmp-7")
    _version(tmp_path, "latest")
    _version(tmp_path, "-2")
    (tmp_path / "12").write_text("a file, not a folder")

    assert model_dir.list_versions(tmp_path) == [1, 3, 10]
    assert model_dir.latest_version(tmp_path) == 10


def test_text_format_graph_counts_as_a_version(tmp_path: Path) -> None:
    path = tmp_path / "2"
    path.mkdir()
    (path / "saved_model.pbtxt").write_text("meta_graphs {}")

    assert model_dir.list_versions(tmp_path) == [2]


def test_empty_or_missing_directory_has_no_version(tmp_path: Path) -> None:
    assert model_dir.list_versions(tmp_path) == []
    assert model_dir.latest_version(tmp_path) is None
    assert model_dir.list_versions(tmp_path / "missing") == []


def test_read_metadata_of_latest_and_given_version(tmp_path: Path) -> None:
    for version, threshold in ((1, 0.3), (2, 0.7)):
        extra = _version(tmp_path, str(version)) / "assets.extra"
        extra.mkdir()
        (extra / "metadata.json").write_text(json.dumps({"threshold": threshold}))

    assert model_dir.read_metadata(tmp_path).threshold == 0.7
    assert model_dir.read_metadata(tmp_path, 1).threshold == 0.3


def test_read_metadata_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no model version"):
        model_dir.read_metadata(tmp_path)
    path = _version(tmp_path, "1")
    with pytest.raises(InputError, match=r"1/assets.extra/metadata.json"):
        model_dir.read_metadata(tmp_path)
    (path / "assets.extra").mkdir()
    (path / "assets.extra" / "metadata.json").write_text("[1, 2")
    with pytest.raises(InputError, match="not valid JSON"):
        model_dir.read_metadata(tmp_path, 1)
    (path / "assets.extra" / "metadata.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="not a JSON object"):
        model_dir.read_metadata(tmp_path, 1)


def test_require_model_dir(tmp_path: Path) -> None:
    assert model_dir.require_model_dir(tmp_path) == tmp_path
    with pytest.raises(InputError, match="model directory not found"):
        model_dir.require_model_dir(tmp_path / "nope")
