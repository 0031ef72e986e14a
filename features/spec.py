"""The transaction contract, declared once.

Field names, types, defaults and the label key of a card transaction
(``docs/contracts.md`` §1), plus the names of the behavioural features computed by
:mod:`features.behaviour`. Every other schema in the system — the file readers,
the Kafka decoder, the Arrow/Beam schema, the TFT feature spec, the serving
signature and the alert snapshot — is derived from this module; none declares
the fields again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import pyarrow as pa


class Kind(Enum):
    """The logical type of a raw field."""

    STRING = "string"
    TIMESTAMP = "timestamp"
    AMOUNT = "amount"
    LABEL = "label"


@dataclass(frozen=True)
class Field:
    """One raw transaction field: its kind, whether it is required, its default.

    ``max_length`` (string fields) is the most characters its canonical value
    may have (:data:`BOUNDS`).
    """

    kind: Kind
    required: bool
    default: Any = None
    doc: str = ""
    max_length: int | None = None


@dataclass(frozen=True)
class Bounds:
    """The explicit limits every raw value must keep (``docs/ingest.md``, Bounds).

    Enforced identically by the record validator (:mod:`ingest.validation`),
    the column validator of the file readers and of the Kafka batch path
    (:mod:`ingest.table_validation`) and the label validator
    (:func:`ingest.kafka_io.label_record`). String limits count characters
    (Unicode code points) of the canonical, whitespace-stripped value, as
    PostgreSQL's ``varchar(n)`` does.
    """

    #: ``transaction_id``, ``customer_id``, ``terminal_id``: the alerts
    #: database's ``String(255)`` columns (``scoring/db/models.py`` ``ID_LENGTH``).
    max_id_length: int = 255
    #: ``merchant_category``, ``country``, ``channel`` and a label's ``source``:
    #: codes and short names (an MCC has 4 digits, a country code 2 letters).
    max_category_length: int = 64
    #: Largest accepted amount (inclusive): far above any card payment, exact
    #: and finite in float32 (the model's input) and inside the alerts
    #: database's ``Numeric(18, 4)`` (at most 10^14).
    max_amount: float = 1e9
    #: Event times (and a label's ``labelled_at``) lie in ``[earliest, latest)``:
    #: no card payment predates the Unix epoch, and 2100 leaves room for any
    #: live event while staying far inside every type that holds a time
    #: (Python's ``datetime``, Arrow's int64 microseconds, PostgreSQL).
    earliest: datetime = datetime(1970, 1, 1, tzinfo=UTC)
    latest: datetime = datetime(2100, 1, 1, tzinfo=UTC)
    #: Live messages only: how far an event (a label: ``labelled_at`` and the
    #: transaction's ``timestamp``) may lie after the message's own time (its
    #: Kafka timestamp, capped by the reader's clock). An event dated in the
    #: future would move the scorer's event-time clock forward and expire its
    #: state; a day covers clock drift and time-zone mistakes.
    max_future_skew: timedelta = timedelta(hours=24)
    #: Largest accepted Kafka message or JSON line, in bytes.
    max_record_bytes: int = 64 * 1024
    #: Deepest nesting of a JSON record (the record itself is level 1): extra
    #: fields may nest, but not deeper than this (Python's parser recurses, and
    #: Arrow's JSON reader crashes the process on some 10,000 levels).
    max_json_depth: int = 32
    #: JSON integer literals longer than this (sign included) are read as
    #: floats, as Arrow reads integers beyond int64: Python refuses to convert
    #: more than ``sys.get_int_max_str_digits()`` digits (4300 by default, at
    #: least 640), and no field of the contract needs more.
    max_int_literal: int = 640

    @property
    def earliest_us(self) -> int:
        """``earliest`` in microseconds since the Unix epoch."""
        return _epoch_us(self.earliest)

    @property
    def latest_us(self) -> int:
        """``latest`` (exclusive) in microseconds since the Unix epoch."""
        return _epoch_us(self.latest)

    @property
    def max_future_skew_us(self) -> int:
        """``max_future_skew`` in microseconds."""
        return self.max_future_skew // timedelta(microseconds=1)


def _epoch_us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


#: The bounds of the contract, declared once.
BOUNDS = Bounds()


TRANSACTION_ID = "transaction_id"
TIMESTAMP = "timestamp"
CUSTOMER_ID = "customer_id"
TERMINAL_ID = "terminal_id"
AMOUNT = "amount"
MERCHANT_CATEGORY = "merchant_category"
COUNTRY = "country"
CHANNEL = "channel"
LABEL_KEY = "is_fraud"

UNKNOWN = "unknown"

_ID = BOUNDS.max_id_length
_CATEGORY = BOUNDS.max_category_length

#: The raw transaction record, in canonical column order (label last).
RAW_FIELDS: dict[str, Field] = {
    TRANSACTION_ID: Field(Kind.STRING, True, doc="unique per transaction; ints become strings",
                          max_length=_ID),
    TIMESTAMP: Field(Kind.TIMESTAMP, True, doc="event time, ISO-8601; no offset means UTC"),
    CUSTOMER_ID: Field(Kind.STRING, True, doc="card/customer key; the Kafka message key",
                       max_length=_ID),
    TERMINAL_ID: Field(Kind.STRING, True, doc="merchant terminal", max_length=_ID),
    AMOUNT: Field(Kind.AMOUNT, True, doc="transaction amount, finite, >= 0 and <= max_amount"),
    MERCHANT_CATEGORY: Field(Kind.STRING, False, UNKNOWN, doc="MCC", max_length=_CATEGORY),
    COUNTRY: Field(Kind.STRING, False, UNKNOWN, doc="ISO 3166 alpha-2", max_length=_CATEGORY),
    CHANNEL: Field(Kind.STRING, False, UNKNOWN, doc="pos, ecom, atm, ...",
                   max_length=_CATEGORY),
    LABEL_KEY: Field(Kind.LABEL, False, doc="0 or 1; only in labelled files"),
}

#: The fields a ``fraud-labels`` record adds to the transaction's keys: when the label
#: became known (optional in labelled files, where it defaults to the transaction's time).
LABELLED_AT = "labelled_at"
LABEL_SOURCE = "source"
#: Most characters of a label's ``source`` (``chargeback``, ``analyst``, ...).
LABEL_SOURCE_MAX_LENGTH = _CATEGORY

#: Fields a live transaction carries (everything but the label).
TRANSACTION_FIELDS: tuple[str, ...] = tuple(f for f in RAW_FIELDS if f != LABEL_KEY)
REQUIRED_FIELDS: tuple[str, ...] = tuple(f for f, s in RAW_FIELDS.items() if s.required)
CATEGORICAL_FIELDS: tuple[str, ...] = (MERCHANT_CATEGORY, COUNTRY, CHANNEL)

#: Largest accepted Kafka message / JSON line, in bytes.
MAX_RECORD_BYTES = BOUNDS.max_record_bytes

# --- behavioural features -------------------------------------------------

#: Rolling windows of the behavioural features, in days.
WINDOWS_DAYS: tuple[int, ...] = (1, 7, 30)
#: Days after which a transaction's fraud label is assumed known (chargeback delay).
DEFAULT_DELAY_DAYS = 7
#: A label counts for events from its ``labelled_at`` plus this many minutes.
DEFAULT_LABEL_LATENCY_MINUTES = 60


def _behavioural_feature_names(windows: tuple[int, ...]) -> tuple[str, ...]:
    names: list[str] = []
    for w in windows:
        names += [
            f"customer_nb_tx_{w}d",
            f"customer_avg_amount_{w}d",
            f"customer_amount_ratio_{w}d",
        ]
    names += [
        "customer_seconds_since_prev_tx",
        "customer_terminal_seen_30d",
        "customer_merchant_category_seen_30d",
    ]
    for w in windows:
        names += [f"terminal_nb_tx_{w}d", f"terminal_risk_{w}d"]
    names += ["terminal_fraud_streak"]
    names += ["tx_hour", "tx_is_weekend", "tx_is_night"]
    return tuple(names)


#: Names of the behavioural features, all float32, in the order they are produced.
BEHAVIOURAL_FEATURES: tuple[str, ...] = _behavioural_feature_names(WINDOWS_DAYS)

#: Everything the model's serving signature takes, in order.
MODEL_INPUTS: tuple[str, ...] = TRANSACTION_FIELDS + BEHAVIOURAL_FEATURES


# --- derived schemas -------------------------------------------------------

_ARROW_TYPES = {
    Kind.STRING: pa.string(),
    Kind.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    Kind.AMOUNT: pa.float64(),
    Kind.LABEL: pa.int8(),
}


def arrow_schema(*, labelled: bool) -> pa.Schema:
    """The canonical Arrow schema of a table of transactions."""
    fields = [
        pa.field(name, _ARROW_TYPES[spec.kind], nullable=not spec.required)
        for name, spec in RAW_FIELDS.items()
        if labelled or name != LABEL_KEY
    ]
    return pa.schema(fields)


def features_arrow_schema() -> pa.Schema:
    """Arrow schema of the behavioural feature columns."""
    return pa.schema([pa.field(n, pa.float32(), nullable=False) for n in BEHAVIOURAL_FEATURES])


def model_input_dtypes() -> dict[str, str]:
    """Name -> TensorFlow dtype name of every serving-signature input."""
    dtypes: dict[str, str] = {}
    for name in TRANSACTION_FIELDS:
        kind = RAW_FIELDS[name].kind
        dtypes[name] = "float32" if kind is Kind.AMOUNT else "string"
    for name in BEHAVIOURAL_FEATURES:
        dtypes[name] = "float32"
    return dtypes
