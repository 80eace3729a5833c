"""Business-scoped user ids (BSUIDs): how WhatsApp names a user to one business portfolio.

Since April 2026 Meta adds a BSUID to message webhooks (``contacts[].user_id``,
``messages[].from_user_id``, statuses' ``recipient_user_id``) and a user who adopts a username may
come with a BSUID and no phone number at all. Format (Meta, "Business-scoped user IDs";
docs/meta-api.md): the user's ISO 3166 alpha-2 country code, a period, up to 128 letters and
digits — ``US.13491208655302741918``. A *parent* BSUID, shared by linked portfolios, has ``ENT``
between the two — ``US.ENT.11815799212886844830``. Meta asks to store a BSUID and send it back
exactly as received, so this module only checks the shape, never rewrites.

A BSUID always holds letters and a phone number as people write it never does
(``+1 (555) 010-0001``): ``is_bsuid`` tells the two apart without a flag.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

__all__ = ["BSUID_MAX_LENGTH", "Bsuid", "check_bsuid", "is_bsuid", "is_parent_bsuid", "looks_like_bsuid"]

_BSUID = re.compile(r"[A-Z]{2}\.(?:ENT\.)?[A-Za-z0-9]{1,128}")
_PARENT = re.compile(r"[A-Z]{2}\.ENT\.[A-Za-z0-9]{1,128}")
_LETTER = re.compile(r"[A-Za-z]")
BSUID_MAX_LENGTH = 2 + 1 + 4 + 128  # "US." + "ENT." + 128


def is_bsuid(value: object) -> bool:
    """``value`` is a BSUID or a parent BSUID (exact match, no surrounding space)."""
    return isinstance(value, str) and _BSUID.fullmatch(value) is not None


def is_parent_bsuid(value: object) -> bool:
    return isinstance(value, str) and _PARENT.fullmatch(value) is not None


def looks_like_bsuid(value: str) -> bool:
    """A recipient or sender id with a letter in it is meant as a BSUID (numbers have none)."""
    return _LETTER.search(value) is not None


def check_bsuid(value: str) -> str:
    """``value`` unchanged when it is a BSUID, else ``ValueError`` (the message never echoes it:
    it goes to dead letters and HTTP answers)."""
    if not is_bsuid(value):
        raise ValueError("not a business-scoped user id: expected a 2-letter country code, '.', "
                         "optionally 'ENT.', then 1 to 128 letters or digits (e.g. US.13491208655302741918)")
    return value


# A pydantic field holding a BSUID, checked, kept exactly as received.
Bsuid = Annotated[str, AfterValidator(check_bsuid)]
