"""The model server process: a ModelManager behind TF Serving's gRPC and REST APIs."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from concurrent import futures
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from features import model_config as model_configs
from features.errors import InputError
from features.model_dir import require_model_dir
from scoring.model_server.grpc_service import ModelService, PredictionService
from scoring.model_server.limits import Limits
from scoring.model_server.manager import ModelManager
from scoring.model_server.rest import RestServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    """Settings of one model server. Port 0 means "pick a free port".

    Either ``model_dir`` (and ``model_name``): the newest version is served; or
    ``model_config``, TF Serving's model config file: its name, base path,
    version policy and labels are served, and the file is polled every
    ``model_config_poll_seconds`` (None: ``poll_seconds``; 0: read once).
    """

    model_dir: Path | None = None
    model_name: str = "fraud"
    host: str = "127.0.0.1"
    grpc_port: int = 8500
    rest_port: int = 8501
    poll_seconds: float = 2.0
    #: A version folder must be quiet this long before it is loaded (None: poll_seconds).
    settle_seconds: float | None = None
    #: Retries of a version that failed to load, and the wait between them (TF Serving's
    #: --max_num_load_retries and --load_retry_interval_micros).
    max_load_retries: int = 5
    load_retry_interval: float = 60.0
    limits: Limits = field(default_factory=Limits)
    model_config: Path | None = None
    model_config_poll_seconds: float | None = None


class ModelServer:
    """Starts and stops the manager, the gRPC server and the REST server together."""

    def __init__(self, config: ServerConfig) -> None:
        name, model_dir = config.model_name, config.model_dir
        if config.model_config is not None:
            if model_dir is not None:
                raise InputError("give either a model directory or a model config file")
            served = model_configs.read(config.model_config)
            name, model_dir = served.name, served.base_dir()
            config = replace(config, model_name=name)
        elif model_dir is None:
            raise InputError("give a model directory or a model config file")
        self.config = config
        self.manager = ModelManager(
            name,
            require_model_dir(model_dir),
            config.poll_seconds,
            max_load_retries=config.max_load_retries,
            load_retry_interval=config.load_retry_interval,
            settle_seconds=config.settle_seconds,
            config_file=config.model_config,
            config_poll_seconds=config.model_config_poll_seconds,
        )
        self.grpc_port = 0
        self.rest_port = 0
        self._grpc: grpc.Server | None = None
        self._rest: RestServer | None = None
        self._rest_thread: threading.Thread | None = None

    def start(self) -> None:
        """Load the latest version, then listen; ports are known when this returns."""
        self.manager.start()
        limits = self.config.limits
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(limits.grpc_workers, thread_name_prefix="grpc"),
            options=[
                ("grpc.max_send_message_length", limits.grpc_max_message_bytes),
                ("grpc.max_receive_message_length", limits.grpc_max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
            # Beyond this many RPCs running or queued, new ones get RESOURCE_EXHAUSTED.
            maximum_concurrent_rpcs=limits.grpc_max_concurrent_rpcs,
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(self.manager, limits.max_batch_rows), self._grpc
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelService(self.manager), self._grpc
        )
        self.grpc_port = self._bind_grpc()
        self._grpc.start()
        try:
            self._rest = RestServer((self.config.host, self.config.rest_port), self.manager, limits)
        except OSError as err:
            self.stop()
            address = f"{self.config.host}:{self.config.rest_port}"
            raise InputError(f"cannot listen on {address}: {err}") from None
        self.rest_port = self._rest.server_address[1]
        self._rest_thread = threading.Thread(
            target=self._rest.serve_forever, args=(0.1,), name="rest", daemon=True
        )
        self._rest_thread.start()

    def _bind_grpc(self) -> int:
        assert self._grpc is not None
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        address = f"{host}:{self.config.grpc_port}"
        try:
            port = self._grpc.add_insecure_port(address)
        except RuntimeError as err:
            raise InputError(f"cannot listen on {address}: {err}") from None
        if port == 0:
            raise InputError(f"cannot listen on {address}")
        return port

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Finish in-flight requests (up to the grace period), then release everything."""
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.server_close()
            self._rest = None
        if self._grpc is not None:
            self._grpc.stop(grace_seconds).wait()
            self._grpc = None
        self.manager.stop()

    def ready_line(self) -> str:
        """Return the human-readable "serving ..." line printed when ready."""
        versions = self.manager.serving_versions
        if not versions:
            served = "version none (waiting for one)"
        elif len(versions) == 1:
            served = f"version {versions[0]}"
        else:
            served = f"versions {', '.join(map(str, versions))}"
        labels = self.manager.labels
        if labels:
            served += " (" + ", ".join(f"{k} -> {v}" for k, v in sorted(labels.items())) + ")"
        return (
            f"serving model {self.config.model_name} {served} "
            f"on grpc :{self.grpc_port} rest :{self.rest_port}"
        )

    def ready_json(self) -> str:
        """Return the JSON line printed on stdout when ready (ports, version served)."""
        return json.dumps(
            {
                "model_name": self.config.model_name,
                "version": self.manager.serving_version,
                "versions": self.manager.serving_versions,
                "labels": self.manager.labels,
                "host": self.config.host,
                "grpc_port": self.grpc_port,
                "rest_port": self.rest_port,
            }
        )


def serve(config: ServerConfig) -> None:
    """Run a model server until SIGTERM or SIGINT, then stop gracefully."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    server = ModelServer(config)
    try:
        server.start()
        print(server.ready_line(), file=sys.stderr, flush=True)
        print(server.ready_json(), flush=True)
        stopping.wait()
        log.info("stopping model server")
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
