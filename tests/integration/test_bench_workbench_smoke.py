"""The workbench benchmark at a small scale: it loads, serves, measures and reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_workbench.py"


def test_bench_workbench_runs_on_both_databases(postgres_url: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--alerts", "2000", "--requests", "5",
         "--pg-url", postgres_url, "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["alerts"] == 2000
    for backend in ("postgresql", "sqlite"):
        figures = summary[backend]
        for name in ("queue_page_first", "queue_page_deep_cursor", "queue_page_filtered_first",
                     "queue_page_filtered_deep_cursor", "next_alert"):
            assert figures[name]["n"] == 5
            assert 0 < figures[name]["p50_ms"] <= figures[name]["p95_ms"]
        assert figures["rows_per_page"] == 50
        assert isinstance(figures["meets_target"], bool)
