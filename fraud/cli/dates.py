"""Date options of the command line: one parser, one error message."""

from __future__ import annotations

from datetime import date

from features.errors import InputError


def parse_day(option: str, text: str) -> date:
    """``YYYY-MM-DD`` -> date; an InputError naming the option otherwise."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{option} must be a date YYYY-MM-DD, got {text!r}") from None
