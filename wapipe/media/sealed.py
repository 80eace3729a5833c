"""Sealing a media file under its subject's data key (envelope encryption).

A file gets its own random 256-bit content key; the file is AES-256-GCM-encrypted with it (AAD =
``<tenant_id>/<object_id>`` and the header, so a blob copied to another name or tenant, or with an
edited header, does not open). The content
key — with the file's MIME type, SHA-256 and name — is sealed with the *subject's* data key through
the key ring's public ``seal``. Erasing the subject (a tombstone on ``wa.subject.keys``) makes the
content key, and so the file, unreadable everywhere, whichever store holds it.

Blob layout::

    b"WAPM1" | u32 length of header | header JSON | 12-byte nonce | ciphertext

header = ``{"tenant_id", "subject_id", "sealed": {key_id, nonce, ciphertext (base64)}}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from wapipe.privacy.errors import UnsealError

__all__ = ["CorruptMedia", "MediaFile", "Sealer", "key_id_of", "object_id_for", "open_blob", "seal_blob"]

MAGIC = b"WAPM1"
_NONCE = 12


class Sealer(Protocol):
    """The key ring's public sealing API (``wapipe.privacy.keyring.KeyRing``)."""

    def seal(self, tenant_id: str, subject_id: str, data: dict) -> dict: ...
    def unseal(self, sealed: dict) -> dict: ...
    def is_erased(self, sealed_or_key: dict | str) -> bool: ...


class CorruptMedia(ValueError):
    """A stored blob that is not a sealed media object, or was altered or moved."""


@dataclass(frozen=True, slots=True)
class MediaFile:
    content: bytes
    mime_type: str | None
    sha256: str  # hex
    subject_id: str
    filename: str | None = None


def object_id_for(tenant_id: str, message_event_id: str) -> str:
    """The opaque, stable name of an inbound message's file (redelivery overwrites, never duplicates)."""
    return hashlib.blake2b(f"{tenant_id}/{message_event_id}".encode(), digest_size=16, person=b"wapipe-media").hexdigest()


def _aad(tenant_id: str, object_id: str) -> bytes:
    return f"media/{tenant_id}/{object_id}".encode()


def seal_blob(sealer: Sealer, tenant_id: str, subject_id: str, object_id: str, content: bytes, *,
              mime_type: str | None = None, filename: str | None = None) -> bytes:
    key = AESGCM.generate_key(256)
    nonce = os.urandom(_NONCE)
    sealed = sealer.seal(tenant_id, subject_id, {
        "k": base64.b64encode(key).decode(), "mime_type": mime_type, "filename": filename,
        "sha256": hashlib.sha256(content).hexdigest()})
    header = json.dumps({"tenant_id": tenant_id, "subject_id": subject_id, "sealed": {
        "key_id": sealed["key_id"], "nonce": base64.b64encode(bytes(sealed["nonce"])).decode(),
        "ciphertext": base64.b64encode(bytes(sealed["ciphertext"])).decode()}}, separators=(",", ":")).encode()
    # The header is part of the AAD: no byte of it can change without the file failing to open.
    body = AESGCM(key).encrypt(nonce, content, _aad(tenant_id, object_id) + b"|" + header)
    return MAGIC + struct.pack(">I", len(header)) + header + nonce + body


def header_of(blob: bytes) -> dict:
    if len(blob) < len(MAGIC) + 4 or not blob.startswith(MAGIC):
        raise CorruptMedia("not a sealed media object")
    (n,) = struct.unpack(">I", blob[len(MAGIC):len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if n > len(blob) - start - _NONCE:
        raise CorruptMedia("sealed media header is truncated")
    try:
        header = json.loads(blob[start:start + n])
        sealed = header["sealed"]
        header["sealed"] = {"key_id": str(sealed["key_id"]), "nonce": base64.b64decode(sealed["nonce"]),
                            "ciphertext": base64.b64decode(sealed["ciphertext"])}
        header["_body"] = start + n
        header["_raw"] = blob[start:start + n]
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptMedia(f"sealed media header unreadable: {type(e).__name__}") from None
    return header


def header_size(prefix: bytes) -> int:
    """How many leading bytes hold the header (``prefix`` needs only the first 9)."""
    if len(prefix) < len(MAGIC) + 4 or not prefix.startswith(MAGIC):
        raise CorruptMedia("not a sealed media object")
    return len(MAGIC) + 4 + struct.unpack(">I", prefix[len(MAGIC):len(MAGIC) + 4])[0]


def key_id_of(prefix: bytes) -> str:
    """The data key a blob's content key is sealed with, from the blob's first ``header_size`` bytes."""
    n = header_size(prefix)
    if len(prefix) < n:
        raise CorruptMedia("sealed media header is truncated")
    try:
        return str(json.loads(prefix[len(MAGIC) + 4:n])["sealed"]["key_id"])
    except (ValueError, KeyError, TypeError):
        raise CorruptMedia("sealed media header unreadable") from None


def open_blob(sealer: Sealer, tenant_id: str, object_id: str, blob: bytes) -> MediaFile:
    """The file. Raises ``wapipe.privacy.errors.SubjectErased`` once the subject is erased,
    ``CorruptMedia`` when the blob was altered, truncated or belongs to another name or tenant."""
    header = header_of(blob)
    if header.get("tenant_id") != tenant_id:
        raise CorruptMedia("sealed media object belongs to another tenant")
    try:
        meta = sealer.unseal(header["sealed"])
    except UnsealError:
        raise CorruptMedia("sealed media key does not authenticate (altered)") from None
    try:
        key = base64.b64decode(meta["k"])
        at = header["_body"]
        content = AESGCM(key).decrypt(blob[at:at + _NONCE], blob[at + _NONCE:],
                                      _aad(tenant_id, object_id) + b"|" + header["_raw"])
    except (KeyError, ValueError, InvalidTag):
        raise CorruptMedia("sealed media object does not authenticate (altered or renamed)") from None
    return MediaFile(content, meta.get("mime_type"), meta.get("sha256") or hashlib.sha256(content).hexdigest(),
                     str(header.get("subject_id")), meta.get("filename"))
