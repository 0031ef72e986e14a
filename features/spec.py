"""The transaction contract, declared once.

Field names, types, defaults and the label key of a card transaction
(``contracts.md`` §1), plus the names of the behavioural features computed by
:mod:`features.behaviour`. Every other schema in the system — the file readers,
the Kafka decoder, the Arrow/Beam schema, the TFT feature spec, the serving
signature and the alert snapshot — is derived from this module; none declares
the fields again.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    """One raw transaction field: its kind, whether it is required, its default."""

    kind: Kind
    required: bool
    default: Any = None
    doc: str = ""


TRANSACTION_ID = "transaction_id"
TIMESTAMP = "timestamp"
CUSTOMER_ID = "customer_id"
TERMINAL_ID = "terminal_id"
AMOUNT = "amount"
MERCHANT_CATEGORY = "merchant_category"
COUNTRY = "country"
CHANNEL = "channel"
LABEL_KEY = "is_fraud"
#: When a label became known (labels topic, lake, label files); optional in labelled files.
LABELLED_AT = "labelled_at"

UNKNOWN = "unknown"

#: The raw transaction record, in canonical column order (label last).
RAW_FIELDS: dict[str, Field] = {
    TRANSACTION_ID: Field(Kind.STRING, True, doc="unique per transaction; ints become strings"),
    TIMESTAMP: Field(Kind.TIMESTAMP, True, doc="event time, ISO-8601; no offset means UTC"),
    CUSTOMER_ID: Field(Kind.STRING, True, doc="card/customer key; the Kafka message key"),
    TERMINAL_ID: Field(Kind.STRING, True, doc="merchant terminal"),
    AMOUNT: Field(Kind.AMOUNT, True, doc="transaction amount, finite and >= 0"),
    MERCHANT_CATEGORY: Field(Kind.STRING, False, UNKNOWN, doc="MCC"),
    COUNTRY: Field(Kind.STRING, False, UNKNOWN, doc="ISO 3166 alpha-2"),
    CHANNEL: Field(Kind.STRING, False, UNKNOWN, doc="pos, ecom, atm, ..."),
    LABEL_KEY: Field(Kind.LABEL, False, doc="0 or 1; only in labelled files"),
}

#: Fields a live transaction carries (everything but the label).
TRANSACTION_FIELDS: tuple[str, ...] = tuple(f for f in RAW_FIELDS if f != LABEL_KEY)
REQUIRED_FIELDS: tuple[str, ...] = tuple(f for f, s in RAW_FIELDS.items() if s.required)
CATEGORICAL_FIELDS: tuple[str, ...] = (MERCHANT_CATEGORY, COUNTRY, CHANNEL)

#: Largest accepted Kafka message / JSON line, in bytes.
MAX_RECORD_BYTES = 64 * 1024
#: How far past its Kafka timestamp a live event (or label) may be dated, in ms.
MAX_FUTURE_SKEW_MS = 24 * 3600 * 1000

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
