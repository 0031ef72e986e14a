"""Errors of the model server, carrying the gRPC status code TF Serving would return."""

from __future__ import annotations

from typing import Literal

Code = Literal["INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "UNIMPLEMENTED", "INTERNAL"]

#: HTTP status of each code in the REST API (as TF Serving maps them).
HTTP_STATUS: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "NOT_FOUND": 404,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
}


class ServingError(Exception):
    """A request the server refuses, with TF Serving's status code and message."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code: Code = code
        self.message = message


def servable_not_found(model_name: str, version: int | None) -> ServingError:
    """TF Serving's NOT_FOUND for a model name or version that is not loaded."""
    name = shorten(model_name)
    request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
    return ServingError("NOT_FOUND", f"Servable not found for request: {request}")


def shorten(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters, to quote what a client sent in an error."""
    return text if len(text) <= limit else f"{text[:limit]}..."
