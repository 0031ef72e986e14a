"""`fraud retrain`: the window rule, the gate, the decision log and the labels, end to end.

The fast tests replace training by toy exports that score one input, the
terminal's 7-day fraud risk (a positive weight ranks risky terminals first; a
negative one is the degraded model, worse on every metric), and
evaluate them for real on a simulated bank; the slow test trains for real,
with the challenger's training labels shuffled through an analysts' label file.
"""

from __future__ import annotations

import json
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from features import model_config as configs
from features import model_registry as registry
from features import spec
from features.model_dir import list_versions, read_metadata
from ingest.simulator import SimulationConfig, simulate
from ingest.writers import write_transactions
from tests.integration.retrain_support import (
    DEGRADED,
    FAST_WINDOW,
    GOOD,
    ToyTrainer,
    fast_bank,
    models,
    run_retrain,
)

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> Path:
    return fast_bank(tmp_path_factory.mktemp("bank") / "lake")


@pytest.fixture
def trainer(monkeypatch) -> ToyTrainer:
    fake = ToyTrainer()
    monkeypatch.setattr("training.train_job.run", fake)
    return fake


def retrain(bank: Path, model_dir: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    return run_retrain(bank, model_dir, *FAST_WINDOW, *args)


def test_first_champion_then_a_better_challenger_is_promoted_and_a_worse_one_kept(
    bank, tmp_path, trainer
):
    model_dir = tmp_path / "models"
    trainer.weight = DEGRADED
    code, first, _ = retrain(bank, model_dir)
    assert code == 0 and first["decision"] == "first_champion"
    assert first["challenger_version"] == 1 and first["labels"] == {"stable": 1}
    assert first["windows"]["eval_start"] == "2018-05-14"
    assert first["windows"]["eval_end"] == "2018-05-18"
    job = trainer.jobs[0]
    assert (job.train_start, job.train_end) == (date(2018, 5, 10), date(2018, 5, 13))
    assert job.history_days == 37 and job.model_dir.name.startswith(".retrain-")

    trainer.weight = GOOD
    code, second, _ = retrain(bank, model_dir)
    assert code == 0 and second["decision"] == "promoted", second["reason"]
    assert second["champion_version"] == 1 and second["challenger_version"] == 2
    assert second["labels"] == {"stable": 2} and second["served_versions"] == [1, 2]
    figures = second["figures"]
    assert figures["challenger"]["model_version"] == 1  # the staged export
    assert figures["challenger"]["transactions"] == figures["champion"]["transactions"]
    assert (figures["challenger"]["card_precision_at_100"]
            > figures["champion"]["card_precision_at_100"])

    trainer.weight = DEGRADED
    code, third, _ = retrain(bank, model_dir)
    assert code == 3 and third["decision"] == "kept_champion"
    assert third["reason"].startswith("kept the champion: card_precision_at_100")
    assert third["challenger_version"] == 3 and third["labels"] == {"stable": 2}
    assert third["served_versions"] == [1, 2]  # the rejected challenger is not served
    assert list_versions(model_dir) == [1, 2, 3]
    assert read_metadata(model_dir, 3).details["retrain"]["decision"] == "kept_champion"
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".retrain-")]

    log = registry.read_decisions(model_dir)
    assert [(e["action"], e["decision"]) for e in log] == [
        ("retrain", "first_champion"), ("retrain", "promoted"), ("retrain", "kept_champion")]
    assert log[2]["challenger_version"] == 3 and log[2]["gate"]["metric"] == (
        "card_precision_at_100")

    listed = models("list", "--model-dir", str(model_dir))
    rows = {row["version"]: row for row in listed["versions"]}
    assert rows[2]["labels"] == ["stable"] and rows[2]["decision"] == "promoted"
    assert rows[3]["served"] is False and rows[3]["decision"] == "kept_champion"
    assert rows[3]["train_window"] == ["2018-05-10", "2018-05-13"]
    assert rows[1]["evaluation"]["auc_roc"] < rows[2]["evaluation"]["auc_roc"]

    rolled = models("rollback", "--model-dir", str(model_dir), "--reason", "drill")
    assert rolled["labels"] == {"stable": 1}
    assert registry.read_decisions(model_dir)[-1]["action"] == "rollback"
    promoted = models("promote", "--model-dir", str(model_dir), "3", "--reason", "override")
    assert promoted["labels"] == {"stable": 3} and promoted["served_versions"] == [1, 3]


def test_a_dry_run_decides_but_writes_nothing(bank, tmp_path, trainer):
    model_dir = tmp_path / "models"
    trainer.weight = DEGRADED
    retrain(bank, model_dir)
    before = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*"))
    log_before = (model_dir / "decisions.jsonl").read_text()
    trainer.weight = GOOD
    code, decision, _ = retrain(bank, model_dir, "--dry-run")
    assert code == 0 and decision["decision"] == "promoted" and decision["dry_run"] is True
    assert decision["challenger_version"] is None
    trainer.weight = DEGRADED
    code, decision, _ = retrain(bank, model_dir, "--dry-run")
    assert code == 3 and decision["decision"] == "kept_champion"
    after = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*"))
    assert after == before and (model_dir / "decisions.jsonl").read_text() == log_before


def test_an_accepted_challenger_can_go_to_the_canary_label(bank, tmp_path, trainer):
    model_dir = tmp_path / "models"
    trainer.weight = DEGRADED
    retrain(bank, model_dir)
    trainer.weight = GOOD
    code, decision, _ = retrain(bank, model_dir, "--canary")
    assert code == 0 and decision["decision"] == "canary"
    assert decision["labels"] == {"stable": 1, "canary": 2}
    promoted = models("promote", "--model-dir", str(model_dir))  # promotes the canary
    assert promoted["labels"] == {"stable": 2}


def test_input_errors_exit_2_with_the_reason_as_json(bank, tmp_path, trainer):
    model_dir = tmp_path / "models"
    code, decision, _ = retrain(bank, model_dir, "--train-days", "30")
    assert code == 2 and decision["decision"] == "input_error"
    assert "day(s) missing" in decision["error"]
    code, decision, _ = retrain(bank, model_dir, "--metric", "f1")
    assert code == 2 and "unknown metric" in decision["error"]
    assert not trainer.jobs

    retrain(bank, model_dir)  # a champion trained through 2018-05-13
    code, decision, _ = retrain(bank, model_dir, "--as-of", "2018-05-22", "--history-days", "30")
    assert code == 2 and "inside the evaluation window" in decision["error"]

    import fcntl

    with (model_dir / ".retrain.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, decision, _ = retrain(bank, model_dir)
    assert code == 2 and "another fraud retrain is running" in decision["error"]


def test_a_failure_exits_1_and_leaves_no_staging_behind(bank, tmp_path, monkeypatch):
    def broken(job, progress=None):
        (job.model_dir / "half-written").mkdir(parents=True)
        raise RuntimeError("the Beam runner died")

    monkeypatch.setattr("training.train_job.run", broken)
    model_dir = tmp_path / "models"
    code, decision, _ = retrain(bank, model_dir)
    assert code == 1 and decision == {"decision": "failed", "exit_code": 1,
                                      "error": "RuntimeError: the Beam runner died"}
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".retrain-")]
    assert not (model_dir / "decisions.jsonl").exists()


# --- the slow test: real training ---------------------------------------------------------

SLOW_DAYS = 59  # newest 2018-05-29: evaluation 05-18..05-22, training 05-08..05-17
SLOW_WINDOW = ["--train-days", "10", "--eval-days", "5", "--epochs", "3", "--batch-size", "256"]


def _shuffled_label_file(table: pa.Table, first: date, last: date, out: Path) -> int:
    """Analysts' label file that shuffles ``is_fraud`` among the rows of ``first..last``."""
    days = table.column(spec.TIMESTAMP).to_numpy().astype("datetime64[D]")
    inside = (days >= np.datetime64(first)) & (days <= np.datetime64(last))
    rows = table.filter(pa.array(inside)).to_pylist()
    labels = np.array([r[spec.LABEL_KEY] for r in rows])
    np.random.default_rng(11).shuffle(labels)
    with out.open("w") as handle:
        for row, label in zip(rows, labels.tolist(), strict=True):
            handle.write(json.dumps({
                spec.TRANSACTION_ID: row[spec.TRANSACTION_ID], spec.LABEL_KEY: label,
                spec.TIMESTAMP: row[spec.TIMESTAMP].isoformat(),
                spec.CUSTOMER_ID: row[spec.CUSTOMER_ID], spec.TERMINAL_ID: row[spec.TERMINAL_ID],
                "labelled_at": (row[spec.TIMESTAMP] + timedelta(days=1)).isoformat(),
                "source": "test-shuffled",
            }) + "\n")
    return len(rows)


def _fraud_retrain(*args: str) -> tuple[int, dict[str, Any], float]:
    import subprocess
    import sys

    fraud = str(Path(sys.executable).with_name("fraud"))
    started = time.perf_counter()
    done = subprocess.run([fraud, "retrain", *args], capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stderr[-3000:]
    return done.returncode, json.loads(lines[-1]), seconds


@pytest.mark.slow
def test_real_retraining_refuses_a_degraded_challenger_and_promotes_a_good_one(tmp_path):
    table = simulate(SimulationConfig(customers=1000, terminals=2000, days=SLOW_DAYS,
                                      seed=1)).table
    lake = tmp_path / "lake"
    write_transactions(table, lake)
    shuffled = tmp_path / "shuffled-labels.jsonl"
    _shuffled_label_file(table, date(2018, 5, 8), date(2018, 5, 17), shuffled)
    model_dir = tmp_path / "models"
    common = ["--input", str(lake), "--model-dir", str(model_dir), *SLOW_WINDOW]

    code, first, first_s = _fraud_retrain(*common, "--labels", str(shuffled))
    assert code == 0 and first["decision"] == "first_champion"
    code, good, good_s = _fraud_retrain(*common)
    assert code == 0 and good["decision"] == "promoted", good["reason"]
    code, bad, bad_s = _fraud_retrain(*common, "--labels", str(shuffled))
    assert code == 3 and bad["decision"] == "kept_champion"
    assert bad["reason"].startswith("kept the champion: card_precision_at_100")
    assert configs.read(model_dir / "models.config").labels == {"stable": 2}
    figures = {
        "runs_seconds": [round(first_s, 1), round(good_s, 1), round(bad_s, 1)],
        "promoted": good["gate"]["checks"], "refused": bad["gate"]["checks"],
        "timings": [first["timings"], good["timings"], bad["timings"]],
    }
    print("RETRAIN FIGURES " + json.dumps(figures))  # docs/retraining.md quotes them
