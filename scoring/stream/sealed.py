"""Checkpoint blobs with a format version and a checksum, so a bad one is refused.

Layout: the magic ``FRAUDCKPT``, a format version (uint16), the payload length
(uint64), the SHA-256 of the payload, then the payload (the behavioural state
in :mod:`features.state_codec`'s layout). Anything that does not match, from a
truncated write to a blob from another program, is refused with the reason;
a scorer never restores, or silently replaces, a state it cannot trust.
"""

from __future__ import annotations

import hashlib
import struct

from features.errors import InputError

MAGIC = b"FRAUDCKPT"
#: The envelope's own version (the payload carries the state layout's version).
FORMAT_VERSION = 1
_HEADER = struct.Struct(">HQ")
_DIGEST_BYTES = 32
_PREFIX = len(MAGIC) + _HEADER.size + _DIGEST_BYTES


class CheckpointUnusable(InputError):  # noqa: N818 - reads as the checkpoint's condition
    """A checkpoint that cannot be restored: corrupt, truncated, or of another format."""


def seal(payload: bytes) -> bytes:
    """Wrap ``payload`` with the magic, the format version, its length and checksum."""
    digest = hashlib.sha256(payload).digest()
    return MAGIC + _HEADER.pack(FORMAT_VERSION, len(payload)) + digest + payload


def unseal(blob: bytes, where: str) -> bytes:
    """Return the payload of a sealed blob; :class:`CheckpointUnusable` says why not."""
    if not blob.startswith(MAGIC):
        raise CheckpointUnusable(
            f"{where}: not a sealed checkpoint (written by an older release, or corrupted)"
        )
    if len(blob) < _PREFIX:
        raise CheckpointUnusable(f"{where}: truncated checkpoint ({len(blob)} bytes)")
    version, length = _HEADER.unpack_from(blob, len(MAGIC))
    if version != FORMAT_VERSION:
        raise CheckpointUnusable(
            f"{where}: checkpoint format {version}, this release reads {FORMAT_VERSION}"
        )
    digest = blob[len(MAGIC) + _HEADER.size : _PREFIX]
    payload = blob[_PREFIX:]
    if len(payload) != length:
        raise CheckpointUnusable(
            f"{where}: checkpoint truncated: {len(payload)} of {length} payload bytes"
        )
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointUnusable(f"{where}: checkpoint checksum mismatch (corrupted)")
    return payload
