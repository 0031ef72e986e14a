"""The terminal output of the commands: progress on stderr, results on stdout."""

from __future__ import annotations

from rich.console import Console


def stderr_console() -> Console:
    """A console on stderr for progress lines (stdout carries the result, last)."""
    return Console(stderr=True, log_path=False, soft_wrap=True)
