"""The cheap parts of `fraud evaluate`: choosing the model version, writing scores."""

from __future__ import annotations

import csv
import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from features.behaviour import lookback_days
from features.errors import InputError
from training import evaluation as ev
from training.evaluate_job import choose_model, write_scores


def _version(model_dir: Path, version: int, metadata: dict | None) -> None:
    folder = model_dir / str(version)
    (folder / "assets.extra").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"")
    if metadata is not None:
        (folder / "assets.extra" / "metadata.json").write_text(json.dumps(metadata))


def test_choose_model_takes_the_latest_version_and_its_metadata(tmp_path):
    _version(tmp_path, 3, {"threshold": 0.2, "delay_days": 5, "train_start": "2018-07-25"})
    _version(tmp_path, 12, {"threshold": 0.4, "delay_days": 7, "train_start": "2018-08-01"})
    (tmp_path / ".tmp-13").mkdir()  # an export still being written is not a version
    model = choose_model(tmp_path, None)
    assert (model.version, model.threshold, model.delay_days) == (12, 0.4, 7)
    assert model.train_start == date(2018, 8, 1)
    assert model.path == tmp_path / "12"
    older = choose_model(tmp_path, 3)
    assert (older.version, older.delay_days, older.train_start) == (3, 5, date(2018, 7, 25))


def test_choose_model_defaults_the_delay_and_the_training_start(tmp_path):
    _version(tmp_path, 1, {"threshold": 0.5})
    model = choose_model(tmp_path, None)
    assert (model.delay_days, model.train_start) == (7, None)


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        (None, "model metadata not found"),
        ({"delay_days": 7}, "'threshold' is missing"),
        ({"threshold": "high"}, "'threshold' is not a number in \\[0, 1\\]"),
        ({"threshold": 0.5, "delay_days": -1}, "invalid behavioural configuration"),
        ({"threshold": 0.5, "train_start": "last week"}, "'train_start' is not a date"),
    ],
)
def test_choose_model_rejects_bad_metadata(tmp_path, metadata, reason):
    _version(tmp_path, 1, metadata)
    with pytest.raises(InputError, match=reason):
        choose_model(tmp_path, None)


def test_choose_model_rejects_missing_dir_and_versions(tmp_path):
    with pytest.raises(InputError, match="model directory not found"):
        choose_model(tmp_path / "nope", None)
    with pytest.raises(InputError, match="no model version found"):
        choose_model(tmp_path, None)
    _version(tmp_path, 2, {"threshold": 0.5})
    with pytest.raises(InputError, match=r"model version 5 not found .*\[2\]"):
        choose_model(tmp_path, 5)


def test_history_covers_the_longest_window_plus_the_label_delay():
    assert lookback_days(7) == 37
    assert lookback_days(0) == 30


def test_write_scores_keeps_every_float32_digit(tmp_path):
    scores = np.array([0.1, 1 / 3, 1e-7, 0.999999], dtype=np.float32)
    period = ev.PeriodScores(
        transaction_ids=np.array(["a", "b", "c", "d"], dtype=object),
        days=np.array(["2018-08-01"] * 4, dtype="datetime64[D]"),
        cards=np.array(["x"] * 4, dtype=object),
        labels=np.array([0, 1, 0, 0]),
        scores=scores,
    )
    path = tmp_path / "out" / "scores.csv"
    write_scores(path, period)
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["transaction_id", "score"]
    assert [r[0] for r in rows[1:]] == ["a", "b", "c", "d"]
    assert np.array_equal(np.array([float(r[1]) for r in rows[1:]], dtype=np.float32), scores)
