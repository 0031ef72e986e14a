"""Reason codes as the alert page shows them: a heading per group, the facts, a strength."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scoring.reasons import GROUP_LABELS


def display(reasons: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Reasons ready for the template: label, text, contribution and a 0-100 bar width."""
    items = [r for r in (reasons or []) if isinstance(r, Mapping)]
    top = max((float(r.get("contribution") or 0) for r in items), default=0.0)
    out = []
    for r in items:
        contribution = float(r.get("contribution") or 0)
        out.append({
            "group": str(r.get("group", "")),
            "label": GROUP_LABELS.get(str(r.get("group", "")), str(r.get("group", "other"))),
            "text": str(r.get("text", "")),
            "contribution": contribution,
            "width": round(100 * contribution / top) if top > 0 else 0,
        })
    return out
