"""The key-encryption key (KEK): wraps per-subject data keys and seals tenant tokens.

Source, in order: ``WAPIPE_KEK`` (base64 of 32 bytes), ``WAPIPE_KEK_FILE`` (a file holding the
same), else — outside production — a key generated once into ``<state_dir>/secrets/kek`` (0600).
``WAPIPE_ENV=production`` without a configured KEK is refused. Rotation: set the new KEK and list
the old ones in ``WAPIPE_KEK_PREVIOUS``; each wrapped key / sealed value names its KEK (``kek_id``). A KMS can replace this class
later: everything else only calls ``seal``/``unseal``/``wrap``/``unwrap``.

Ciphers: AES-256-GCM (``cryptography``), 96-bit random nonces. The associated data always
includes the Sealed ``key_id`` (``kek:<kek_id>``) so a value cannot be moved between keys.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from wapipe.config import Settings
from wapipe.privacy.errors import SecretsNotConfigured, UnsealError
from wapipe.privacy.secrets import decode_b64, generated_secret, read_b64_secret

KEY_BYTES = 32
NONCE_BYTES = 12
KEK_PREFIX = "kek:"


def _aad(aad: bytes | str) -> bytes:
    return aad.encode() if isinstance(aad, str) else bytes(aad)


def kek_id_of(key: bytes) -> str:
    """Names a KEK (for rotation) without revealing it."""
    return hashlib.sha256(b"wapipe-kek-id\0" + key).hexdigest()[:16]


@dataclass(frozen=True)
class Kek:
    key: bytes = field(repr=False)
    # Rotation: earlier KEKs, only ever used to open what they wrapped or sealed.
    previous: tuple[bytes, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        for k in (self.key, *self.previous):
            if len(k) != KEY_BYTES:
                raise SecretsNotConfigured(f"a KEK must be {KEY_BYTES} bytes, got {len(k)}")

    @property
    def kek_id(self) -> str:
        return kek_id_of(self.key)

    def _key_for(self, kek_id: str | None) -> bytes:
        if kek_id is None or kek_id == self.kek_id:
            return self.key
        for k in self.previous:
            if kek_id_of(k) == kek_id:
                return k
        raise UnsealError(f"wrapped/sealed with KEK {kek_id}, which is neither the current nor a previous KEK")

    # --- data keys -----------------------------------------------------------------------
    def wrap(self, data_key: bytes, aad: bytes | str) -> tuple[bytes, bytes]:
        nonce = os.urandom(NONCE_BYTES)
        return nonce, AESGCM(self.key).encrypt(nonce, data_key, _aad(aad))

    def unwrap(self, nonce: bytes, wrapped: bytes, aad: bytes | str, kek_id: str | None = None) -> bytes:
        try:
            return AESGCM(self._key_for(kek_id)).decrypt(nonce, wrapped, _aad(aad))
        except InvalidTag:
            raise UnsealError("cannot unwrap data key: wrong KEK, wrong key id, or tampered") from None

    # --- Sealed values (tenant tokens, app secrets) --------------------------------------
    def seal(self, plaintext: bytes, aad: bytes | str) -> dict:
        """A ``Sealed`` dict ``{key_id: "kek:<kek_id>", nonce, ciphertext}``; ``aad`` e.g. the tenant id."""
        key_id = KEK_PREFIX + self.kek_id
        nonce = os.urandom(NONCE_BYTES)
        ct = AESGCM(self.key).encrypt(nonce, plaintext, key_id.encode() + b"\0" + _aad(aad))
        return {"key_id": key_id, "nonce": nonce, "ciphertext": ct}

    def unseal(self, sealed: dict, aad: bytes | str) -> bytes:
        key_id = sealed.get("key_id") or ""
        if not key_id.startswith(KEK_PREFIX):
            raise UnsealError(f"not a KEK-sealed value (key_id {key_id!r})")
        key = self._key_for(key_id.removeprefix(KEK_PREFIX))
        try:
            return AESGCM(key).decrypt(bytes(sealed["nonce"]), bytes(sealed["ciphertext"]),
                                            key_id.encode() + b"\0" + _aad(aad))
        except InvalidTag:
            raise UnsealError("sealed value does not authenticate: tampered or wrong associated data") from None


def load_kek(settings: Settings) -> Kek:
    previous = tuple(decode_b64(v, "WAPIPE_KEK_PREVIOUS", length=KEY_BYTES)
                     for v in (settings.kek_previous.get_secret_value().split(",") if settings.kek_previous else ())
                     if v.strip())
    if settings.kek is not None:
        return Kek(decode_b64(settings.kek.get_secret_value(), "WAPIPE_KEK", length=KEY_BYTES), previous)
    if settings.kek_file is not None:
        return Kek(read_b64_secret(settings.kek_file, length=KEY_BYTES), previous)
    if settings.production:
        raise SecretsNotConfigured("WAPIPE_ENV=production needs WAPIPE_KEK or WAPIPE_KEK_FILE")
    return Kek(generated_secret(settings.state_dir / "secrets" / "kek", KEY_BYTES), previous)
