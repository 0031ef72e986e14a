"""How long jobs report what they are doing: a callback taking one line of text.

The command line passes one that prints to a terminal; libraries and tests
pass :func:`silent` (or nothing).
"""

from __future__ import annotations

from collections.abc import Callable

#: Called with one human-readable line per step of a long job.
Progress = Callable[[str], None]


def silent(_message: str) -> None:
    """A progress callback that says nothing."""
