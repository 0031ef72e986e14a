"""Promotion, rollback and canary labels in models.config, every change in the decision log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from features import model_config as configs
from features import model_registry as registry
from features.errors import InputError


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    for version in (1, 2, 3, 4):
        (root / str(version)).mkdir(parents=True)
        (root / str(version) / "saved_model.pb").write_bytes(b"")
    return root


def _state(model_dir: Path) -> tuple[dict[str, int], tuple[int, ...]]:
    config = configs.read(model_dir / "models.config")
    return dict(config.labels), config.served_versions


def test_promotions_keep_the_previous_stable_loaded_and_rollbacks_walk_back(model_dir):
    registry.promote(model_dir, 1, reason="first")
    assert _state(model_dir) == ({"stable": 1}, (1,))
    config = configs.read(model_dir / "models.config")
    assert config.base_path == str(model_dir.resolve()) and config.name == "fraud"
    registry.promote(model_dir, 2)
    assert _state(model_dir) == ({"stable": 2}, (1, 2))
    registry.promote(model_dir, 3)
    assert _state(model_dir) == ({"stable": 3}, (2, 3))

    change = registry.rollback(model_dir, reason="alerts look wrong")
    assert _state(model_dir) == ({"stable": 2}, (1, 2))
    assert change.entry["stable_before"] == 3 and change.entry["stable_after"] == 2
    registry.rollback(model_dir)
    assert _state(model_dir) == ({"stable": 1}, (1,))
    with pytest.raises(InputError, match="first stable version"):
        registry.rollback(model_dir)

    log = registry.read_decisions(model_dir)
    assert [e["action"] for e in log] == ["promote"] * 3 + ["rollback"] * 2
    assert log[0]["reason"] == "first" and log[3]["reason"] == "alerts look wrong"
    assert all(e["at"] and e["by"] for e in log)
    lines = (model_dir / "decisions.jsonl").read_text().splitlines()
    assert [json.loads(line)["action"] for line in lines] == [e["action"] for e in log]


def test_a_canary_is_served_beside_stable_and_promoting_it_clears_the_label(model_dir):
    registry.promote(model_dir, 1)
    registry.promote(model_dir, 2)
    registry.set_canary(model_dir, 4)
    assert _state(model_dir) == ({"stable": 2, "canary": 4}, (1, 2, 4))
    with pytest.raises(InputError, match="stable version"):
        registry.set_canary(model_dir, 2)
    registry.promote(model_dir, 4)
    assert _state(model_dir) == ({"stable": 4}, (2, 4))
    registry.set_canary(model_dir, 3)
    registry.set_canary(model_dir, None)
    assert _state(model_dir) == ({"stable": 4}, (2, 4))
    registry.rollback(model_dir)
    assert _state(model_dir) == ({"stable": 2}, (1, 2))


def test_unknown_versions_and_hand_edited_labels_are_refused(model_dir):
    with pytest.raises(InputError, match="version 9 not found"):
        registry.promote(model_dir, 9)
    with pytest.raises(InputError, match="no stable version"):
        registry.rollback(model_dir)
    registry.promote(model_dir, 1)
    registry.promote(model_dir, 2)
    edited = configs.specific([1, 3], {"stable": 3}, "fraud", str(model_dir))
    configs.write(model_dir / "models.config", edited)  # an operator's own edit
    with pytest.raises(InputError, match="fraud models promote"):
        registry.rollback(model_dir)
    registry.promote(model_dir, 4)  # remembers the hand-set stable 3 for a rollback
    registry.rollback(model_dir)
    assert _state(model_dir)[0] == {"stable": 3}


def test_other_labels_and_the_base_path_of_an_existing_config_are_kept(model_dir):
    own = configs.specific([1], {"stable": 1, "shadow": 3}, "fraud", "/serving/fraud")
    configs.write(model_dir / "models.config", own)
    registry.promote(model_dir, 2, base_path="/ignored")
    config = configs.read(model_dir / "models.config")
    assert config.labels == {"shadow": 3, "stable": 2}
    assert config.base_path == "/serving/fraud"
    assert config.served_versions == (1, 2, 3)


def test_a_torn_last_line_is_skipped_and_the_next_entry_starts_a_line_of_its_own(model_dir):
    registry.promote(model_dir, 1)
    with (model_dir / "decisions.jsonl").open("a") as handle:
        handle.write('{"action": "promo')  # a crash in the middle of a write
    assert len(registry.read_decisions(model_dir)) == 1
    registry.promote(model_dir, 2)
    assert [e["version"] for e in registry.read_decisions(model_dir)] == [1, 2]
    lines = (model_dir / "decisions.jsonl").read_text().splitlines()
    assert lines[1] == '{"action": "promo' and json.loads(lines[2])["version"] == 2
    registry.rollback(model_dir)  # the history survives the torn line
    assert _state(model_dir)[0] == {"stable": 1}
