"""Validate one raw transaction record against the contract in :mod:`features.spec`.

One validator serves the Kafka decoder, the JSON Lines fallback reader and any
caller holding a record as a mapping (a JSON object, a CSV row, a dict). The
vectorised file readers (:mod:`ingest.readers`) apply the same rules column by
column and reuse the reason texts below, so a bad value gets the same message
whichever path sees it.

Rules (``contracts.md`` §1, plus the choices made here):

* string fields accept strings (stripped of surrounding whitespace) and
  integers (turned into their decimal string: numeric card, terminal and MCC
  codes are common); floats, booleans, arrays and objects are wrong types;
  missing or empty optional categoricals become ``"unknown"``;
* a required field that is absent, null, or an empty/blank string (an empty
  CSV cell) is missing;
* ``timestamp`` is an ISO-8601 string (or a ``datetime``); no offset means
  UTC; the result is a timezone-aware UTC ``datetime``;
* ``amount`` is a number, or a string holding a decimal number (CSV cells are
  text, and banking systems often send amounts as strings to keep decimals);
  it must be finite and >= 0;
* ``is_fraud`` is required when the input is labelled and must be 0 or 1
  (integers, booleans, ``"0"``/``"1"``, or floats equal to 0 or 1); on
  unlabelled input it is ignored like any unknown field;
* unknown extra fields are ignored.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from features.errors import InputError
from features.spec import (
    AMOUNT,
    LABEL_KEY,
    MAX_RECORD_BYTES,
    RAW_FIELDS,
    TIMESTAMP,
    UNKNOWN,
    Kind,
)

MISSING = "required field is missing"
NUMBER_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
#: Same pattern for Arrow's RE2 engine, applied to stripped strings.
NUMBER_PATTERN = NUMBER_RE.pattern

_LABEL_VALUES = {0: 0, 1: 1, "0": 0, "1": 1}


class ValidationError(InputError):
    """A record breaks the contract: which record, which field, and why.

    ``field`` is ``None`` when the record as a whole is bad (invalid UTF-8 or
    JSON, not an object, oversized).
    """

    def __init__(self, record: str, field: str | None, reason: str) -> None:
        self.record = record
        self.field = field
        self.reason = reason
        where = f"{record}: field '{field}'" if field else record
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.record, self.field, self.reason))


def type_name(value: Any) -> str:
    """Return the JSON-ish name of a Python value's type, for error messages."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def show(value: Any, limit: int = 40) -> str:
    """Return a short repr of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def wrong_type(expected: str, value: Any) -> str:
    """Reason text of a value of the wrong type."""
    return f"expected {expected}, got {type_name(value)} {show(value)}"


def amount_reason(value: float) -> str | None:
    """Why a parsed amount is invalid, or ``None`` if it is fine."""
    if not math.isfinite(value):
        return f"must be finite, got {value!r}"
    if value < 0:
        return f"must be >= 0, got {value!r}"
    return None


def label_reason(value: Any) -> str:
    """Reason text of a label that is not 0 or 1."""
    return f"must be 0 or 1, got {show(value)}"


def number_reason(value: str) -> str:
    """Reason text of an amount string that is not a decimal number."""
    return f"not a number: {show(value)}"


def timestamp_reason(value: str) -> str:
    """Reason text of an unparsable timestamp string."""
    return f"not an ISO-8601 timestamp: {show(value)}"


def parse_string(value: Any, where: str, field: str, required: bool) -> str:
    """Return a canonical string field value (see the module rules)."""
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif value is None:
        text = ""
    else:
        raise ValidationError(where, field, wrong_type("a string", value))
    if text:
        return text
    if required:
        raise ValidationError(where, field, MISSING)
    return UNKNOWN


def to_utc(moment: datetime) -> datetime:
    """Return a timezone-aware UTC datetime; naive means UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_timestamp(value: Any, where: str, field: str = TIMESTAMP) -> datetime:
    """Parse an ISO-8601 string or datetime into a timezone-aware UTC datetime."""
    if isinstance(value, str) and value.strip():
        try:
            return to_utc(datetime.fromisoformat(value.strip()))
        except ValueError:
            raise ValidationError(where, field, timestamp_reason(value)) from None
    if isinstance(value, datetime):
        return to_utc(value)
    if value is None or isinstance(value, str):
        raise ValidationError(where, field, MISSING)
    raise ValidationError(where, field, wrong_type("an ISO-8601 string", value))


def parse_amount(value: Any, where: str, field: str = AMOUNT) -> float:
    """Parse a finite, non-negative amount from a number or a decimal string."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        amount = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if not NUMBER_RE.match(text):
            raise ValidationError(where, field, number_reason(value))
        amount = float(text)
    elif value is None or isinstance(value, str):
        raise ValidationError(where, field, MISSING)
    else:
        raise ValidationError(where, field, wrong_type("a number", value))
    reason = amount_reason(amount)
    if reason:
        raise ValidationError(where, field, reason)
    return amount


def parse_label(value: Any, where: str, field: str = LABEL_KEY) -> int:
    """Parse the label into 0 or 1."""
    key = value.strip() if isinstance(value, str) else value
    if key is None or key == "":
        raise ValidationError(where, field, MISSING)
    if isinstance(key, float) and key in (0.0, 1.0):
        return int(key)
    if isinstance(key, bool):
        return int(key)
    label = _LABEL_VALUES.get(key) if isinstance(key, int | str) else None
    if label is None:
        raise ValidationError(where, field, label_reason(value))
    return label


def validate_record(
    raw: Mapping[str, Any], where: str, *, labelled: bool = False
) -> dict[str, Any]:
    """Return the canonical record (fields in contract order) of one raw record.

    ``where`` names the record in error messages, e.g. ``"line 12 of x.jsonl"``.
    Raises :class:`ValidationError` on the first bad field.
    """
    record: dict[str, Any] = {}
    get = raw.get
    for name, spec in RAW_FIELDS.items():
        kind = spec.kind
        if kind is Kind.STRING:
            record[name] = parse_string(get(name), where, name, spec.required)
        elif kind is Kind.TIMESTAMP:
            record[name] = parse_timestamp(get(name), where, name)
        elif kind is Kind.AMOUNT:
            record[name] = parse_amount(get(name), where, name)
        elif labelled:
            record[name] = parse_label(get(name), where, name)
    return record


def decode_json_record(data: bytes, where: str, *, labelled: bool = False) -> dict[str, Any]:
    """Validate one JSON-encoded record (a Kafka value or a JSON line).

    Checks, in order: size (``MAX_RECORD_BYTES``), UTF-8, JSON syntax, that
    it is an object, then its fields.
    """
    if len(data) > MAX_RECORD_BYTES:
        raise ValidationError(
            where, None, f"record is {len(data)} bytes, over the {MAX_RECORD_BYTES}-byte limit"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValidationError(where, None, f"invalid UTF-8 at byte {err.start}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValidationError(
            where, None, f"invalid JSON: {err.msg} at column {err.colno}"
        ) from None
    if not isinstance(obj, dict):
        raise ValidationError(where, None, f"expected a JSON object, got {type_name(obj)}")
    return validate_record(obj, where, labelled=labelled)
