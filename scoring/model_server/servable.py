"""One loaded SavedModel version: its signatures and a fast, validated predict."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from scoring.model_server.errors import ServingError, shorten

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class Signature:
    """A callable signature: its input aliases with dtypes and its output aliases."""

    name: str
    inputs: Mapping[str, tf.DType]
    outputs: tuple[str, ...]
    function: Callable[..., Mapping[str, tf.Tensor]]


class Servable:
    """A SavedModel version loaded for serving (what TF Serving calls a servable)."""

    def __init__(self, model_name: str, version: int, path: Path) -> None:
        self.model_name = model_name
        self.version = version
        self.path = path
        # The loaded object owns the variables: keep it alive as long as the functions.
        self._loaded = tf.saved_model.load(str(path))
        self.signatures: dict[str, Signature] = {
            name: _signature(name, fn) for name, fn in self._loaded.signatures.items()
        }
        # Read once at load: the files may be gone by the time metadata is asked for.
        self._signature_defs = _read_signature_defs(path)

    def signature(self, name: str = "") -> Signature:
        """Return the signature ``name`` (empty: ``serving_default``), as TF Serving does."""
        key = name or DEFAULT_SIGNATURE
        try:
            return self.signatures[key]
        except KeyError:
            raise ServingError(
                "FAILED_PRECONDITION", f'Serving signature key "{shorten(key)}" not found.'
            ) from None

    def signature_defs(self) -> dict[str, meta_graph_pb2.SignatureDef]:
        """The SignatureDefs of the SavedModel (what GetModelMetadata returns)."""
        return dict(self._signature_defs)

    def predict(
        self,
        inputs: Mapping[str, Any],
        signature_name: str = "",
        output_filter: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Run a signature on named 1-D batches; numbers are cast to the input's dtype.

        Raises ServingError INVALID_ARGUMENT naming the input for a missing, unknown,
        mistyped or misshapen input, as TF Serving does.
        """
        sig = self.signature(signature_name)
        outputs = _check_output_filter(sig, output_filter)
        tensors = {
            alias: _to_tensor(alias, value, sig.inputs[alias])
            for alias, value in check_input_aliases(sig, inputs).items()
        }
        _check_batch(tensors)
        try:
            result = sig.function(**tensors)
        except tf.errors.InvalidArgumentError as err:
            # TF's message quotes graph nodes and the Python source paths that defined
            # them: log it here, answer without it.
            log.warning(
                "model %s version %d refused inputs: %s", self.model_name, self.version, _first(err)
            )
            raise ServingError(
                "INVALID_ARGUMENT", "the model refused these inputs (INVALID_ARGUMENT)"
            ) from None
        except tf.errors.OpError as err:
            log.error("model %s version %d failed: %s", self.model_name, self.version, _first(err))
            raise ServingError("INTERNAL", "the model failed to compute this batch") from None
        return {alias: result[alias].numpy() for alias in outputs}


def _signature(name: str, fn: Any) -> Signature:
    specs = fn.structured_input_signature[1]
    return Signature(
        name=name,
        inputs={alias: spec.dtype for alias, spec in specs.items()},
        outputs=tuple(fn.structured_outputs),
        function=fn,
    )


def check_input_aliases(sig: Signature, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return ``inputs`` if its keys are exactly the signature's, else INVALID_ARGUMENT."""
    expected = ",".join(sorted(sig.inputs))
    for alias in inputs:
        if alias not in sig.inputs:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"input tensor alias not found in signature: {shorten(alias)}. "
                f"Inputs expected to be in the set {{{expected}}}.",
            )
    missing = sorted(set(sig.inputs) - set(inputs))
    if missing:
        raise ServingError(
            "INVALID_ARGUMENT",
            f"input size does not match signature: {len(inputs)}!={len(sig.inputs)}; "
            f"missing inputs: {','.join(missing)}",
        )
    return inputs


def _check_output_filter(sig: Signature, output_filter: Sequence[str]) -> tuple[str, ...]:
    for alias in output_filter:
        if alias not in sig.outputs:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"output tensor alias not found in signature: {shorten(alias)} Outputs expected "
                f"to be in the set {{{','.join(sig.outputs)}}}.",
            )
    return tuple(dict.fromkeys(output_filter)) or sig.outputs


def _to_tensor(alias: str, value: Any, dtype: tf.DType) -> tf.Tensor:
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    if array.ndim != 1:
        raise ServingError(
            "INVALID_ARGUMENT",
            f"input {alias}: expected a 1-D batch, got shape {list(array.shape)}",
        )
    is_text = array.dtype.kind in "OUS"
    if (dtype == tf.string) != is_text:
        raise ServingError(
            "INVALID_ARGUMENT",
            f"Expects arg {alias} to be {dtype.name} but {_dtype_name(array)} is provided",
        )
    try:
        return tf.constant(array, dtype=dtype)
    except (TypeError, ValueError, UnicodeError):
        raise ServingError(
            "INVALID_ARGUMENT", f"input {alias}: values cannot be converted to {dtype.name}"
        ) from None


def _dtype_name(array: np.ndarray) -> str:
    return "string" if array.dtype.kind in "OUS" else array.dtype.name


def _check_batch(tensors: Mapping[str, tf.Tensor]) -> None:
    sizes = {alias: int(t.shape[0]) for alias, t in tensors.items()}
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{a}={n}" for a, n in sorted(sizes.items()))
        raise ServingError("INVALID_ARGUMENT", f"inputs have different batch sizes: {detail}")


def _read_signature_defs(path: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    saved = saved_model_pb2.SavedModel()
    binary = path / "saved_model.pb"
    if binary.is_file():
        saved.ParseFromString(binary.read_bytes())
    else:
        text_format.Parse((path / "saved_model.pbtxt").read_text(encoding="utf-8"), saved)
    return dict(saved.meta_graphs[0].signature_def) if saved.meta_graphs else {}


def _first(err: tf.errors.OpError) -> str:
    """The first line of a TF error, cut short: what it is, not the data it quotes."""
    return (str(err.message).strip().splitlines() or [type(err).__name__])[0][:200]
