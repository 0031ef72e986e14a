"""Batch scoring throughput of the model clients: in-process SavedModel vs gRPC.

Exports the toy model (the real serving signature, tests/fixtures/model_server.py),
starts `fraud model-server` as a separate process (as in production) and times
`predict` of each client for batches of 100, 500 and 2000 rows. Prints one JSON
object last: rows/s per client and batch size.

    .venv/bin/python -m benchmarks.bench_model [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from scoring.clients.base import ModelClient  # noqa: E402
from tests.fixtures.model_server import export_toy_model, toy_inputs  # noqa: E402

BATCH_SIZES = (100, 500, 2000)


def rows_per_second(client: ModelClient, batch: int, seconds: float) -> float:
    inputs = toy_inputs(batch, seed=batch)
    for _ in range(3):
        client.predict(inputs)
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        client.predict(inputs)
        calls += 1
    return calls * batch / elapsed


def start_server(model_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    from scoring.model_server.process import start

    server = start(model_dir)
    return server.process, server.grpc_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per measurement")
    args = parser.parse_args()

    from scoring.clients.grpc_client import GrpcModelClient
    from scoring.clients.inprocess import InProcessModelClient

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp)
        export_toy_model(model_dir, 1, 0.5)
        local = InProcessModelClient(model_dir)
        for batch in BATCH_SIZES:
            results[f"inprocess_rows_per_s_batch_{batch}"] = round(
                rows_per_second(local, batch, args.seconds)
            )
            print(
                f"in-process batch {batch}: {results[f'inprocess_rows_per_s_batch_{batch}']}"
                " rows/s",
                file=sys.stderr,
            )
        local.close()

        server, port = start_server(model_dir)
        try:
            remote = GrpcModelClient(f"127.0.0.1:{port}")
            for batch in BATCH_SIZES:
                results[f"grpc_rows_per_s_batch_{batch}"] = round(
                    rows_per_second(remote, batch, args.seconds)
                )
                print(
                    f"gRPC batch {batch}: {results[f'grpc_rows_per_s_batch_{batch}']} rows/s",
                    file=sys.stderr,
                )
            remote.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
