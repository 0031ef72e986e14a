"""The promotion gate: does a challenger replace the champion? Pure: figures in, verdict out.

The challenger is promoted only if, on the same evaluation window,

- it beats the champion on the chosen metric by **more than** ``margin``
  (absolute; a tie never promotes, so equal models do not churn), and
- it is not worse than the champion by more than ``tolerance`` (absolute) on
  each guarded metric (AUC-ROC and average precision, less the chosen one).

Without a champion the challenger is promoted as the first one. A figure
that is missing or not finite fails the gate (never a silent pass).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Metrics the gate can use; higher is better for each.
GATE_METRICS = (
    "card_precision_at_100", "auc_roc", "average_precision",
    "precision_at_threshold", "recall_at_threshold",
)
DEFAULT_METRIC = "card_precision_at_100"
#: Guarded besides the chosen metric.
GUARDED = ("card_precision_at_100", "auc_roc", "average_precision")


@dataclass(frozen=True)
class GateRule:
    """The chosen metric, the margin it must be beaten by, the tolerance on the others."""

    metric: str = DEFAULT_METRIC
    margin: float = 0.0
    tolerance: float = 0.01
    guarded: tuple[str, ...] = field(default=GUARDED)

    def __post_init__(self) -> None:
        if self.metric not in GATE_METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; one of {', '.join(GATE_METRICS)}")
        for name, value in (("margin", self.margin), ("tolerance", self.tolerance)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")

    @property
    def others(self) -> tuple[str, ...]:
        """The guarded metrics other than the chosen one."""
        return tuple(m for m in self.guarded if m != self.metric)

    def as_dict(self) -> dict[str, Any]:
        """The rule, for the decision log."""
        return {"metric": self.metric, "margin": self.margin, "tolerance": self.tolerance,
                "guarded": list(self.others)}


@dataclass(frozen=True)
class Check:
    """One comparison of the gate."""

    metric: str
    challenger: float
    champion: float
    difference: float
    needed: str
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"metric": self.metric, "challenger": self.challenger, "champion": self.champion,
                "difference": self.difference, "needed": self.needed, "passed": self.passed}


@dataclass(frozen=True)
class Verdict:
    """Whether to promote, why (one sentence), and each comparison."""

    promote: bool
    reason: str
    checks: tuple[Check, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"promote": self.promote, "reason": self.reason,
                "checks": [c.as_dict() for c in self.checks]}


def _figure(figures: Mapping[str, Any], metric: str) -> float:
    value = figures.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def decide(challenger: Mapping[str, Any], champion: Mapping[str, Any] | None,
           rule: GateRule) -> Verdict:
    """The gate's verdict on two sets of evaluation figures (``fraud evaluate``'s keys)."""
    if champion is None:
        return Verdict(True, "no champion yet: the challenger becomes the first stable version")
    checks = []
    main_challenger, main_champion = _figure(challenger, rule.metric), _figure(champion,
                                                                                rule.metric)
    gain = main_challenger - main_champion
    checks.append(Check(rule.metric, main_challenger, main_champion, gain,
                        f"> +{rule.margin:g}", math.isfinite(gain) and gain > rule.margin))
    for metric in rule.others:
        ours, theirs = _figure(challenger, metric), _figure(champion, metric)
        change = ours - theirs
        checks.append(Check(metric, ours, theirs, change, f">= -{rule.tolerance:g}",
                            math.isfinite(change) and change >= -rule.tolerance))
    failed = [c for c in checks if not c.passed]
    if not failed:
        return Verdict(True, "promoted: " + "; ".join(_describe(c) for c in checks),
                       tuple(checks))
    return Verdict(False, "kept the champion: " + "; ".join(_describe(c) for c in failed),
                   tuple(checks))


def _describe(check: Check) -> str:
    if not (math.isfinite(check.challenger) and math.isfinite(check.champion)):
        return f"{check.metric} is missing or not a number (challenger {check.challenger}, " \
               f"champion {check.champion})"
    return (f"{check.metric} {check.challenger:.4f} vs champion {check.champion:.4f} "
            f"({check.difference:+.4f}, needs {check.needed})")
