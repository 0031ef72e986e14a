"""Running ``fraud`` commands in the test process (bad input needs no subprocess)."""

from __future__ import annotations

import pytest

from fraud.cli import run


def fraud_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``fraud ARGS`` here; its exit code, stdout and stderr."""
    capsys.readouterr()
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err
