"""Run ``fraud model-server`` as a child process (demo, bench, tests), ready when it says so.

The server prints one JSON line on stdout once it listens (its ports and the
version served); :func:`start` waits for that line and returns the process
with its ports, :func:`model_server_process` does the same as a context
manager that stops the server on exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


@dataclass
class ModelServerProcess:
    """A running ``fraud model-server`` and what its ready line said."""

    process: subprocess.Popen[bytes]
    grpc_port: int
    rest_port: int
    ready: dict[str, Any]

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, then SIGKILL if it is still running after ``timeout`` seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(
    model_dir: Path,
    *args: str,
    grpc_port: int = 0,
    rest_port: int = 0,
    stderr: IO[bytes] | int = subprocess.DEVNULL,
) -> ModelServerProcess:
    """Start the server on ``model_dir`` (port 0: a free one) and wait until it is ready."""
    return start_command(["--model-dir", str(model_dir), *args], grpc_port=grpc_port,
                         rest_port=rest_port, stderr=stderr)


def start_command(
    args: Sequence[str],
    *,
    grpc_port: int = 0,
    rest_port: int = 0,
    stderr: IO[bytes] | int = subprocess.DEVNULL,
) -> ModelServerProcess:
    """Start ``fraud model-server ARGS`` (e.g. ``--model-config FILE``) and wait until ready."""
    fraud = str(Path(sys.executable).with_name("fraud"))
    command: Sequence[str] = [
        fraud, "model-server", *args,
        "--grpc-port", str(grpc_port), "--rest-port", str(rest_port),
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=stderr,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"fraud model-server exited before it was ready ({process.wait()})")
    ready = json.loads(line)
    return ModelServerProcess(process, int(ready["grpc_port"]), int(ready["rest_port"]), ready)


@contextmanager
def model_server_process(
    model_dir: Path, *args: str, stderr: IO[bytes] | int = subprocess.DEVNULL
) -> Iterator[int]:
    """Start the server, yield its gRPC port; stop it on exit."""
    server = start(model_dir, *args, stderr=stderr)
    try:
        yield server.grpc_port
    finally:
        server.stop()


@contextmanager
def model_server_command(
    args: Sequence[str], *, stderr: IO[bytes] | int = subprocess.DEVNULL
) -> Iterator[dict[str, Any]]:
    """``fraud model-server ARGS`` on free ports; yields its ready JSON (ports, versions)."""
    server = start_command(args, stderr=stderr)
    try:
        yield server.ready
    finally:
        server.stop()
