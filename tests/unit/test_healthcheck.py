"""The image's health check (fraud/healthcheck.py), against real sockets on loopback."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fraud import healthcheck


@pytest.fixture
def server():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"status": "degraded", "model": "unavailable"}'
            self.send_response(200 if self.path == "/healthz" else 503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_url_is_healthy_on_200_only_and_says_why_not(server, capsys):
    assert healthcheck.main(["--url", f"http://127.0.0.1:{server}/healthz"]) == 0
    assert healthcheck.main(["--url", f"http://127.0.0.1:{server}/other"]) == 1
    assert '"model": "unavailable"' in capsys.readouterr().err


def test_default_url_comes_from_the_metrics_port(server, monkeypatch):
    monkeypatch.delenv("FRAUD_HEALTHCHECK_URL", raising=False)
    monkeypatch.setenv("FRAUD_METRICS_PORT", str(server))
    assert healthcheck.default_url() == f"http://127.0.0.1:{server}/healthz"
    assert healthcheck.main([]) == 0


def test_tcp_and_broker(server, monkeypatch):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    assert healthcheck.main(["--tcp", f"127.0.0.1:{dead},127.0.0.1:{server}"]) == 0
    monkeypatch.setenv("FRAUD_BOOTSTRAP_SERVERS", f"127.0.0.1:{dead}")
    assert healthcheck.main(["--broker", "--timeout", "1"]) == 1


def test_process_reads_pid_1s_state(tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "status").write_text("Name:\tfraud\nState:\tS (sleeping)\n")
    assert healthcheck.check_process(tmp_path)[0]
    (tmp_path / "1" / "status").write_text("Name:\tfraud\nState:\tZ (zombie)\n")
    assert not healthcheck.check_process(tmp_path)[0]
