"""Run ``fraud model-server`` as a child process on free ports (demo, bench, tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def model_server_process(
    model_dir: Path, *, stderr: IO[bytes] | int = subprocess.DEVNULL
) -> Iterator[int]:
    """Start the server, wait for its ready line, yield its gRPC port; SIGTERM it on exit."""
    with model_server_command(["--model-dir", str(model_dir)], stderr=stderr) as ready:
        yield int(ready["grpc_port"])


@contextmanager
def model_server_command(
    args: Sequence[str], *, stderr: IO[bytes] | int = subprocess.DEVNULL
) -> Iterator[dict[str, Any]]:
    """``fraud model-server ARGS`` on free ports; yields its ready JSON (ports, versions)."""
    fraud = str(Path(sys.executable).with_name("fraud"))
    process = subprocess.Popen(
        [fraud, "model-server", *args, "--grpc-port", "0", "--rest-port", "0"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"fraud model-server exited before it was ready ({process.wait()})")
        yield dict(json.loads(line))
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
