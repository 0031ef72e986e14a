"""The HTML evaluation report: figures, a table per day and PNG plots.

Plots are drawn with matplotlib's Agg backend (no display needed) and the page
is rendered from ``training/templates/evaluation_report.html.j2``, so the
report directory is self-contained: ``index.html`` plus its PNG files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
from jinja2 import Environment, FileSystemLoader

from training import evaluation as ev

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

TEMPLATES = Path(__file__).parent / "templates"
TEMPLATE = "evaluation_report.html.j2"
FRAUD_COLOR, GENUINE_COLOR, THRESHOLD_COLOR = "#c0392b", "#2e86c1", "#7d3c98"


@dataclass(frozen=True)
class ReportContext:
    """What was evaluated: shown in the report's header."""

    model_dir: str
    model_version: int
    input_path: str
    start: str
    end: str
    #: Transactions left out because their card was already known compromised.
    excluded_known_compromised: int


def _pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend: files only, no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _new_figure(width: float = 6.0, height: float = 4.5) -> tuple[Figure, Axes]:
    fig, ax = _pyplot().subplots(figsize=(width, height), dpi=100)
    return fig, ax


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path)
    _pyplot().close(fig)


def _plot_roc(period: ev.PeriodScores, summary: ev.Summary, path: Path) -> None:
    fpr, tpr = ev.roc_curve(period.labels, period.scores)
    fig, ax = _new_figure()
    ax.plot(fpr, tpr, color=FRAUD_COLOR, label=f"model (AUC {summary.auc_roc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="random (AUC 0.5)")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    _save(fig, path)


def _plot_precision_recall(period: ev.PeriodScores, summary: ev.Summary, path: Path) -> None:
    precision, recall = ev.precision_recall_curve(period.labels, period.scores)
    fraud_rate = summary.frauds / summary.transactions
    fig, ax = _new_figure()
    ax.step(recall, precision, where="post", color=FRAUD_COLOR,
            label=f"model (AP {summary.average_precision:.3f})")
    ax.axhline(fraud_rate, color="grey", linestyle="--", label=f"random (AP {fraud_rate:.3f})")
    t = summary.at_threshold
    ax.plot([t.recall], [t.precision], "o", color=THRESHOLD_COLOR,
            label=f"threshold {t.threshold:.3g}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curve",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left")
    _save(fig, path)


def _plot_score_distribution(period: ev.PeriodScores, summary: ev.Summary, path: Path) -> None:
    bins = np.linspace(0.0, 1.0, 51).tolist()
    fig, ax = _new_figure(7.0)
    for label, name, color in ((0, "genuine", GENUINE_COLOR), (1, "fraud", FRAUD_COLOR)):
        scores = period.scores[period.labels == label]
        ax.hist(scores, bins=bins, alpha=0.6, color=color, label=f"{name} ({scores.size:,})")
    ax.axvline(summary.at_threshold.threshold, color=THRESHOLD_COLOR, linestyle="--",
               label="alert threshold")
    ax.set_yscale("log")
    ax.set(xlabel="score", ylabel="transactions (log scale)", title="Score distribution")
    ax.legend()
    _save(fig, path)


def _plot_card_precision(summary: ev.Summary, path: Path) -> None:
    cp = summary.card_precision
    labels = [str(d) for d in cp.days]
    fig, ax = _new_figure(max(6.0, 0.35 * len(labels)))
    ax.bar(labels, cp.per_day, color=FRAUD_COLOR)
    ax.axhline(cp.mean, color="black", linestyle="--", label=f"mean {cp.mean:.3f}")
    ax.set(ylabel=f"card precision@{cp.k}", title=f"Card precision@{cp.k} per day", ylim=(0, 1))
    ax.tick_params(axis="x", labelrotation=90)
    ax.legend()
    _save(fig, path)


def _plot_alerts(period: ev.PeriodScores, summary: ev.Summary, path: Path) -> None:
    t = summary.at_threshold.threshold
    days = [str(d) for d in summary.all_days]
    fig, (daily, budget) = _pyplot().subplots(1, 2, figsize=(12, 4.5), dpi=100)
    daily.bar(days, summary.alerts_per_day, color=GENUINE_COLOR, label="alerts")
    daily.bar(days, summary.fraud_alerts_per_day, color=FRAUD_COLOR, label="of which fraud")
    daily.set(ylabel="alerts", title=f"Alerts per day at threshold {t:.3g}")
    daily.tick_params(axis="x", labelrotation=90)
    daily.legend()

    ascending = np.sort(period.scores.astype(np.float64))
    grid = np.linspace(0.0, 1.0, 501)
    per_day = (ascending.size - np.searchsorted(ascending, grid, side="left")) / len(days)
    budget.plot(grid, np.maximum(per_day, 1e-1), color=GENUINE_COLOR)
    budget.axvline(t, color=THRESHOLD_COLOR, linestyle="--",
                   label=f"threshold {t:.3g}: {summary.mean_alerts_per_day:,.1f}/day")
    budget.set_yscale("log")
    budget.set(xlabel="threshold", ylabel="mean alerts per day (log scale)",
               title="Alert volume vs threshold", xlim=(0, 1))
    budget.legend()
    _save(fig, path)


PLOTS = {
    "roc": "roc.png",
    "precision_recall": "precision_recall.png",
    "score_distribution": "score_distribution.png",
    "card_precision": "card_precision_per_day.png",
    "alerts": "alerts_per_day.png",
}


def _daily_rows(summary: ev.Summary) -> list[dict[str, object]]:
    cp = summary.card_precision
    by_day = {d: (p, n) for d, p, n in zip(cp.days, cp.per_day, cp.compromised_cards_per_day,
                                            strict=True)}
    rows: list[dict[str, object]] = []
    for day, alerts, fraud_alerts in zip(summary.all_days, summary.alerts_per_day,
                                         summary.fraud_alerts_per_day, strict=True):
        precision, compromised = by_day.get(day, (None, None))
        rows.append({"day": str(day), "card_precision": precision,
                     "compromised_cards": compromised, "alerts": int(alerts),
                     "fraud_alerts": int(fraud_alerts)})
    return rows


def write_report(
    report_dir: str | Path,
    period: ev.PeriodScores,
    summary: ev.Summary,
    context: ReportContext,
) -> Path:
    """Write ``index.html`` and its plots into ``report_dir``; return the page's path."""
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    _plot_roc(period, summary, out / PLOTS["roc"])
    _plot_precision_recall(period, summary, out / PLOTS["precision_recall"])
    _plot_score_distribution(period, summary, out / PLOTS["score_distribution"])
    _plot_card_precision(summary, out / PLOTS["card_precision"])
    _plot_alerts(period, summary, out / PLOTS["alerts"])
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True)
    page = env.get_template(TEMPLATE).render(
        context=context, figures=summary.figures(), summary=summary, plots=PLOTS,
        daily=_daily_rows(summary),
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
