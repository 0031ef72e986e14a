"""What one request, one connection and the whole server may cost (docs/model-server.md).

The defaults fit the largest legitimate batch of this model with a wide margin:
the scorer sends at most ``--max-batch`` (default 2,000) rows per call, about
0.2-0.4 KB per row over gRPC (22 float32 + 7 short strings) and 1-1.5 KB per row
as REST JSON (row format repeats the 29 input names). 100,000 rows, 50 times the
scorer's default, fit in 32 MiB of protobuf; 16 MiB of JSON hold about 12,000 rows
in the row format and over 20,000 in the columnar one.
"""

from __future__ import annotations

from dataclasses import dataclass

from features.errors import InputError

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Caps on requests and concurrency; every field has a ``fraud model-server`` flag."""

    #: Rows (elements of the 1-D batch) one input tensor may declare: --max-batch-rows.
    max_batch_rows: int = 100_000
    #: Largest gRPC message either way: --grpc-max-message-bytes.
    grpc_max_message_bytes: int = 32 * MiB
    #: RPCs in flight (running or queued for a worker) before RESOURCE_EXHAUSTED:
    #: --grpc-max-concurrent-rpcs.
    grpc_max_concurrent_rpcs: int = 32
    #: Threads running gRPC handlers: --grpc-workers. TF releases the GIL while it
    #: computes, so a few more threads than cores keep the cores busy.
    grpc_workers: int = 8
    #: Largest REST request body: --rest-max-body-bytes (413 beyond).
    rest_max_body_bytes: int = 16 * MiB
    #: Open REST connections, one handler thread each: --rest-max-connections (503 beyond).
    rest_max_connections: int = 32
    #: REST requests decoding JSON or predicting at once: --rest-workers (the others wait,
    #: up to their request timeout, then get 503). Bounds the memory JSON decoding takes.
    rest_workers: int = 4
    #: Longest wait for the next bytes of a REST connection (a stalled client, an idle
    #: keep-alive connection): --rest-read-timeout.
    rest_read_timeout: float = 10.0
    #: Longest time from the first byte of a REST request to its last body byte
    #: (a client dribbling its headers or body): --rest-request-timeout.
    rest_request_timeout: float = 30.0

    def __post_init__(self) -> None:
        positive = {
            "--max-batch-rows": self.max_batch_rows,
            "--grpc-max-message-bytes": self.grpc_max_message_bytes,
            "--grpc-max-concurrent-rpcs": self.grpc_max_concurrent_rpcs,
            "--grpc-workers": self.grpc_workers,
            "--rest-max-body-bytes": self.rest_max_body_bytes,
            "--rest-max-connections": self.rest_max_connections,
            "--rest-workers": self.rest_workers,
            "--rest-read-timeout": self.rest_read_timeout,
            "--rest-request-timeout": self.rest_request_timeout,
        }
        for flag, value in positive.items():
            if not value > 0:
                raise InputError(f"{flag} must be > 0, got {value}")
        if self.grpc_max_message_bytes > 2**31 - 1:
            raise InputError("--grpc-max-message-bytes must be below 2 GiB")
