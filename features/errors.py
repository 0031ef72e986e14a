"""Errors that the command line turns into exit code 2 with a one-line reason."""

from __future__ import annotations


class InputError(Exception):
    """Bad input or usage: a file, a record, an option. Exit code 2, no traceback."""
