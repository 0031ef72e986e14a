"""The canary split: by transaction id only, reproducible, nested, close to the share."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from features.canary import bucket, canary_rows

IDS = [f"tx-{i}" for i in range(20_000)]


def test_the_split_is_a_pure_function_of_the_id_and_the_share():
    first = canary_rows(IDS, 0.1)
    again = canary_rows(list(reversed(IDS)), 0.1)[::-1]  # another order, another batch
    assert (first == again).all()
    assert (canary_rows(IDS[:7], 0.1) == first[:7]).all()


def test_the_bucket_is_the_documented_sha256_prefix():
    raw = hashlib.sha256(b"tx-42").digest()[:8]
    assert bucket("tx-42") == int.from_bytes(raw, "big") / 2**64
    assert bucket(b"tx-42") == bucket("tx-42")


def test_the_share_is_respected_within_sampling_error():
    for share in (0.01, 0.1, 0.5):
        got = canary_rows(IDS, share).mean()
        sigma = np.sqrt(share * (1 - share) / len(IDS))
        assert abs(got - share) < 5 * sigma


def test_a_larger_share_keeps_every_transaction_a_smaller_one_took():
    small, large = canary_rows(IDS, 0.05), canary_rows(IDS, 0.2)
    assert not (small & ~large).any()
    assert not canary_rows(IDS, 0.0).any() and canary_rows(IDS, 1.0).all()


def test_a_share_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="within"):
        canary_rows(IDS, 1.5)
