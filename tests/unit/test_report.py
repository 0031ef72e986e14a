"""The HTML evaluation report: page content and plot files."""

from __future__ import annotations

import re

import numpy as np
import pytest

from training import evaluation as ev
from training.report import PLOTS, ReportContext, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _period(seed: int = 3, n: int = 2000) -> tuple[ev.PeriodScores, np.ndarray]:
    rng = np.random.default_rng(seed)
    all_days = np.arange(np.datetime64("2018-08-01"), np.datetime64("2018-08-08"))
    # no transaction on the 4th day: the report must still list it
    days = rng.choice(np.delete(all_days, 3), size=n)
    labels = (rng.random(n) < 0.05).astype(np.int64)
    scores = np.clip(rng.normal(0.2 + 0.5 * labels, 0.15), 0, 1).astype(np.float32)
    period = ev.PeriodScores(
        transaction_ids=np.array([f"t{i}" for i in range(n)], dtype=object),
        days=days,
        cards=np.array([f"c{i % 300}" for i in range(n)], dtype=object),
        labels=labels,
        scores=scores,
    )
    return period, all_days


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    period, all_days = _period()
    summary = ev.summarize(period, threshold=0.5, all_days=all_days)
    out = tmp_path_factory.mktemp("report")
    context = ReportContext("models/<fraud>", 3, "lake & more", "2018-08-01", "2018-08-07", 1234)
    index = write_report(out, period, summary, context)
    return index, summary


def test_report_writes_every_plot_as_a_real_png(report):
    index, _ = report
    for name in PLOTS.values():
        data = (index.parent / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 10_000, name  # a drawn plot, not an empty canvas


def test_report_page_shows_the_figures_and_links_the_plots(report):
    index, summary = report
    page = index.read_text(encoding="utf-8")
    assert f"{summary.auc_roc:.4f}" in page
    assert f"{summary.average_precision:.4f}" in page
    assert f"{summary.card_precision.mean:.4f}" in page
    assert f"{summary.at_threshold.recall:.4f}" in page
    assert "1,234 transactions of cards already known compromised" in page
    assert set(re.findall(r'<img src="([^"]+)"', page)) == set(PLOTS.values())


def test_report_lists_every_calendar_day_including_days_without_transactions(report):
    index, summary = report
    page = index.read_text(encoding="utf-8")
    for day in summary.all_days:
        assert f"<td>{day}</td>" in page
    assert page.count("no transactions") == 1


def test_report_escapes_what_it_shows(report):
    page = report[0].read_text(encoding="utf-8")
    assert "models/&lt;fraud&gt;" in page and "lake &amp; more" in page
    assert "<fraud>" not in page
