"""The dashboard's charts as SVG, drawn on the server with matplotlib (no chart JavaScript)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

FRAUD = "#c0392b"
GENUINE = "#2e86c1"
NEUTRAL = "#5d6d7e"
CHARTS = ("alerts_per_day", "open_by_age", "decisions_per_day", "precision_by_model",
          "score_distributions", "workload", "threshold_capacity")


def _figure() -> tuple[Figure, Any]:
    fig, ax = plt.subplots(figsize=(6.4, 3.0), dpi=100)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    return fig, ax


def _svg(fig: Figure) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    return buf.getvalue()


def _empty(ax: Any, text: str = "no data yet") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=NEUTRAL)
    ax.set_xticks([])
    ax.set_yticks([])


def _days(ax: Any, labels: Sequence[str]) -> None:
    step = max(len(labels) // 8, 1)
    ax.set_xticks(range(0, len(labels), step), [labels[i][5:] for i in range(0, len(labels), step)],
                  fontsize=8)


def render(name: str, stats: dict[str, Any]) -> bytes:
    """The SVG of chart ``name`` (one of :data:`CHARTS`) from ``stats.summary`` figures."""
    fig, ax = _figure()
    if name == "alerts_per_day":
        rows = stats["alerts_per_day"]
        ax.set_title("Alerts per day", fontsize=10)
        if rows:
            ax.bar(range(len(rows)), [r["alerts"] for r in rows], color=NEUTRAL)
            _days(ax, [r["day"] for r in rows])
        else:
            _empty(ax)
    elif name == "open_by_age":
        rows = stats["open_by_age"]
        ax.set_title("Open alerts by age", fontsize=10)
        ax.bar([r["age"] for r in rows], [r["alerts"] for r in rows], color=GENUINE)
        ax.tick_params(axis="x", labelsize=8)
    elif name == "decisions_per_day":
        rows = stats["decisions_per_day"]
        ax.set_title("Decisions per day", fontsize=10)
        if rows:
            x = range(len(rows))
            fraud = [r["confirmed_fraud"] for r in rows]
            ax.bar(x, fraud, color=FRAUD, label="confirmed fraud")
            ax.bar(x, [r["false_positive"] for r in rows], bottom=fraud, color=GENUINE,
                   label="false positive")
            _days(ax, [r["day"] for r in rows])
            ax.legend(fontsize=8, frameon=False)
        else:
            _empty(ax)
    elif name == "precision_by_model":
        rows = [r for r in stats["precision_by_model"] if r["precision"] is not None]
        ax.set_title("Precision of decided alerts, per model version", fontsize=10)
        if rows:
            ax.bar([f"v{r['model_version']}" for r in rows], [r["precision"] for r in rows],
                   color=FRAUD)
            ax.set_ylim(0, 1)
            for i, r in enumerate(rows):
                ax.text(i, r["precision"] + 0.02, f"{r['precision']:.2f} (n={r['decided']})",
                        ha="center", fontsize=8)
        else:
            _empty(ax)
    elif name == "score_distributions":
        hist = stats["score_histograms"]
        bins = hist["bins"]
        ax.set_title("Scores of decided alerts", fontsize=10)
        edges = [i / bins for i in range(bins)]
        if any(hist["confirmed_fraud"]) or any(hist["false_positive"]):
            ax.bar(edges, hist["false_positive"], width=1 / bins, align="edge", color=GENUINE,
                   alpha=0.7, label="false positive")
            ax.bar(edges, hist["confirmed_fraud"], width=1 / bins, align="edge", color=FRAUD,
                   alpha=0.7, label="confirmed fraud")
            ax.set_xlabel("score", fontsize=8)
            ax.legend(fontsize=8, frameon=False)
        else:
            _empty(ax)
    elif name == "workload":
        rows = stats.get("workload") or []
        ax.set_title("Analysts' workload", fontsize=10)
        if rows:
            names = [r["analyst"] for r in rows]
            x = range(len(rows))
            ax.bar([i - 0.2 for i in x], [r["open"] for r in rows], width=0.4, color=NEUTRAL,
                   label="open, held")
            ax.bar([i + 0.2 for i in x], [r["decided_7d"] for r in rows], width=0.4,
                   color=GENUINE, label="decided, 7 days")
            ax.set_xticks(list(x), names, fontsize=8)
            ax.legend(fontsize=8, frameon=False)
        else:
            _empty(ax)
    elif name == "threshold_capacity":
        rows = stats["threshold_capacity"]["rows"]
        ax.set_title("Threshold vs capacity", fontsize=10)
        if rows:
            t = [r["threshold"] for r in rows]
            ax.plot(t, [r["alerts_per_day"] for r in rows], color=NEUTRAL, marker="o",
                    markersize=3)
            ax.set_xlabel("threshold", fontsize=8)
            ax.set_ylabel("alerts per day", fontsize=8)
            right = ax.twinx()
            right.plot(t, [r["precision"] if r["precision"] is not None else float("nan")
                           for r in rows], color=FRAUD, marker="o", markersize=3)
            right.set_ylim(0, 1)
            right.set_ylabel("precision", fontsize=8, color=FRAUD)
        else:
            _empty(ax)
    else:
        plt.close(fig)
        raise KeyError(name)
    return _svg(fig)
