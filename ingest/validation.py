"""Validate one raw transaction record against the contract in :mod:`features.spec`.

One validator serves the Kafka decoder, the JSON Lines fallback reader and any
caller holding a record as a mapping (a JSON object, a CSV row, a dict). The
vectorised file readers (:mod:`ingest.readers`) apply the same rules column by
column and reuse the reason texts below, so a bad value gets the same message
whichever path sees it.

Rules (``docs/contracts.md`` §1, plus the choices made here; the limits are
:data:`features.spec.BOUNDS`, see ``docs/ingest.md``, Bounds):

* string fields accept strings (stripped of surrounding whitespace, as
  Python's ``str.strip`` defines it) and integers (turned into their decimal
  string: numeric card, terminal and MCC codes are common); floats, booleans,
  arrays and objects are wrong types; missing or empty optional categoricals
  become ``"unknown"``; a canonical value has at most its field's
  ``max_length`` characters, and no control character (category Cc: C0, DEL,
  C1) and no lone surrogate (Python reads JSON's ``"\ud800"`` as one; no
  database stores it);
* a required field that is absent, null, or an empty/blank string (an empty
  CSV cell) is missing;
* ``timestamp`` is an ISO-8601 string (or a ``datetime``); no offset means
  UTC; the result is a timezone-aware UTC ``datetime`` in
  ``[BOUNDS.earliest, BOUNDS.latest)``; for a live message, also at most
  ``BOUNDS.max_future_skew`` after the message's time;
* ``amount`` is a number, or a string holding a decimal number (ASCII digits;
  CSV cells are text, and banking systems often send amounts as strings to
  keep decimals); it must be finite, >= 0 and <= ``BOUNDS.max_amount``
  (``-0`` becomes ``0``);
* ``is_fraud`` is required when the input is labelled and must be 0 or 1
  (integers, booleans, ``"0"``/``"1"``, or floats equal to 0 or 1); on
  unlabelled input it is ignored like any unknown field;
* unknown extra fields are ignored.

A JSON record (:func:`parse_json_object`) is at most
``BOUNDS.max_record_bytes`` long, UTF-8, nested at most
``BOUNDS.max_json_depth`` levels, and one object; duplicate keys: the last one
wins (as in Python's ``json``). Whatever the bytes, the only exception raised
is :class:`ValidationError`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from features.errors import InputError
from features.spec import (
    AMOUNT,
    BOUNDS,
    LABEL_KEY,
    MAX_RECORD_BYTES,
    RAW_FIELDS,
    TIMESTAMP,
    UNKNOWN,
    Kind,
)

MISSING = "required field is missing"
NUMBER_RE = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
#: Same pattern for Arrow's RE2 engine, applied to stripped strings.
NUMBER_PATTERN = NUMBER_RE.pattern

#: Every character ``str.strip()`` removes (``str.isspace``; a test checks the
#: list): the column validator trims exactly these.
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004"
    "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
#: Characters no string field may hold: control characters (Cc) and lone surrogates.
_BAD_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
#: The same for Arrow's RE2 (valid UTF-8 cannot hold a surrogate).
BAD_CHAR_PATTERN = r"[\x00-\x1f\x{7f}-\x{9f}]"
#: Reason prefix of an exception the decoders did not expect; never raised by a
#: known input (the fuzz test checks), there so that a bug dead-letters one
#: message instead of stopping the scorer.
UNEXPECTED = "unexpected decoder error"

_LABEL_VALUES = {0: 0, 1: 1, "0": 0, "1": 1}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)
EARLIEST_US = BOUNDS.earliest_us
LATEST_US = BOUNDS.latest_us
_EARLIEST = BOUNDS.earliest
_LATEST = BOUNDS.latest
FUTURE_SKEW_US = BOUNDS.max_future_skew_us


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
    """Return a short repr of a bad value for an error message (never raises)."""
    try:
        text = repr(value)
    except Exception:  # an integer too long to print, a hostile __repr__
        text = f"<{type_name(value)}>"
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
    if value > BOUNDS.max_amount:
        return f"must be <= {BOUNDS.max_amount:.0f}, got {value!r}"
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


def length_reason(limit: int, length: int) -> str:
    """Reason text of a string longer than its field allows."""
    return f"must be at most {limit} characters, got {length}"


def char_reason(text: str) -> str | None:
    """Why a string holds a character no field may hold, or ``None``."""
    found = _BAD_CHAR.search(text)
    if found is None:
        return None
    code = ord(found.group())
    kind = "lone surrogate" if 0xD800 <= code <= 0xDFFF else "control character"
    return f"must not contain a {kind}, got U+{code:04X} at character {found.start() + 1}"


def format_epoch_us(us: int) -> str:
    """ISO-8601 UTC text of an instant in microseconds since the epoch (any int)."""
    try:
        return (_EPOCH + timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")
    except OverflowError:
        return f"{us} microseconds from 1970-01-01T00:00:00Z"


def range_reason(us: int, shown: str) -> str | None:
    """Why an instant is outside ``[BOUNDS.earliest, BOUNDS.latest)``, or ``None``."""
    if us < EARLIEST_US:
        return f"must not be before {format_epoch_us(EARLIEST_US)}, got {shown}"
    if us >= LATEST_US:
        return f"must be before {format_epoch_us(LATEST_US)}, got {shown}"
    return None


def latest_live_us(message_ms: int) -> int:
    """The latest event time a live message of time ``message_ms`` may carry, in µs."""
    return int(message_ms) * 1000 + FUTURE_SKEW_US


def future_reason(us: int, message_ms: int) -> str | None:
    """Why a live event lies too far after its message's time, or ``None``."""
    if us <= latest_live_us(message_ms):
        return None
    skew = BOUNDS.max_future_skew
    hours = skew / timedelta(hours=1)
    span = f"{hours:g} h" if hours.is_integer() else f"{skew.total_seconds():g} s"
    return (f"must be at most {span} after the message's time "
            f"{format_epoch_us(int(message_ms) * 1000)}, got {format_epoch_us(us)}")


def epoch_us(moment: datetime) -> int:
    """Microseconds since the epoch of a datetime (naive means UTC); never overflows."""
    offset = moment.utcoffset()
    naive = moment.replace(tzinfo=None)
    delta = naive - _EPOCH_NAIVE
    if offset is not None:
        delta -= offset
    return delta // _US


def parse_string(
    value: Any, where: str, field: str, required: bool, max_length: int | None = None
) -> str:
    """Return a canonical string field value (see the module rules).

    ``max_length`` defaults to the contract field's (``RAW_FIELDS``).
    """
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            text = str(value)
        except ValueError:  # more digits than Python prints: longer than any bound
            limit = _max_length(field, max_length)
            raise ValidationError(
                where, field, f"must be at most {limit} characters, got a longer integer"
            ) from None
    elif value is None:
        text = ""
    else:
        raise ValidationError(where, field, wrong_type("a string", value))
    if not text:
        if required:
            raise ValidationError(where, field, MISSING)
        return UNKNOWN
    limit = max_length if max_length is not None else _max_length(field, None)
    if len(text) > limit:
        raise ValidationError(where, field, length_reason(limit, len(text)))
    if _BAD_CHAR.search(text) is not None:
        raise ValidationError(where, field, char_reason(text) or "")
    return text


def _max_length(field: str, max_length: int | None) -> int:
    if max_length is not None:
        return max_length
    spec = RAW_FIELDS.get(field)
    if spec is None or spec.max_length is None:
        return BOUNDS.max_id_length
    return spec.max_length


def parse_iso(text: str) -> datetime:
    """``datetime.fromisoformat`` without its quirks; ``ValueError`` if unparsable.

    A control character or lone surrogate makes the string invalid (the C
    parser takes a NUL for the end of the string, or for a separator).
    """
    if _BAD_CHAR.search(text) is not None:
        raise ValueError("control character or lone surrogate")
    try:
        return datetime.fromisoformat(text)
    except (ValueError, OverflowError, TypeError) as err:
        raise ValueError(str(err)) from None


def parse_iso_us(text: str) -> int:
    """Microseconds since the epoch of an ISO-8601 string; ``ValueError`` if unparsable."""
    return epoch_us(parse_iso(text))


def parse_timestamp(
    value: Any, where: str, field: str = TIMESTAMP, *, message_ms: int | None = None
) -> datetime:
    """Parse an ISO-8601 string or datetime into a timezone-aware UTC datetime.

    The instant must lie in ``[BOUNDS.earliest, BOUNDS.latest)``; with
    ``message_ms`` (a live message's time, ms since the epoch) also at most
    ``BOUNDS.max_future_skew`` after it.
    """
    if isinstance(value, str) and value.strip():
        try:
            moment = parse_iso(value.strip())
        except ValueError:
            raise ValidationError(where, field, timestamp_reason(value)) from None
    elif isinstance(value, datetime):
        moment = value
    elif value is None or isinstance(value, str):
        raise ValidationError(where, field, MISSING)
    else:
        raise ValidationError(where, field, wrong_type("an ISO-8601 string", value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Aware datetimes compare as instants, without the overflow astimezone risks.
    if not _EARLIEST <= moment < _LATEST:
        us = epoch_us(moment)
        shown = show(value) if isinstance(value, str) else format_epoch_us(us)
        raise ValidationError(where, field, range_reason(us, shown) or "")
    if message_ms is not None and moment > _latest_live(message_ms):
        raise ValidationError(where, field, future_reason(epoch_us(moment), message_ms) or "")
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def _latest_live(message_ms: int) -> datetime:
    """:func:`latest_live_us` as a datetime, clipped to the timestamp bounds."""
    us = latest_live_us(message_ms)
    return _EPOCH + timedelta(microseconds=min(max(us, EARLIEST_US - 1), LATEST_US))


def parse_amount(value: Any, where: str, field: str = AMOUNT) -> float:
    """Parse a finite, non-negative, bounded amount from a number or a decimal string."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        try:
            amount = float(value)
        except OverflowError:  # an integer beyond float: as Arrow reads it
            amount = math.inf if value > 0 else -math.inf
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
    return amount + 0.0  # -0.0 becomes 0.0


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
    raw: Mapping[str, Any],
    where: str,
    *,
    labelled: bool = False,
    message_ms: int | None = None,
) -> dict[str, Any]:
    """Return the canonical record (fields in contract order) of one raw record.

    ``where`` names the record in error messages, e.g. ``"line 12 of x.jsonl"``.
    ``message_ms``: a live message's time (ms since the epoch), which bounds
    how far in the future its ``timestamp`` may lie. Raises
    :class:`ValidationError` on the first bad field.
    """
    record: dict[str, Any] = {}
    get = raw.get
    for name, kind, required, max_length in _FIELDS:
        if kind is Kind.STRING:
            record[name] = parse_string(get(name), where, name, required, max_length)
        elif kind is Kind.TIMESTAMP:
            record[name] = parse_timestamp(get(name), where, name, message_ms=message_ms)
        elif kind is Kind.AMOUNT:
            record[name] = parse_amount(get(name), where, name)
        elif labelled:
            record[name] = parse_label(get(name), where, name)
    return record


_FIELDS = tuple((name, f.kind, f.required, f.max_length) for name, f in RAW_FIELDS.items())


def _parse_int(text: str) -> int | float:
    """JSON integer literals: exact up to ``BOUNDS.max_int_literal`` characters, else a float."""
    if len(text) <= BOUNDS.max_int_literal:
        return int(text)
    return float(text)


def json_depth(data: bytes) -> int:
    """How deeply the JSON text ``data`` nests arrays and objects (exact for valid JSON).

    Brackets inside strings do not count: a quote opens or closes a string
    unless an odd run of backslashes precedes it. About 1 ms for 64 KiB.
    """
    view = np.frombuffer(data, dtype=np.uint8)
    if not len(view):
        return 0
    quote = view == ord('"')
    backslashes = np.flatnonzero(view == ord("\\"))
    if len(backslashes):
        quotes = np.flatnonzero(quote)
        new_run = np.ones(len(backslashes), dtype=bool)
        new_run[1:] = np.diff(backslashes) != 1
        run_start = backslashes[new_run][np.cumsum(new_run) - 1]
        before = np.minimum(np.searchsorted(backslashes, quotes - 1), len(backslashes) - 1)
        # Escaped: the byte before is a backslash ending an odd run.
        escaped = (backslashes[before] == quotes - 1) & ((quotes - run_start[before]) % 2 == 1)
        quote[quotes[escaped]] = False
    outside = (np.cumsum(quote, dtype=np.int32) & 1) == 0
    step = ((view == ord("{")) | (view == ord("["))).astype(np.int32)
    step -= (view == ord("}")) | (view == ord("]"))
    step *= outside
    return int(np.cumsum(step).max(initial=0))


def too_deep(data: bytes) -> bool:
    """Whether ``data`` nests deeper than ``BOUNDS.max_json_depth`` (cheap when it cannot)."""
    limit = BOUNDS.max_json_depth
    if data.count(b"{") + data.count(b"[") <= limit:
        return False
    return json_depth(data) > limit


def parse_json_object(data: bytes, where: str) -> dict[str, Any]:
    """Parse one JSON-encoded record (a Kafka value or a JSON line) into a dict.

    Checks, in order: that it is bytes, its size (``MAX_RECORD_BYTES``),
    UTF-8, nesting depth, JSON syntax, that it is an object.
    """
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ValidationError(where, None, f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
    if len(data) > MAX_RECORD_BYTES:
        raise ValidationError(
            where, None, f"record is {len(data)} bytes, over the {MAX_RECORD_BYTES}-byte limit"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValidationError(where, None, f"invalid UTF-8 at byte {err.start}") from None
    if data.count(b"{") + data.count(b"[") > _MAX_DEPTH and json_depth(data) > _MAX_DEPTH:
        raise ValidationError(where, None, _TOO_DEEP)
    try:
        obj = _JSON.decode(text)
    except json.JSONDecodeError as err:
        raise ValidationError(
            where, None, f"invalid JSON: {err.msg} at column {err.colno}"
        ) from None
    except RecursionError:
        raise ValidationError(where, None, _TOO_DEEP) from None
    except ValueError as err:
        raise ValidationError(where, None, f"invalid JSON: {err}") from None
    if not isinstance(obj, dict):
        raise ValidationError(where, None, f"expected a JSON object, got {type_name(obj)}")
    return obj


_JSON = json.JSONDecoder(parse_int=_parse_int)
_MAX_DEPTH = BOUNDS.max_json_depth
_TOO_DEEP = f"invalid JSON: nested more than {_MAX_DEPTH} levels deep"


def guarded(where: str, decode: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``decode``; any exception but :class:`ValidationError` becomes one.

    The decoders' last line of defence: a bug turns one message into a dead
    letter (reason :data:`UNEXPECTED`) instead of stopping its reader.
    """
    try:
        return decode(*args, **kwargs)
    except (ValidationError, MemoryError):
        raise
    except Exception as err:
        raise ValidationError(where, None, f"{UNEXPECTED}: {type(err).__name__}") from err


def decode_json_record(
    data: bytes, where: str, *, labelled: bool = False, message_ms: int | None = None
) -> dict[str, Any]:
    """Validate one JSON-encoded record (a Kafka value or a JSON line).

    Checks, in order: size (``MAX_RECORD_BYTES``), UTF-8, nesting, JSON
    syntax, that it is an object, then its fields. Raises nothing but
    :class:`ValidationError`.
    """
    return guarded(where, _decode_json_record, data, where, labelled, message_ms)


def _decode_json_record(
    data: bytes, where: str, labelled: bool, message_ms: int | None
) -> dict[str, Any]:
    obj = parse_json_object(data, where)
    return validate_record(obj, where, labelled=labelled, message_ms=message_ms)
