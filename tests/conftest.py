"""Shared fixtures live in tests/fixtures/*, one module per real service."""

import os

# Keep TensorFlow quiet and deterministic enough for tests.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest_plugins = [
    "tests.fixtures.broker",
    "tests.fixtures.databases",
    "tests.fixtures.model_server",
]
