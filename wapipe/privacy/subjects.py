"""Pseudonymous subject ids: who a record is about, without saying who.

``subject_id = HMAC-SHA256(pepper, tenant_id ":" digits(wa_id))`` hex, first 32 chars. The same
WhatsApp user is a different subject in each tenant (each tenant is its own controller), and
``+1 (555) 010-0001`` and ``15550100001`` are the same subject.

A user known by a business-scoped user id (BSUID, ``connectors/meta/bsuid.py``) instead of a
number has the subject ``HMAC-SHA256(pepper, tenant_id ":bsuid:" bsuid)``: the BSUID exactly as
Meta sent it, in its own namespace, so no BSUID and number share a subject by accident. An id
with a letter in it is a BSUID or an error, never read for its digits (``US.1349…`` is not the
number 1349…). When a number and a BSUID are seen together, ``wapipe/privacy/links.py`` records
that the two subjects are one person.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from connectors.meta.bsuid import check_bsuid, looks_like_bsuid
from wapipe.config import Settings
from wapipe.privacy.errors import SecretsNotConfigured
from wapipe.privacy.secrets import decode_b64, generated_secret, read_b64_secret

_NOT_DIGIT = re.compile(r"\D")


def digits(wa_id: str) -> str:
    return _NOT_DIGIT.sub("", wa_id)


def identity(wa_id: str) -> str:
    """What a subject is derived from: a number's digits, or ``bsuid:`` and the BSUID as sent.
    ``ValueError`` for neither (no digits, or a letter in something that is not a BSUID)."""
    if looks_like_bsuid(wa_id):
        return "bsuid:" + check_bsuid(wa_id)
    d = digits(wa_id)
    if not d:
        raise ValueError("a WhatsApp id needs digits")
    return d


def subject_id(pepper: bytes, tenant_id: str, wa_id: str) -> str:
    """The tenant's subject for a WhatsApp number or a BSUID."""
    ident = identity(wa_id)
    if not tenant_id:
        raise ValueError("a subject belongs to a tenant")
    return hmac.new(pepper, f"{tenant_id}:{ident}".encode(), hashlib.sha256).hexdigest()[:32]


def pepper_from(settings: Settings) -> bytes:
    """WAPIPE_SUBJECT_PEPPER (base64, or any string of 16+ chars), WAPIPE_SUBJECT_PEPPER_FILE,
    else (outside production) one generated into ``<state_dir>/secrets/pepper``."""
    if settings.subject_pepper is not None:
        value = settings.subject_pepper.get_secret_value()
        try:
            raw = decode_b64(value, "WAPIPE_SUBJECT_PEPPER")
        except SecretsNotConfigured:
            raw = value.encode()
        if len(raw) < 16:
            raise SecretsNotConfigured("WAPIPE_SUBJECT_PEPPER must hold at least 16 bytes")
        return raw
    if settings.subject_pepper_file is not None:
        return read_b64_secret(settings.subject_pepper_file)
    if settings.production:
        raise SecretsNotConfigured("WAPIPE_ENV=production needs WAPIPE_SUBJECT_PEPPER or WAPIPE_SUBJECT_PEPPER_FILE")
    return generated_secret(settings.state_dir / "secrets" / "pepper", 32)
