"""The local broker helper fails with a message naming the missing binary."""

from __future__ import annotations

import pytest

from features.errors import InputError
from fraud.dev.local_broker import LocalBroker, free_port


def test_missing_binary_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "no-tansu"))
    with pytest.raises(InputError, match=r"Tansu broker binary not found: .*no-tansu"):
        LocalBroker()


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert 1024 <= port <= 65535
