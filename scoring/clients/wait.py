"""Wait until a model server reports a version AVAILABLE (TF Serving's GetModelStatus).

Used between the two steps of a label move for the official TF Serving
(``features.model_registry``): it refuses to point a label in use at a version
that has not finished loading.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from features.errors import InputError


def version_state(url: str, model_name: str, version: int, timeout_seconds: float = 5.0) -> str:
    """The state of ``version`` at ``url`` (grpc:// or http://): AVAILABLE, LOADING, ...; or why.

    Never raises for an unreachable server or an unknown version (the reason is returned).
    """
    if url.startswith("grpc://"):
        import grpc
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model_name
        request.model_spec.version.value = version
        with grpc.insecure_channel(url.removeprefix("grpc://").rstrip("/")) as channel:
            try:
                answer = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                    request, timeout=timeout_seconds)
            except grpc.RpcError as err:
                return f"{err.code().name}: {err.details()}"  # type: ignore[attr-defined]
        states = [get_model_status_pb2.ModelVersionStatus.State.Name(s.state)
                  for s in answer.model_version_status if s.version == version]
        return states[0] if states else "not reported"
    if url.startswith(("http://", "https://")):
        path = f"{url.rstrip('/')}/v1/models/{model_name}/versions/{version}"
        try:
            with urllib.request.urlopen(path, timeout=timeout_seconds) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as err:
            return f"HTTP {err.code}"
        except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError) as err:
            return str(err)
        states = [s.get("state") for s in answer.get("model_version_status", [])
                  if str(s.get("version")) == str(version)]
        return str(states[0]) if states else "not reported"
    raise InputError(f"--wait-for-server must be grpc://HOST:PORT or http://HOST:PORT: {url!r}")


def waiter(urls: list[str], model_name: str, timeout_seconds: float,
           say: Callable[[str], None] = lambda _: None) -> Callable[[int], None]:
    """A ``wait(version)`` on every server of ``urls``; InputError after ``timeout_seconds``."""
    for url in urls:
        if not url.startswith(("grpc://", "http://", "https://")):
            raise InputError(f"--wait-for-server must be grpc://HOST:PORT or http://HOST:PORT: "
                             f"{url!r}")

    def wait(version: int) -> None:
        deadline = time.monotonic() + timeout_seconds
        for url in urls:
            say(f"waiting for {url} to serve version {version}")
            while (state := version_state(url, model_name, version)) != "AVAILABLE":
                if time.monotonic() > deadline:
                    raise InputError(
                        f"{url} did not serve version {version} within {timeout_seconds:g} s "
                        f"(last state: {state}); it is listed in the model config, the labels "
                        "did not move")
                time.sleep(0.5)

    return wait
